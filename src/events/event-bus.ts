/**
 * The Policy Administrator's event stream. Every change that can affect a live
 * session or decision is published here: in-process subscribers hear it at once,
 * other processes (CLI, replicas, PEPs) hear it through the store's `events` table
 * (polling for SQLite, LISTEN/NOTIFY for PostgreSQL) and catch up by sequence number.
 */

export type ZtEventKind =
  | "user.added"
  | "user.disabled"
  | "user.enabled"
  | "user.deleted"
  | "user.groups-changed"
  | "mfa.reset"
  | "session.revoked"
  | "policy.changed"
  | "device.changed"
  | "grant.changed"
  | "cert.revoked"
  | "ban.changed"
  | "config.changed";

export interface ZtEvent {
  seq: number;
  ts: number;
  kind: ZtEventKind;
  data: Record<string, unknown>;
}

export type EventHandler = (event: ZtEvent) => void;

/**
 * What a resync handler is told: this process's position in the event log fell behind
 * the pruned horizon (events older than `events.retention` are deleted), so events
 * after `afterSeq` up to `prunedThrough` may never be delivered. Each holder of state
 * kept current by events re-reads it from the store instead.
 */
export interface EventResync {
  /** The last seq this process had delivered. */
  afterSeq: number;
  /** Every event up to this seq may have been pruned. */
  prunedThrough: number;
  /**
   * Delivers an event to this process's subscribers only (never stored, never seen by
   * another process): for state whose holder can only be fed events, the resync
   * restates the store's current state as an event (e.g. every revoked certificate).
   */
  restate(kind: ZtEventKind, data: Record<string, unknown>): void;
}

/** A full re-read of some state from the store; rejects when the store cannot be read. */
export type ResyncHandler = (resync: EventResync) => Promise<void>;

export interface EventBus {
  /** Appends the event durably, then delivers it. Resolves once it is stored. */
  publish(kind: ZtEventKind, data: Record<string, unknown>): Promise<ZtEvent>;
  /** Subscribes to every event from now on; returns an unsubscribe function. */
  subscribe(handler: EventHandler): () => void;
  /**
   * Fixes the position `start()` will deliver from: the last event committed now. Call it
   * before loading state from the store that events keep current, so that an event
   * committed after the load (and before `start()`) is still delivered. No-op once
   * marked or started.
   */
  mark(): Promise<void>;
  /**
   * Starts hearing events from other processes: every event after the `mark()`, or,
   * without one, every event published from now on.
   */
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Milliseconds since the bus last heard from the store successfully (for /readyz).
   * Infinite (stale: PEPs deny everything) while a resync is pending: the state this
   * process decides from may be missing pruned events until every handler has re-read it.
   */
  lastContactMs(): number;
  /**
   * Registers a full resync, run when events were pruned past this process's position
   * (it was cut off or suspended for longer than `events.retention`). Until every
   * handler has resolved, `lastContactMs()` reports stale; a rejected one is retried.
   */
  onResync(handler: ResyncHandler): () => void;
  /** Whether a resync is pending (events were pruned past this process's position). */
  resyncing(): boolean;
}
