import { isIPv4, isIPv6 } from "node:net";

/**
 * IP address text, parsed once and written back in one canonical form (dotted quad;
 * RFC 5952 for IPv6). Shared by segmentation (ranges) and the PKI (iPAddress SANs), so
 * every part of zt reads `::ffff:10.0.0.1` as the same address.
 */

/** Parses a dotted IPv4 address into a bigint. The caller has checked `isIPv4`. */
function v4ToBig(addr: string): bigint {
  let n = 0n;
  for (const part of addr.split(".")) n = (n << 8n) | BigInt(Number(part));
  return n;
}

/** Parses any textual IPv6 address (with `::`, embedded IPv4) into a bigint; `isIPv6` has passed. */
function v6ToBig(addr: string): bigint {
  let text = addr;
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  if (tail.includes(".")) {
    const v = Number(v4ToBig(tail));
    text = `${text.slice(0, lastColon + 1)}${((v >>> 16) & 0xffff).toString(16)}:${(v & 0xffff).toString(16)}`;
  }
  const parse = (s: string) => (s === "" ? [] : s.split(":").map((w) => parseInt(w, 16)));
  const dbl = text.indexOf("::");
  let words: number[];
  if (dbl < 0) {
    words = parse(text);
  } else {
    const head = parse(text.slice(0, dbl));
    const rest = parse(text.slice(dbl + 2));
    words = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  }
  let n = 0n;
  for (const w of words) n = (n << 16n) | BigInt(w);
  return n;
}

/** Parses one address (no prefix). Returns undefined when it is not an IP address. */
export function parseIp(addr: string): { family: 4 | 6; value: bigint } | undefined {
  if (isIPv4(addr)) return { family: 4, value: v4ToBig(addr) };
  if (isIPv6(addr) && !addr.includes("%")) return { family: 6, value: v6ToBig(addr) };
  return undefined;
}

/** Formats an address in canonical form (RFC 5952 for IPv6). */
export function formatIp(family: 4 | 6, value: bigint): string {
  if (family === 4) {
    const v = Number(value);
    return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
  }
  const words: number[] = [];
  for (let i = 7; i >= 0; i--) words.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952 §4.2.3: compress the longest run of two or more zero words, the first on a tie
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** An address network: its family, prefix length and base address (host bits zero). */
export interface IpNetwork {
  family: 4 | 6;
  prefix: number;
  base: bigint;
}

/** The network of `prefix` bits that holds an address. */
export function networkAround(family: 4 | 6, value: bigint, prefix: number): IpNetwork {
  const host = BigInt((family === 4 ? 32 : 128) - prefix);
  return { family, prefix, base: (value >> host) << host };
}

/** A network written canonically: `192.0.2.0/24`, `2001:db8:1:2::/64` (RFC 5952). */
export function formatNetwork(n: IpNetwork): string {
  return `${formatIp(n.family, n.base)}/${n.prefix}`;
}

/**
 * Parses `address/prefix` strictly: a valid address, a decimal prefix within the
 * family's width, and no host bits set (`192.0.2.7/24` is refused: it names an address
 * and a network at once, and guessing which was meant is how a ban misses or widens).
 */
export function parseNetwork(text: string): IpNetwork | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const bitsText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bitsText)) return undefined;
  const ip = parseIp(text.slice(0, slash));
  if (!ip) return undefined;
  const prefix = Number(bitsText);
  if (prefix > (ip.family === 4 ? 32 : 128)) return undefined;
  const n = networkAround(ip.family, ip.value, prefix);
  return n.base === ip.value ? n : undefined;
}

/** True when `n` holds the address (`family`, `value`). */
export function networkHolds(n: IpNetwork, family: 4 | 6, value: bigint): boolean {
  return family === n.family && networkAround(family, value, n.prefix).base === n.base;
}
