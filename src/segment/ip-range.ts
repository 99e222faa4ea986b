import { formatIp, parseIp } from "../core/ip-address.js";
import { quoteInput } from "../core/printable.js";

export { formatIp, parseIp };

/** An inclusive address range of one family, as bigints (IPv4 fits too). */
export interface IpRange {
  family: 4 | 6;
  start: bigint;
  end: bigint;
}

const V4_BITS = 32;
const V6_BITS = 128;

function bitsOf(family: 4 | 6): number {
  return family === 4 ? V4_BITS : V6_BITS;
}

export type CidrParse = { ok: true; range: IpRange } | { ok: false; reason: string };

/** The bits of an IPv4-mapped IPv6 address (`::ffff:0:0/96`, RFC 4291 §2.5.5.2) above its IPv4 part. */
const MAPPED_HIGH = 0xffffn;
const V4_MASK = 0xffffffffn;

/** True for an IPv4-mapped IPv6 address (`::ffff:10.0.2.5`). */
export function isIpv4Mapped(family: 4 | 6, value: bigint): boolean {
  return family === 6 && value >> 32n === MAPPED_HIGH;
}

/**
 * The IPv4 address an IPv4-mapped IPv6 address stands for; any other address unchanged.
 * Segmentation reads `::ffff:10.0.2.5` as 10.0.2.5: the kernel sees such a host's packets as
 * IPv4 (`ip saddr`), never in an IPv6 set. (The PKI keeps the IPv6 form: see core/ip-address.)
 */
export function unmapIp(ip: { family: 4 | 6; value: bigint }): { family: 4 | 6; value: bigint } {
  return isIpv4Mapped(ip.family, ip.value) ? { family: 4, value: ip.value & V4_MASK } : ip;
}

/**
 * Writes an IPv4-mapped IPv6 address (`::ffff:10.0.2.5`, as dual-stack sockets report IPv4
 * clients) as the IPv4 address it stands for; any other text is returned unchanged. Cheap for
 * the common case (no `:` or no `ffff`), so it can run per log line.
 */
export function normalizeAddress(text: string): string {
  if (!text.includes(":") || !/ffff/i.test(text)) return text;
  const ip = parseIp(text);
  if (!ip || !isIpv4Mapped(ip.family, ip.value)) return text;
  return formatIp(4, ip.value & V4_MASK);
}

/**
 * One address in its one canonical text (dotted quad; RFC 5952 for IPv6; an IPv4-mapped
 * address as the IPv4 address), or undefined when the text is not an address. The kernel
 * logs IPv6 in full (`fd00:0250:0000:…`), zt's records in RFC 5952 form: both must count as
 * the same host.
 */
export function canonicalAddress(text: string): string | undefined {
  const ip = parseIp(text);
  if (!ip) return undefined;
  const u = unmapIp(ip);
  return formatIp(u.family, u.value);
}

/**
 * Parses `10.0.1.10`, `10.0.1.0/24`, `fd00::1`, `fd00::/64` into a range. A prefix with host
 * bits set is refused (it is almost always a typo for the network address). An IPv4-mapped
 * address (`::ffff:10.0.2.5`, `::ffff:10.0.2.0/120`) is read as the IPv4 address or prefix it
 * stands for; a mapped prefix shorter than /96 is refused (it is not an IPv4 network).
 */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf("/");
  const addrText = slash < 0 ? text : text.slice(0, slash);
  let ip = parseIp(addrText);
  if (!ip) return { ok: false, reason: `not an IPv4 or IPv6 address or CIDR: ${quoteInput(text)}` };
  let bits = bitsOf(ip.family);
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) {
      return { ok: false, reason: `bad prefix length in ${quoteInput(text)} (0-${bits})` };
    }
    prefix = Number(p);
  }
  if (isIpv4Mapped(ip.family, ip.value)) {
    if (prefix < 96) {
      return {
        ok: false,
        reason: `IPv4-mapped IPv6 prefix shorter than /96 in ${quoteInput(text)}: it is not an IPv4 network; write the IPv4 addresses it should cover as IPv4 (a.b.c.d/N)`,
      };
    }
    ip = unmapIp(ip);
    bits = V4_BITS;
    prefix -= 96;
  }
  const hostBits = BigInt(bits - prefix);
  const mask = (1n << hostBits) - 1n;
  if ((ip.value & mask) !== 0n) {
    const net = formatIp(ip.family, ip.value & ~mask);
    return {
      ok: false,
      reason: `host bits set in ${quoteInput(text)} (did you mean ${net}/${prefix}?)`,
    };
  }
  return { ok: true, range: { family: ip.family, start: ip.value, end: ip.value | mask } };
}

/** Formats a range the way nft reads it: an address, a CIDR when exact, else `a-b`. */
export function formatRange(r: IpRange): string {
  if (r.start === r.end) return formatIp(r.family, r.start);
  const size = r.end - r.start + 1n;
  if ((size & (size - 1n)) === 0n && (r.start & (size - 1n)) === 0n) {
    const hostBits = size.toString(2).length - 1;
    return `${formatIp(r.family, r.start)}/${bitsOf(r.family) - hostBits}`;
  }
  return `${formatIp(r.family, r.start)}-${formatIp(r.family, r.end)}`;
}

/** Sorts and merges overlapping or adjacent ranges of one family. */
export function mergeRanges(ranges: readonly IpRange[]): IpRange[] {
  const sorted = [...ranges].sort(
    (a, b) => (a.family - b.family) * 2 + (a.start < b.start ? -1 : a.start > b.start ? 1 : 0),
  );
  const out: IpRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.start <= last.end + 1n) {
      if (r.end > last.end) last.end = r.end;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

export function rangeContains(r: IpRange, family: 4 | 6, value: bigint): boolean {
  return r.family === family && r.start <= value && value <= r.end;
}

export function rangesOverlap(a: IpRange, b: IpRange): boolean {
  return a.family === b.family && a.start <= b.end && b.start <= a.end;
}
