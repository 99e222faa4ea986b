/**
 * Brute-force throttling for logins, the `google-authenticator -r 3 -R 30` behaviour:
 * at most `maxFailures` failed attempts per key within any `windowMs` (a sliding window
 * over the failures' timestamps, as google-authenticator keeps them), then a lockout
 * that doubles with each lockout in a row (base × 2^(lockouts-1), capped at `maxLockMs`).
 * Keys are `user:<name>` and `ip:<address>`; both are checked on every attempt.
 *
 * Apart from the window, each key remembers its settled failures of the last hour
 * (`failed`): what `context.failed_attempts` reports. A lockout empties the window (the
 * lock has taken its place) but not this history, and neither does a success, so a
 * burst of guesses stays visible to risk policies for the hour.
 *
 * Pure: state and time in, state out. The service stores the state in `auth_failures`.
 *
 * Attempts are *reserved* before the password is checked (counted as failures up front)
 * and settled afterwards, so a burst of parallel guesses cannot slip past the limit
 * while the first ones are still being hashed.
 */

/** How long settled failures are remembered for `context.failed_attempts`. */
export const FAILURE_MEMORY_MS = 60 * 60 * 1000;
/** At most this many remembered failures per key (the count saturates there). */
export const MAX_FAILURES_REMEMBERED = 1000;

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
  /**
   * Timestamps (ms, ascending) of settled failures in the last hour (FAILURE_MEMORY_MS),
   * kept through lockouts and successes.
   */
  failed: number[];
  /** Lockouts in a row; reset by a success or after `maxLockMs` without a failure. */
  lockouts: number;
  lockedUntil: number;
  updatedAt: number;
}

export const EMPTY_LOCKOUT: LockoutState = {
  recent: [],
  failed: [],
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

/** Forgets what has expired: failures older than the window or the hour, an old run of lockouts. */
function age(state: LockoutState, nowMs: number, policy: LockoutPolicy): LockoutState {
  // Timestamps far in the future (a clock stepped back a lot) are dropped rather than
  // kept for hours; anything else stays until it is a full window old.
  const recent = state.recent.filter(
    (t) => t > nowMs - policy.windowMs && t <= nowMs + policy.windowMs,
  );
  // The run of lockouts ends after `maxLockMs` of quiet counted from the end of the last lock.
  const quiet = nowMs - Math.max(state.updatedAt, state.lockedUntil) >= policy.maxLockMs;
  return {
    ...state,
    recent,
    failed: ageFailed(state.failed, nowMs),
    lockouts: quiet ? 0 : state.lockouts,
  };
}

/** The remembered failures still inside the last hour (future ones beyond a step dropped). */
function ageFailed(failed: readonly number[], nowMs: number): number[] {
  return failed.filter((t) => t > nowMs - FAILURE_MEMORY_MS && t <= nowMs + FAILURE_MEMORY_MS);
}

/** Appends a settled failure to the hour's history (bounded). */
function remember(failed: readonly number[], nowMs: number): number[] {
  return [...failed, nowMs].sort((a, b) => a - b).slice(-MAX_FAILURES_REMEMBERED);
}

/**
 * How many settled failures a key had in the hour before `nowMs`: the value of
 * `context.failed_attempts`. Lockouts and successes do not reset it.
 */
export function failuresInLastHour(state: Pick<LockoutState, "failed">, nowMs: number): number {
  return ageFailed(state.failed, nowMs).length;
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
  const failed = remember(s.failed, nowMs);
  if (s.recent.length < policy.maxFailures) return { ...s, failed, updatedAt: nowMs };
  const lockouts = s.lockouts + 1;
  // The window empties (the lock replaces it); the hour's history keeps this failure.
  return {
    recent: [],
    failed,
    lockouts,
    lockedUntil: nowMs + lockDurationMs(lockouts, policy),
    updatedAt: nowMs,
  };
}

/**
 * The reserved attempt succeeded: the user's own key starts afresh, except for the
 * hour's history of failures (a success right after a burst of guesses is still risky).
 */
export function settleSuccess(state: LockoutState, nowMs: number): LockoutState {
  return { ...EMPTY_LOCKOUT, failed: ageFailed(state.failed, nowMs), updatedAt: nowMs };
}

/**
 * The attempt reserved at `reservedAt` succeeded: un-count it without clearing earlier
 * failures. Used for the source-address key, so one valid account cannot wash away a
 * password spray from the same address.
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
