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
  /** Milliseconds since the bus last heard from the store successfully (for /readyz). */
  lastContactMs(): number;
}
