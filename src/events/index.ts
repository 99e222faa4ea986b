export type { EventBus, EventHandler, ZtEvent, ZtEventKind } from "./event-bus.js";
export { StoreEventBus } from "./store-event-bus.js";
export type { StoreEventBusOptions } from "./store-event-bus.js";
export { appendEvent, EVENTS_CHANNEL, EVENTS_LOCK_KEY } from "./append-event.js";
export type { AppendedEvent, AppendEventHooks } from "./append-event.js";
export { storeFreshness } from "./staleness.js";
export type { StoreFreshness, StoreFreshnessOptions } from "./staleness.js";
