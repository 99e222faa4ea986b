/**
 * Cedar's extension types and functions (ipaddr, decimal, datetime, duration), with the
 * parsing rules of the Cedar reference implementation (cedar-policy-core/src/extensions).
 */
import {
  CedarEvalError,
  DateTime,
  Decimal,
  Duration,
  IpAddr,
  longFromBigInt,
  typeError,
  type Long,
  type Value,
} from "./values.js";

function extErr(fn: string, msg: string): CedarEvalError {
  return new CedarEvalError(`error while evaluating \`${fn}\` extension function: ${msg}`);
}

// ---------------- ipaddr ----------------

function parseIpv4(s: string): bigint | undefined {
  // Rust's Ipv4Addr parser: four octets of 1–3 ASCII digits, no leading zeros, ≤ 255.
  let out = 0;
  let octets = 0;
  let i = 0;
  const n = s.length;
  while (octets < 4) {
    const start = i;
    let v = 0;
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
    }
    const len = i - start;
    if (len === 0 || len > 3 || v > 255 || (len > 1 && s.charCodeAt(start) === 48))
      return undefined;
    out = out * 256 + v;
    octets++;
    if (octets < 4) {
      if (s.charCodeAt(i) !== 46) return undefined;
      i++;
    }
  }
  return i === n ? BigInt(out) : undefined;
}

function parseGroups(s: string): number[] | undefined {
  if (s === "") return [];
  const out: number[] = [];
  for (const g of s.split(":")) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    out.push(parseInt(g, 16));
  }
  return out;
}

function parseIpv6(s: string): bigint | undefined {
  // Embedded IPv4 forms are rejected before we get here (Cedar refuses them).
  const dbl = s.indexOf("::");
  let groups: number[];
  if (dbl < 0) {
    const g = parseGroups(s);
    if (!g || g.length !== 8) return undefined;
    groups = g;
  } else {
    if (s.indexOf("::", dbl + 1) >= 0) return undefined;
    const head = parseGroups(s.slice(0, dbl));
    const tail = parseGroups(s.slice(dbl + 2));
    // `::` stands for at least one group of zeros.
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  let out = 0n;
  for (const g of groups) out = (out << 16n) | BigInt(g);
  return out;
}

function parsePrefix(s: string, max: number, maxLen: number): number | undefined {
  if (s.length > maxLen || !/^[0-9]+$/.test(s)) return undefined;
  if (s.length > 1 && s[0] === "0") return undefined;
  const n = Number(s);
  return n > max ? undefined : n;
}

function countOf(s: string, c: string): number {
  let n = 0;
  for (const ch of s) if (ch === c) n++;
  return n;
}

const ipCache = new Map<string, IpAddr | undefined>();

/** Only ASCII digits, dots and at most one slash, short enough for `a.b.c.d/nn`. */
function isIpv4Form(s: string): boolean {
  const n = s.length;
  if (n < 7 || n > 18) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if ((c < 48 || c > 57) && c !== 46 && c !== 47) return false;
  }
  return true;
}

/** Parses an IP address or CIDR range as Cedar's `ip()` does (memoised: addresses repeat). */
export function parseIp(s: string): IpAddr | undefined {
  // Hot path (request source addresses): IPv4 text needs neither the UTF-8 length, the
  // mixed-form check nor the memo (parsing is cheaper than a map lookup).
  if (isIpv4Form(s)) return parseIpParts(s);
  if (ipCache.has(s)) return ipCache.get(s);
  const r = parseIpUncached(s);
  if (ipCache.size >= 4096) ipCache.clear();
  ipCache.set(s, r);
  return r;
}

function parseIpUncached(s: string): IpAddr | undefined {
  if (Buffer.byteLength(s, "utf8") > 43) return undefined;
  if (countOf(s, ":") >= 2 && countOf(s, ".") >= 2) return undefined;
  return parseIpParts(s);
}

/** Address and optional prefix (after the length and mixed-form checks). */
function parseIpParts(s: string): IpAddr | undefined {
  const slash = s.indexOf("/");
  const addrStr = slash >= 0 ? s.slice(0, slash) : s;
  const v4 = parseIpv4(addrStr);
  const v6 = v4 === undefined ? parseIpv6(addrStr) : undefined;
  if (v4 === undefined && v6 === undefined) return undefined;
  const isV6 = v4 === undefined;
  let prefix = isV6 ? 128 : 32;
  if (slash >= 0) {
    const p = parsePrefix(s.slice(slash + 1), isV6 ? 128 : 32, isV6 ? 3 : 2);
    if (p === undefined) return undefined;
    prefix = p;
  }
  return new IpAddr(isV6, (isV6 ? v6 : v4)!, prefix);
}

function ipRange(ip: IpAddr): [bigint, bigint] {
  const bits = ip.v6 ? 128n : 32n;
  const all = (1n << bits) - 1n;
  const host = (1n << (bits - BigInt(ip.prefix))) - 1n;
  const net = ip.addr & (all ^ host);
  return [net, ip.addr | host];
}

function isInRange(child: IpAddr, range: IpAddr): boolean {
  if (child.v6 !== range.v6) return false;
  if (!child.v6) {
    // Exact in doubles: every value stays below 2^33.
    const cs = 2 ** (32 - child.prefix);
    const rs = 2 ** (32 - range.prefix);
    const cn = Math.floor(child.v4 / cs) * cs;
    const rn = Math.floor(range.v4 / rs) * rs;
    return rn <= cn && cn + cs - 1 <= rn + rs - 1;
  }
  const [cn, cb] = ipRange(child);
  const [rn, rb] = ipRange(range);
  return rn <= cn && cb <= rb;
}

function asIp(v: Value): IpAddr {
  if (v instanceof IpAddr) return v;
  throw typeError("ipaddr", v);
}

// ---------------- decimal ----------------

export function parseDecimal(s: string): Decimal | undefined {
  const m = /^(-?[0-9]+)\.([0-9]+)$/.exec(s);
  if (!m) return undefined;
  const l = m[1]!;
  const r = m[2]!;
  if (r.length > 4) return undefined;
  const whole = BigInt(l) * 10000n;
  const frac = BigInt(r) * 10n ** BigInt(4 - r.length);
  // Cedar parses the integer part as i64 first, then scales (both must fit).
  if (longFromBigInt(BigInt(l)) === undefined) return undefined;
  const v = longFromBigInt(l.startsWith("-") ? whole - frac : whole + frac);
  if (v === undefined || longFromBigInt(whole) === undefined) return undefined;
  return new Decimal(v);
}

function asDecimal(v: Value): Decimal {
  if (v instanceof Decimal) return v;
  throw typeError("decimal", v);
}

// ---------------- datetime / duration ----------------

const DAY_MS = 86_400_000n;

function daysFromCivil(y: number, m: number, d: number): number {
  // Proleptic Gregorian calendar, days since 1970-01-01.
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function daysInMonth(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
}

let lastDatetime: [string, DateTime | undefined] | undefined;

/** The digits at s[i…i+len) as a number, or -1 when any is not an ASCII digit. */
function digitsAt(s: string, i: number, len: number): number {
  let v = 0;
  for (let j = i; j < i + len; j++) {
    const c = s.charCodeAt(j);
    if (c < 48 || c > 57) return -1;
    v = v * 10 + (c - 48);
  }
  return v;
}

/**
 * `YYYY-MM-DDThh:mm:ssZ` and `YYYY-MM-DDThh:mm:ss.sssZ` (what `Date.toISOString` writes,
 * so what zt's request contexts carry), in plain number arithmetic (exact: |ms| < 2^53 for
 * four-digit years). undefined: not this form, use the general parser (which also decides
 * every invalid case).
 */
function parseIsoUtc(s: string): DateTime | undefined {
  const n = s.length;
  if (n !== 20 && n !== 24) return undefined;
  if (s.charCodeAt(n - 1) !== 90 /* Z */) return undefined;
  if (
    s.charCodeAt(4) !== 45 ||
    s.charCodeAt(7) !== 45 ||
    s.charCodeAt(10) !== 84 ||
    s.charCodeAt(13) !== 58 ||
    s.charCodeAt(16) !== 58
  )
    return undefined;
  const y = digitsAt(s, 0, 4);
  const mo = digitsAt(s, 5, 2);
  const d = digitsAt(s, 8, 2);
  const h = digitsAt(s, 11, 2);
  const mi = digitsAt(s, 14, 2);
  const sec = digitsAt(s, 17, 2);
  let ms = 0;
  if (n === 24) {
    if (s.charCodeAt(19) !== 46) return undefined;
    ms = digitsAt(s, 20, 3);
  }
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h >= 24 || mi < 0 || mi >= 60)
    return undefined;
  if (sec < 0 || sec >= 60 || ms < 0 || d > daysInMonth(y, mo)) return undefined;
  return new DateTime(
    daysFromCivil(y, mo, d) * 86_400_000 + ((h * 60 + mi) * 60 + sec) * 1000 + ms,
  );
}

/** Parses a datetime as Cedar's `datetime()` does (the last result is memoised). */
export function parseDatetime(s: string): DateTime | undefined {
  const iso = parseIsoUtc(s);
  if (iso !== undefined) return iso;
  if (lastDatetime && lastDatetime[0] === s) return lastDatetime[1];
  const r = parseDatetimeUncached(s);
  lastDatetime = [s, r];
  return r;
}

function parseDatetimeUncached(s: string): DateTime | undefined {
  const dm = /^([0-9]{4})-([0-9]{2})-([0-9]{2})/.exec(s);
  if (!dm) return undefined;
  const y = Number(dm[1]);
  const mo = Number(dm[2]);
  const d = Number(dm[3]);
  const validDate = () => mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth(y, mo);
  const days = () => BigInt(daysFromCivil(y, mo, d));
  if (dm[0].length === s.length)
    return validDate() ? new DateTime(Number(days() * DAY_MS)) : undefined;
  const rest = s.slice(dm[0].length);
  const hm = /^T([0-9]{2}):([0-9]{2}):([0-9]{2})/.exec(rest);
  if (!hm) return undefined;
  const tail = rest.slice(hm[0].length);
  const om = /^(\.([0-9]{3}))?(Z|((\+|-)([0-9]{2})([0-9]{2})))$/.exec(tail);
  if (!om) return undefined;
  if (!validDate()) return undefined;
  const h = Number(hm[1]);
  const mi = Number(hm[2]);
  const sec = Number(hm[3]);
  const ms = om[2] !== undefined ? Number(om[2]) : 0;
  if (h >= 24 || mi >= 60 || sec >= 60) return undefined;
  let offsetSec = 0;
  if (om[4] !== undefined) {
    const oh = Number(om[6]);
    const omin = Number(om[7]);
    if (oh >= 24 || omin >= 60) return undefined;
    offsetSec = (oh * 3600 + omin * 60) * (om[5] === "+" ? 1 : -1);
  }
  const total = days() * DAY_MS + BigInt(((h * 60 + mi) * 60 + sec - offsetSec) * 1000 + ms);
  return new DateTime(longFromBigInt(total)!);
}

export function parseDuration(s: string): Duration | undefined {
  if (s === "" || s === "-") return undefined;
  const m = /^-?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$/.exec(s);
  if (!m) return undefined;
  const neg = s.startsWith("-");
  const U64_MAX = 18446744073709551615n;
  const I64_MAX = 9223372036854775807n;
  const num = (i: number): bigint | undefined => {
    const t = m[i];
    if (t === undefined) return 0n;
    const b = BigInt(t);
    return b > U64_MAX ? undefined : b;
  };
  const parts = [num(10), num(8), num(6), num(4), num(2)];
  if (parts.some((p) => p === undefined)) return undefined;
  const [ms, sec, mins, hours, days] = parts as bigint[];
  if (ms! > (neg ? I64_MAX + 1n : I64_MAX)) return undefined;
  let total = neg ? -ms! : ms!;
  for (const [qty, mul] of [
    [sec!, 1000n],
    [mins!, 60_000n],
    [hours!, 3_600_000n],
    [days!, 86_400_000n],
  ] as const) {
    if (qty > I64_MAX || qty * mul > I64_MAX) return undefined;
    total = neg ? total - qty * mul : total + qty * mul;
    if (longFromBigInt(total) === undefined) return undefined;
  }
  return new Duration(longFromBigInt(total)!);
}

function asDatetime(v: Value): DateTime {
  if (v instanceof DateTime) return v;
  throw typeError("datetime", v);
}

function asDuration(v: Value): Duration {
  if (v instanceof Duration) return v;
  throw typeError("duration", v);
}

function asString(v: Value): string {
  if (typeof v === "string") return v;
  throw typeError("String", v);
}

/** i64 division truncating toward zero (Rust `/`). */
function truncDiv(a: Long, b: bigint): Long {
  if (typeof a === "number") {
    const n = Number(b);
    // a - a % n is an exact multiple of n, so the division is exact.
    return (a - (a % n)) / n || 0;
  }
  return longFromBigInt(a / b)!;
}

// ---------------- the function table ----------------

type ExtFn = (args: Value[]) => Value;

function cmpDecimal(op: (x: Long, y: Long) => boolean): ExtFn {
  return ([a, b]) => op(asDecimal(a!).value, asDecimal(b!).value);
}

/**
 * Extension functions by name. The parser accepts any number of arguments; a call with
 * the wrong arity is an evaluation error (after the arguments are evaluated), as in Cedar.
 */
export const EXTENSION_FUNCTIONS: Readonly<Record<string, { arity: number; fn: ExtFn }>> = {
  ip: {
    arity: 1,
    fn: ([a]) => {
      const r = parseIp(asString(a!));
      if (!r) throw extErr("ip", `invalid IP address: ${String(a)}`);
      return r;
    },
  },
  isIpv4: { arity: 1, fn: ([a]) => !asIp(a!).v6 },
  isIpv6: { arity: 1, fn: ([a]) => asIp(a!).v6 },
  isLoopback: {
    arity: 1,
    fn: ([a]) => {
      const ip = asIp(a!);
      if (ip.v6) return ip.addr === 1n && ip.prefix >= 128;
      return ip.addr >> 24n === 127n && ip.prefix >= 8;
    },
  },
  isMulticast: {
    arity: 1,
    fn: ([a]) => {
      const ip = asIp(a!);
      if (ip.v6) return ip.addr >> 120n === 0xffn && ip.prefix >= 8;
      return ip.addr >> 28n === 0xen && ip.prefix >= 4;
    },
  },
  isInRange: { arity: 2, fn: ([a, b]) => isInRange(asIp(a!), asIp(b!)) },
  decimal: {
    arity: 1,
    fn: ([a]) => {
      const r = parseDecimal(asString(a!));
      if (!r) throw extErr("decimal", `\`${String(a)}\` is not a well-formed decimal value`);
      return r;
    },
  },
  lessThan: { arity: 2, fn: cmpDecimal((x, y) => x < y) },
  lessThanOrEqual: { arity: 2, fn: cmpDecimal((x, y) => x <= y) },
  greaterThan: { arity: 2, fn: cmpDecimal((x, y) => x > y) },
  greaterThanOrEqual: { arity: 2, fn: cmpDecimal((x, y) => x >= y) },
  datetime: {
    arity: 1,
    fn: ([a]) => {
      const r = parseDatetime(asString(a!));
      if (!r) throw extErr("datetime", `invalid datetime: ${String(a)}`);
      return r;
    },
  },
  duration: {
    arity: 1,
    fn: ([a]) => {
      const r = parseDuration(asString(a!));
      if (!r) throw extErr("duration", `invalid duration: ${String(a)}`);
      return r;
    },
  },
  offset: {
    arity: 2,
    fn: ([a, b]) => {
      const dt = asDatetime(a!);
      const du = asDuration(b!);
      const r = longFromBigInt(BigInt(dt.ms) + BigInt(du.ms));
      if (r === undefined) throw extErr("offset", "overflow when adding an offset");
      return new DateTime(r);
    },
  },
  durationSince: {
    arity: 2,
    fn: ([a, b]) => {
      const x = asDatetime(a!);
      const y = asDatetime(b!);
      const r = longFromBigInt(BigInt(x.ms) - BigInt(y.ms));
      if (r === undefined) throw extErr("durationSince", "overflow when computing a duration");
      return new Duration(r);
    },
  },
  toDate: {
    arity: 1,
    fn: ([a]) => {
      const ms = BigInt(asDatetime(a!).ms);
      const rem = ((ms % DAY_MS) + DAY_MS) % DAY_MS;
      const r = longFromBigInt(ms - rem);
      if (r === undefined) throw extErr("toDate", "overflow when computing the date");
      return new DateTime(r);
    },
  },
  toTime: {
    arity: 1,
    fn: ([a]) => {
      const ms = BigInt(asDatetime(a!).ms);
      return new Duration(longFromBigInt(((ms % DAY_MS) + DAY_MS) % DAY_MS)!);
    },
  },
  toMilliseconds: { arity: 1, fn: ([a]) => asDuration(a!).ms },
  toSeconds: { arity: 1, fn: ([a]) => truncDiv(asDuration(a!).ms, 1000n) },
  toMinutes: { arity: 1, fn: ([a]) => truncDiv(asDuration(a!).ms, 60_000n) },
  toHours: { arity: 1, fn: ([a]) => truncDiv(asDuration(a!).ms, 3_600_000n) },
  toDays: { arity: 1, fn: ([a]) => truncDiv(asDuration(a!).ms, 86_400_000n) },
};

/** `<` / `<=` on Long, datetime or duration (Cedar's operator overloading); anything else is a type error. */
export function compareValues(a: Value, b: Value, orEqual: boolean): boolean {
  let x: Long;
  let y: Long;
  if (
    (typeof a === "number" || typeof a === "bigint") &&
    (typeof b === "number" || typeof b === "bigint")
  ) {
    x = a;
    y = b;
  } else if (a instanceof DateTime && b instanceof DateTime) {
    x = a.ms;
    y = b.ms;
  } else if (a instanceof Duration && b instanceof Duration) {
    x = a.ms;
    y = b.ms;
  } else {
    throw new CedarEvalError(
      `type error: comparison needs two Longs, datetimes or durations, got ${typeof a} and ${typeof b}`,
    );
  }
  return orEqual ? x <= y : x < y;
}
