import { ZtError } from "./errors.js";
import { quoteInput } from "./printable.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * The longest duration zt accepts: 36500d (100 years). Longer ones are typing mistakes,
 * and past it `now + duration` stops being a date (`new Date(x).toISOString()` throws
 * beyond year 275760) or a number that survives the store exactly.
 */
export const MAX_DURATION_MS = 36_500 * 86_400_000;

/**
 * The longest delay a Node.js timer takes: 2^31-1 ms (about 24.8 days). A longer one
 * fires at once (with a TimeoutOverflowWarning), so a poll or checkpoint interval past it
 * would spin instead of wait.
 */
export const TIMER_MAX_MS = 2 ** 31 - 1;

/**
 * Why `input` is not a duration a config key accepts, or undefined when it is: not a
 * duration at all, 0 where `positive`, or longer than `maxMs` (default MAX_DURATION_MS).
 * For zod refinements, which name the key themselves.
 */
export function configDurationIssue(
  input: string | number,
  o: { positive?: boolean; maxMs?: number } = {},
): string | undefined {
  let ms: number;
  try {
    ms = parseDuration(input);
  } catch {
    return `expected a duration like 30s, 15m, 1h or 7d, got ${quoteInput(input)}`;
  }
  if (o.positive && !(ms > 0))
    return `expected a duration of more than 0, got ${quoteInput(input)}`;
  if (o.maxMs !== undefined && ms > o.maxMs)
    return o.maxMs === TIMER_MAX_MS
      ? `expected at most ${TIMER_MAX_MS}ms (about 24.8 days, the longest timer), got ${quoteInput(input)}`
      : `expected at most ${formatDuration(o.maxMs)}, got ${quoteInput(input)}`;
  return undefined;
}

/**
 * Parses a duration such as `90s`, `15m`, `1h30m`, `7d` or a bare number of seconds
 * into milliseconds, at most MAX_DURATION_MS. Throws ZT_BAD_REQUEST naming the input
 * when it is not one.
 */
export function parseDuration(input: string | number, what = "duration"): number {
  if (typeof input === "number") {
    if (!Number.isFinite(input) || input < 0) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `${what}: expected a non-negative duration, got ${input}`,
      );
    }
    return withinBound(Math.round(input * 1000), input, what);
  }
  const s = input.trim();
  if (/^\d+$/.test(s)) return withinBound(Number(s) * 1000, input, what);
  const re = /(\d+)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (s.length === 0 || matched !== s.length) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${what}: expected a duration like 30s, 15m, 1h or 7d, got ${quoteInput(input)}`,
    );
  }
  return withinBound(total, input, what);
}

/**
 * A duration from the config file that must be more than 0 (a zero TTL, interval or
 * timeout would refuse or expire everything): ZT_CONFIG_INVALID naming `path` otherwise,
 * also when it is not a duration at all (`max_ttl: abc`).
 */
export function parsePositiveConfigDuration(input: string | number, path: string): number {
  let ms: number;
  try {
    ms = parseDuration(input, path);
  } catch (e) {
    if (!(e instanceof ZtError)) throw e;
    throw new ZtError("ZT_CONFIG_INVALID", e.message, { path });
  }
  if (!(ms > 0))
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `${path}: expected a positive duration, got ${quoteInput(input)}`,
      { path },
    );
  return ms;
}

function withinBound(ms: number, input: string | number, what: string): number {
  // `ms > MAX` is false for NaN: test the safe case instead.
  if (!(ms <= MAX_DURATION_MS)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `${what}: expected a duration of at most 36500d (100 years), got ${quoteInput(input)}`,
    );
  }
  return ms;
}

/** Formats milliseconds as a short human duration (`1h30m`, `45s`). */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  let s = Math.floor(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.join("");
}
