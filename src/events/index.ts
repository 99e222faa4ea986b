export type {
  EventBus,
  EventHandler,
  EventResync,
  ResyncHandler,
  ZtEvent,
  ZtEventKind,
} from "./event-bus.js";
export { StoreEventBus } from "./store-event-bus.js";
export type { StoreEventBusOptions } from "./store-event-bus.js";
export { appendEvent, EVENTS_CHANNEL, EVENTS_LOCK_KEY } from "./append-event.js";
export type { AppendedEvent, AppendEventHooks } from "./append-event.js";
export {
  EventPruner,
  EVENTS_PRUNE_LOCK_KEY,
  EVENTS_PRUNED_THROUGH_KEY,
  pruneEvents,
  readPrunedThrough,
} from "./prune-events.js";
export type { EventPrunerOptions, PruneEventsOptions, PruneEventsResult } from "./prune-events.js";
export { storeFreshness } from "./staleness.js";
export type { StoreFreshness, StoreFreshnessOptions } from "./staleness.js";
