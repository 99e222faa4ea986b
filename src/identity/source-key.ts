import { isIP } from "node:net";
import { normalizeIp } from "../core/cidr.js";

/**
 * The throttling key for a source address. IPv6 clients are keyed by their /64, since
 * one host commonly holds a whole /64 and could otherwise rotate addresses per guess.
 */
export function sourceKey(sourceIp: string): string {
  if (!sourceIp) return "ip:unknown";
  const ip = normalizeIp(sourceIp.replace(/%.*$/, ""));
  const family = isIP(ip);
  if (family === 4) return `ip:${ip}`;
  if (family === 6) return `ip:${ipv6Prefix64(ip)}`;
  return "ip:unknown";
}

function ipv6Prefix64(ip: string): string {
  const parse = (s: string | undefined): number[] => {
    if (!s) return [];
    return s.split(":").flatMap((part) => {
      if (part.includes(".")) {
        const o = part.split(".").map(Number);
        return [((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0)];
      }
      return [parseInt(part, 16)];
    });
  };
  const [head, tail] = ip.toLowerCase().split("::");
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  const hextets = [...h, ...new Array<number>(Math.max(8 - h.length - t.length, 0)).fill(0), ...t];
  return `${hextets
    .slice(0, 4)
    .map((x) => x.toString(16))
    .join(":")}::/64`;
}
