/** Time as a capability: decision logic takes a Clock, never calls Date.now() itself. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock tests can move by hand. */
export class ManualClock implements Clock {
  #t: number;
  constructor(startMs = Date.UTC(2026, 0, 1)) {
    this.#t = startMs;
  }
  now(): number {
    return this.#t;
  }
  set(ms: number): void {
    this.#t = ms;
  }
  advance(ms: number): void {
    this.#t += ms;
  }
}

/** The longest delay a Node timer holds: past it, setTimeout fires after 1 ms. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Resolves once `clock` reaches `deadlineMs`, however far away: a wait longer than a
 * Node timer holds (~24.8 days) is taken in steps, instead of firing at once.
 */
export async function sleepUntil(deadlineMs: number, clock: Clock = systemClock): Promise<void> {
  for (;;) {
    const left = deadlineMs - clock.now();
    if (!(left > 0)) return;
    await new Promise((r) => setTimeout(r, Math.min(left, MAX_TIMER_MS)));
  }
}
