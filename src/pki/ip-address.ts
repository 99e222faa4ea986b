import { formatIp, parseIp } from "../core/ip-address.js";

/**
 * IP addresses as certificates hold them (RFC 5280 §4.2.1.6: an iPAddress is 4 or 16
 * octets). Text is parsed here once; allow-lists compare, and certificates encode, the
 * one canonical form, so what was checked is what gets signed.
 */

/**
 * The octets of an IPv4 address (dotted quad) or an IPv6 address in any RFC 4291 §2.2
 * text form, including `::` and a dotted IPv4 tail (`::ffff:10.0.0.1`). Undefined for
 * anything else, a zone index (`fe80::1%eth0`) included: it has no place in a SAN.
 *
 * @example ipAddressBytes("::ffff:10.0.0.1") // 00…00 ff ff 0a 00 00 01
 */
export function ipAddressBytes(text: string): Buffer | undefined {
  const ip = parseIp(text);
  if (!ip) return undefined;
  const out = Buffer.alloc(ip.family === 4 ? 4 : 16);
  let v = ip.value;
  for (let i = out.length - 1; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

/**
 * An iPAddress's octets as text: dotted quad, or IPv6 per RFC 5952 §4 (lowercase, no
 * leading zeros, the longest run of two or more zero groups as `::`, the first on a tie).
 * Undefined unless 4 or 16 octets.
 */
export function formatIpAddress(b: Uint8Array): string | undefined {
  if (b.length !== 4 && b.length !== 16) return undefined;
  let v = 0n;
  for (const octet of b) v = (v << 8n) | BigInt(octet);
  return formatIp(b.length === 4 ? 4 : 6, v);
}

/** The canonical text of an IP address (see `formatIpAddress`), or undefined if `text` is none. */
export function canonicalIpAddress(text: string): string | undefined {
  const b = ipAddressBytes(text);
  return b ? formatIpAddress(b) : undefined;
}
