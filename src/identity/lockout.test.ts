import { describe, expect, it } from "vitest";
import { ManualClock } from "../core/clock.js";
import {
  checkLockout,
  EMPTY_LOCKOUT,
  failuresInLastHour,
  lockDurationMs,
  releaseAttempt,
  reserveAttempt,
  settleFailure,
  settleSuccess,
  type LockoutPolicy,
  type LockoutState,
} from "./lockout.js";

/** google-authenticator -r 3 -R 30, with growth capped at one hour. */
const POLICY: LockoutPolicy = {
  maxFailures: 3,
  windowMs: 30_000,
  baseLockMs: 30_000,
  maxLockMs: 3_600_000,
};

/** One complete failed attempt; returns whether it was let through to be checked. */
function fail(state: LockoutState, clock: ManualClock): { allowed: boolean; state: LockoutState } {
  const r = reserveAttempt(state, clock.now(), POLICY);
  if (!r.ok) return { allowed: false, state: r.state };
  return { allowed: true, state: settleFailure(r.state, clock.now(), POLICY) };
}

describe("lockout (google-authenticator -r 3 -R 30 behaviour)", () => {
  it("allows three failures within 30 s, then refuses for 30 s from the third", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (let i = 0; i < 3; i++) {
      const r = fail(s, clock);
      expect(r.allowed, `attempt ${i + 1}`).toBe(true);
      s = r.state;
      clock.advance(1_000);
    }
    // locked for 30 s from the third failure (one second ago)
    expect(checkLockout(s, clock.now(), POLICY)).toEqual({ locked: true, retryAfterMs: 29_000 });
    expect(fail(s, clock).allowed).toBe(false);
    clock.advance(28_999);
    expect(checkLockout(s, clock.now(), POLICY).locked).toBe(true);
    clock.advance(1);
    expect(checkLockout(s, clock.now(), POLICY)).toEqual({ locked: false });
  });

  // Regression: with a fixed window starting at the first failure, two failures late in one
  // window and three early in the next let five guesses through in 30 s.
  it("sliding window: no burst across a window boundary (regression for fixed windows)", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    s = fail(s, clock).state; // t = 0
    clock.advance(25_000);
    s = fail(s, clock).state; // t = 25 s
    clock.advance(5_000); // t = 30 s: the first failure has aged out, the second has not
    s = fail(s, clock).state;
    expect(checkLockout(s, clock.now(), POLICY)).toEqual({ locked: false });
    const third = fail(s, clock); // third failure within [25 s, 55 s): locks
    expect(third.allowed).toBe(true);
    expect(checkLockout(third.state, clock.now(), POLICY)).toEqual({
      locked: true,
      retryAfterMs: 30_000,
    });
  });

  it("a key at the limit with attempts in flight reopens when the oldest ages out", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (const gap of [0, 10_000, 10_000]) {
      clock.advance(gap);
      const r = reserveAttempt(s, clock.now(), POLICY);
      if (r.ok) s = r.state;
    }
    expect(checkLockout(s, clock.now(), POLICY)).toEqual({ locked: true, retryAfterMs: 10_000 });
  });

  it("failures spread wider than the window never lock", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (let i = 0; i < 20; i++) {
      const r = fail(s, clock);
      expect(r.allowed).toBe(true);
      s = r.state;
      // two failures per window, never three
      clock.advance(i % 2 === 0 ? 1_000 : 30_000);
    }
    expect(s.lockouts).toBe(0);
  });

  it("each lockout in a row doubles, capped at one hour", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    const lengths: number[] = [];
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 3; i++) {
        const r = fail(s, clock);
        expect(r.allowed).toBe(true);
        s = r.state;
      }
      const check = checkLockout(s, clock.now(), POLICY);
      expect(check.locked).toBe(true);
      lengths.push(check.locked ? check.retryAfterMs : 0);
      clock.set(s.lockedUntil);
    }
    expect(lengths).toEqual([
      30_000, 60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000,
      3_600_000,
    ]);
    expect(lockDurationMs(1, POLICY)).toBe(30_000);
    expect(lockDurationMs(1_000, POLICY)).toBe(3_600_000);
  });

  it("success resets the count and the growth", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (let i = 0; i < 3; i++) s = fail(s, clock).state;
    clock.set(s.lockedUntil);
    for (let i = 0; i < 2; i++) s = fail(s, clock).state;
    const r = reserveAttempt(s, clock.now(), POLICY);
    expect(r.ok).toBe(true);
    s = settleSuccess(r.ok ? r.state : s, clock.now());
    expect(s.recent).toEqual([]);
    expect(s.lockouts).toBe(0);
    for (let i = 0; i < 3; i++) s = fail(s, clock).state;
    expect(checkLockout(s, clock.now(), POLICY)).toEqual({ locked: true, retryAfterMs: 30_000 });
  });

  it("releasing an attempt un-counts only that attempt", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (let i = 0; i < 2; i++) s = fail(s, clock).state;
    const r = reserveAttempt(s, clock.now(), POLICY);
    expect(r.ok && r.state.recent.length).toBe(3);
    s = releaseAttempt(r.ok ? r.state : s, clock.now(), clock.now() + 5);
    expect(s.recent.length).toBe(2);
    expect(fail(s, clock).allowed).toBe(true);
  });

  it("attempts in flight count: the fourth parallel attempt is refused before any settles", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (let i = 0; i < 3; i++) {
      const r = reserveAttempt(s, clock.now(), POLICY);
      expect(r.ok).toBe(true);
      if (r.ok) s = r.state;
    }
    const fourth = reserveAttempt(s, clock.now(), POLICY);
    expect(fourth.ok).toBe(false);
    if (!fourth.ok) expect(fourth.retryAfterMs).toBe(30_000);
  });

  it("the run of lockouts is forgotten after an hour without failures", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) s = fail(s, clock).state;
      clock.set(s.lockedUntil);
    }
    expect(s.lockouts).toBe(3);
    clock.advance(3_600_000);
    for (let i = 0; i < 3; i++) s = fail(s, clock).state;
    expect(s.lockouts).toBe(1);
    expect(checkLockout(s, clock.now(), POLICY)).toEqual({ locked: true, retryAfterMs: 30_000 });
  });

  // Regression: the failure that locked a key emptied its history, so
  // `context.failed_attempts` read 0 exactly when a guessing attack had been detected.
  it("stops the hour's failure count from dropping to 0 at the lock (kept through a success)", () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    let s = EMPTY_LOCKOUT;
    for (let i = 1; i <= 3; i++) {
      s = fail(s, clock).state;
      expect(failuresInLastHour(s, clock.now())).toBe(i);
      clock.advance(1_000);
    }
    expect(checkLockout(s, clock.now(), POLICY).locked).toBe(true);
    expect(s.recent).toEqual([]); // the window is spent; the lock stands in for it
    expect(fail(s, clock).allowed).toBe(false); // refused, not a checked failure: not counted
    expect(failuresInLastHour(s, clock.now())).toBe(3);
    clock.set(s.lockedUntil);
    const r = reserveAttempt(s, clock.now(), POLICY);
    s = settleSuccess(r.ok ? r.state : s, clock.now());
    expect(failuresInLastHour(s, clock.now())).toBe(3);
    s = fail(s, clock).state;
    expect(failuresInLastHour(s, clock.now())).toBe(4);
    clock.set(t0 + 2_000 + 3_600_000 + 1); // the first three (t0 … t0 + 2 s) are an hour old
    expect(failuresInLastHour(s, clock.now())).toBe(1);
    clock.advance(3_600_000);
    expect(failuresInLastHour(s, clock.now())).toBe(0);
  });

  it("a failure stamped far in the future (the clock stepped back) is dropped, not kept for hours", () => {
    const clock = new ManualClock();
    let s = EMPTY_LOCKOUT;
    s = fail(s, clock).state;
    clock.advance(-60_000);
    const r = reserveAttempt(s, clock.now(), POLICY);
    expect(r.ok && r.state.recent.length).toBe(1);
  });
});

describe("lockout property", () => {
  it("property: never more than maxFailures failed attempts get through in any window", async () => {
    const fc = (await import("fast-check")).default;
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            gap: fc.oneof(fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 120_000 })),
            // a success on the source-address key only un-counts itself (releaseAttempt)
            outcome: fc.constantFrom("failure", "failure", "failure", "release"),
          }),
          { maxLength: 120 },
        ),
        (ops) => {
          let now = 1_000_000;
          let s = EMPTY_LOCKOUT;
          const failedAt: number[] = [];
          for (const op of ops) {
            now += op.gap;
            const r = reserveAttempt(s, now, POLICY);
            if (!r.ok) {
              expect(r.retryAfterMs).toBeGreaterThan(0);
              continue;
            }
            if (op.outcome === "failure") {
              failedAt.push(now);
              s = settleFailure(r.state, now, POLICY);
            } else {
              s = releaseAttempt(r.state, now, now);
            }
          }
          for (let i = 0; i < failedAt.length; i++) {
            const inWindow = failedAt.filter(
              (t) => t >= failedAt[i]! && t < failedAt[i]! + POLICY.windowMs,
            );
            expect(inWindow.length).toBeLessThanOrEqual(POLICY.maxFailures);
          }
          // context.failed_attempts: exactly the checked failures of the last hour.
          expect(failuresInLastHour(s, now)).toBe(
            failedAt.filter((t) => t > now - 3_600_000).length,
          );
        },
      ),
      { numRuns: 2000 },
    );
  });
});
