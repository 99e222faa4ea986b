import { isIP } from "node:net";

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
  const family = isIP(text);
  if (family === 4) return Buffer.from(text.split(".").map(Number));
  if (family !== 6 || text.includes("%")) return undefined;
  let s = text;
  const lastColon = s.lastIndexOf(":");
  const last = s.slice(lastColon + 1);
  // RFC 4291 §2.2 (3): the low 32 bits may be written as a dotted IPv4 address.
  if (last.includes(".")) {
    if (isIP(last) !== 4) return undefined;
    const o = last.split(".").map(Number) as [number, number, number, number];
    s = `${s.slice(0, lastColon + 1)}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...Array<string>(missing).fill("0"), ...tail];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  }
  return out;
}

/**
 * An iPAddress's octets as text: dotted quad, or IPv6 per RFC 5952 §4 (lowercase, no
 * leading zeros, the longest run of two or more zero groups as `::`, the first on a tie).
 * Undefined unless 4 or 16 octets.
 */
export function formatIpAddress(b: Uint8Array): string | undefined {
  if (b.length === 4) return [...b].join(".");
  if (b.length !== 16) return undefined;
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(i));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hexs = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hexs.join(":");
  return `${hexs.slice(0, bestStart).join(":")}::${hexs.slice(bestStart + bestLen).join(":")}`;
}

/** The canonical text of an IP address (see `formatIpAddress`), or undefined if `text` is none. */
export function canonicalIpAddress(text: string): string | undefined {
  const b = ipAddressBytes(text);
  return b ? formatIpAddress(b) : undefined;
}
