/**
 * How far a process may trust its in-memory state, from how long ago its event bus
 * last heard from the store (`EventBus.lastContactMs()`):
 *
 * - `fresh`: in contact; revocations arrive within the event delay.
 * - `degraded`: out of contact for longer than `degradedAfterMs`; keep deciding from
 *   the last good state, but report it (`/readyz` 503) so load balancers move away.
 * - `stale`: out of contact for `maxStalenessMs` (config `max_staleness`) or longer;
 *   revocations may have been missed for too long, so the PEP must deny everything.
 *
 * Pure: the caller passes the measured age; nothing here reads a clock.
 */
export type StoreFreshness = "fresh" | "degraded" | "stale";

export interface StoreFreshnessOptions {
  /** When to start reporting degraded (ms). */
  degradedAfterMs: number;
  /** `max_staleness` (ms): from here on, fail closed. */
  maxStalenessMs: number;
}

export function storeFreshness(lastContactMs: number, o: StoreFreshnessOptions): StoreFreshness {
  // Anything that is not a finite, non-negative age is treated as "never heard": fail closed.
  if (!Number.isFinite(lastContactMs) || lastContactMs < 0) return "stale";
  if (lastContactMs >= o.maxStalenessMs) return "stale";
  if (lastContactMs > Math.min(o.degradedAfterMs, o.maxStalenessMs)) return "degraded";
  return "fresh";
}
