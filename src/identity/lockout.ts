/**
 * Brute-force throttling for logins, the `google-authenticator -r 3 -R 30` behaviour:
 * at most `maxFailures` failed attempts per key within `windowMs`, then a lockout that
 * doubles with each lockout in a row (base × 2^(lockouts-1), capped at `maxLockMs`).
 * Keys are `user:<name>` and `ip:<address>`; both are checked on every attempt.
 *
 * Pure: state and time in, state out. The service stores the state in `auth_failures`.
 *
 * Attempts are *reserved* before the password is checked (counted as failures up front)
 * and settled afterwards, so a burst of parallel guesses cannot slip past the limit
 * while the first ones are still being hashed.
 */

export interface LockoutPolicy {
  maxFailures: number;
  windowMs: number;
  /** First lockout's length; each further lockout in a row doubles it. */
  baseLockMs: number;
  maxLockMs: number;
}

export interface LockoutState {
  /** Failures (including attempts still in flight) in the current window. */
  failures: number;
  windowStart: number;
  /** Lockouts in a row; reset by a success or after `maxLockMs` without a failure. */
  lockouts: number;
  lockedUntil: number;
  updatedAt: number;
}

export const EMPTY_LOCKOUT: LockoutState = {
  failures: 0,
  windowStart: 0,
  lockouts: 0,
  lockedUntil: 0,
  updatedAt: 0,
};

export type LockoutCheck = { locked: false } | { locked: true; retryAfterMs: number };

export type ReserveResult =
  { ok: true; state: LockoutState } | { ok: false; retryAfterMs: number; state: LockoutState };

/** Lockout length for the n-th lockout in a row (n ≥ 1). */
export function lockDurationMs(lockouts: number, policy: LockoutPolicy): number {
  const exp = Math.min(Math.max(lockouts - 1, 0), 30);
  return Math.min(policy.baseLockMs * 2 ** exp, policy.maxLockMs);
}

/** Forgets what has expired: an old window, an old run of lockouts. */
function age(state: LockoutState, nowMs: number, policy: LockoutPolicy): LockoutState {
  let s = state;
  // The run of lockouts ends after `maxLockMs` of quiet counted from the end of the last lock.
  if (s.lockouts > 0 && nowMs - Math.max(s.updatedAt, s.lockedUntil) >= policy.maxLockMs) {
    s = { ...s, lockouts: 0 };
  }
  if (nowMs - s.windowStart >= policy.windowMs || nowMs < s.windowStart) {
    s = { ...s, failures: 0, windowStart: nowMs };
  }
  return s;
}

/** Is this key locked now, and for how long? */
export function checkLockout(
  state: LockoutState,
  nowMs: number,
  policy: LockoutPolicy,
): LockoutCheck {
  if (state.lockedUntil > nowMs) return { locked: true, retryAfterMs: state.lockedUntil - nowMs };
  const s = age(state, nowMs, policy);
  if (s.failures >= policy.maxFailures) {
    // Every allowed attempt of this window is in flight: wait for the window to end.
    return { locked: true, retryAfterMs: Math.max(s.windowStart + policy.windowMs - nowMs, 1) };
  }
  return { locked: false };
}

/** Counts an attempt as a failure before it is checked; refuses it when the key is locked. */
export function reserveAttempt(
  state: LockoutState,
  nowMs: number,
  policy: LockoutPolicy,
): ReserveResult {
  const check = checkLockout(state, nowMs, policy);
  if (check.locked) return { ok: false, retryAfterMs: check.retryAfterMs, state };
  const s = age(state, nowMs, policy);
  return { ok: true, state: { ...s, failures: s.failures + 1, updatedAt: nowMs } };
}

/** The reserved attempt failed: lock the key if this was the last failure allowed. */
export function settleFailure(
  state: LockoutState,
  nowMs: number,
  policy: LockoutPolicy,
): LockoutState {
  if (state.failures < policy.maxFailures) return { ...state, updatedAt: nowMs };
  const lockouts = state.lockouts + 1;
  return {
    failures: 0,
    windowStart: nowMs,
    lockouts,
    lockedUntil: nowMs + lockDurationMs(lockouts, policy),
    updatedAt: nowMs,
  };
}

/** The reserved attempt succeeded: the user's own key starts afresh. */
export function settleSuccess(_state: LockoutState, nowMs: number): LockoutState {
  return { ...EMPTY_LOCKOUT, windowStart: nowMs, updatedAt: nowMs };
}

/**
 * The reserved attempt succeeded or was not a guess (e.g. a disabled account): un-count it
 * without clearing earlier failures. Used for the source-IP key, so one valid account
 * cannot be used to wash away the failures of a password spray from the same address.
 */
export function releaseAttempt(state: LockoutState, nowMs: number): LockoutState {
  return { ...state, failures: Math.max(state.failures - 1, 0), updatedAt: nowMs };
}
