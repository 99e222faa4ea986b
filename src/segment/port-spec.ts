import { quoteInput } from "../core/printable.js";

/** Transport protocols a model can name. `icmp` covers ICMP on IPv4 and ICMPv6 on IPv6. */
export type SegProto = "tcp" | "udp" | "icmp";

/** One service: a protocol and, for tcp/udp, an inclusive destination port range. */
export interface PortSpec {
  proto: SegProto;
  /** Inclusive; absent for icmp. */
  lo?: number;
  hi?: number;
}

export type PortParse = { ok: true; spec: PortSpec } | { ok: false; reason: string };

/**
 * Parses `tcp/8443`, `udp/53`, `tcp/8000-8100`, `tcp` (every port) or `icmp`.
 */
export function parsePortSpec(text: string): PortParse {
  const t = text.trim().toLowerCase();
  if (t === "icmp") return { ok: true, spec: { proto: "icmp" } };
  const m = /^(tcp|udp)(?:\/(\d{1,5})(?:-(\d{1,5}))?)?$/.exec(t);
  if (!m) {
    return {
      ok: false,
      reason: `expected tcp/PORT, udp/PORT, tcp/LO-HI or icmp, got ${quoteInput(text)}`,
    };
  }
  const proto = m[1] as "tcp" | "udp";
  if (m[2] === undefined) return { ok: true, spec: { proto, lo: 0, hi: 65535 } };
  const lo = Number(m[2]);
  const hi = m[3] === undefined ? lo : Number(m[3]);
  if (lo > 65535 || hi > 65535)
    return { ok: false, reason: `port out of range 0-65535 in ${quoteInput(text)}` };
  if (hi < lo) return { ok: false, reason: `empty port range in ${quoteInput(text)}` };
  return { ok: true, spec: { proto, lo, hi } };
}

export function formatPortSpec(p: PortSpec): string {
  if (p.proto === "icmp") return "icmp";
  if (p.lo === 0 && p.hi === 65535) return p.proto;
  return p.lo === p.hi ? `${p.proto}/${p.lo}` : `${p.proto}/${p.lo}-${p.hi}`;
}

/** True when `outer` matches every packet `inner` matches. */
export function portSpecCovers(outer: PortSpec, inner: PortSpec): boolean {
  if (outer.proto !== inner.proto) return false;
  if (outer.proto === "icmp") return true;
  return outer.lo! <= inner.lo! && inner.hi! <= outer.hi!;
}

export function portSpecMatches(p: PortSpec, proto: SegProto, port: number | undefined): boolean {
  if (p.proto !== proto) return false;
  if (proto === "icmp") return true;
  return port !== undefined && p.lo! <= port && port <= p.hi!;
}

/** Merges tcp/udp port ranges (same proto) into disjoint sorted ranges. */
export function mergePortRanges(ranges: readonly [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) {
      if (hi > last[1]) last[1] = hi;
    } else out.push([lo, hi]);
  }
  return out;
}
