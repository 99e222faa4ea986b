export type { EventBus, EventHandler, ZtEvent, ZtEventKind } from "./event-bus.js";
export { StoreEventBus } from "./store-event-bus.js";
export type { StoreEventBusOptions } from "./store-event-bus.js";
