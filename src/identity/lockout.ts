/**
 * Brute-force throttling for logins, the `google-authenticator -r 3 -R 30` behaviour:
 * at most `maxFailures` failed attempts per key within any `windowMs` (a sliding window
 * over the failures' timestamps, as google-authenticator keeps them), then a lockout
 * that doubles with each lockout in a row (base × 2^(lockouts-1), capped at `maxLockMs`).
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
  /** Timestamps (ms, ascending) of failures and attempts in flight inside the window. */
  recent: number[];
  /** Lockouts in a row; reset by a success or after `maxLockMs` without a failure. */
  lockouts: number;
  lockedUntil: number;
  updatedAt: number;
}

export const EMPTY_LOCKOUT: LockoutState = {
  recent: [],
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

/** Forgets what has expired: failures older than the window, an old run of lockouts. */
function age(state: LockoutState, nowMs: number, policy: LockoutPolicy): LockoutState {
  // Timestamps far in the future (a clock stepped back a lot) are dropped rather than
  // kept for hours; anything else stays until it is a full window old.
  const recent = state.recent.filter(
    (t) => t > nowMs - policy.windowMs && t <= nowMs + policy.windowMs,
  );
  // The run of lockouts ends after `maxLockMs` of quiet counted from the end of the last lock.
  const quiet = nowMs - Math.max(state.updatedAt, state.lockedUntil) >= policy.maxLockMs;
  return { ...state, recent, lockouts: quiet ? 0 : state.lockouts };
}

/** Is this key locked now, and for how long? */
export function checkLockout(
  state: LockoutState,
  nowMs: number,
  policy: LockoutPolicy,
): LockoutCheck {
  if (state.lockedUntil > nowMs) return { locked: true, retryAfterMs: state.lockedUntil - nowMs };
  const s = age(state, nowMs, policy);
  if (s.recent.length >= policy.maxFailures) {
    // Every attempt this window allows is used or in flight: wait until the oldest ages out.
    const oldest = s.recent[s.recent.length - policy.maxFailures]!;
    return { locked: true, retryAfterMs: Math.max(oldest + policy.windowMs - nowMs, 1) };
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
  return {
    ok: true,
    state: { ...s, recent: [...s.recent, nowMs].sort((a, b) => a - b), updatedAt: nowMs },
  };
}

/** The reserved attempt failed: lock the key if this was the last failure allowed. */
export function settleFailure(
  state: LockoutState,
  nowMs: number,
  policy: LockoutPolicy,
): LockoutState {
  const s = age(state, nowMs, policy);
  if (s.recent.length < policy.maxFailures) return { ...s, updatedAt: nowMs };
  const lockouts = s.lockouts + 1;
  return {
    recent: [],
    lockouts,
    lockedUntil: nowMs + lockDurationMs(lockouts, policy),
    updatedAt: nowMs,
  };
}

/** The reserved attempt succeeded: the user's own key starts afresh. */
export function settleSuccess(_state: LockoutState, nowMs: number): LockoutState {
  return { ...EMPTY_LOCKOUT, updatedAt: nowMs };
}

/**
 * The attempt reserved at `reservedAt` succeeded or was not a guess (e.g. a disabled
 * account): un-count it without clearing earlier failures. Used for the source-address
 * key, so one valid account cannot wash away a password spray from the same address.
 */
export function releaseAttempt(
  state: LockoutState,
  reservedAt: number,
  nowMs: number,
): LockoutState {
  const i = state.recent.lastIndexOf(reservedAt);
  const recent = i < 0 ? state.recent : [...state.recent.slice(0, i), ...state.recent.slice(i + 1)];
  return { ...state, recent, updatedAt: nowMs };
}
