import type { SegProto } from "./port-spec.js";

/** One observed connection attempt read from a log line. */
export interface ObservedPacket {
  src: string;
  dst: string;
  proto: SegProto;
  /** Destination port for tcp/udp (the source port is ephemeral and ignored). */
  port?: number;
  /** Milliseconds since the epoch when the line carried a wall-clock time. */
  ts?: number;
  /** The log prefix verdict (`ZT-DROP`, `ZT-WOULD-DROP`) when present. */
  verdict?: string;
}

const MONTHS: Record<string, number> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
};

function field(line: string, key: string, from = 0): string | undefined {
  const i = line.indexOf(key, from);
  if (i < 0) return undefined;
  const start = i + key.length;
  let end = line.indexOf(" ", start);
  if (end < 0) end = line.length;
  return line.slice(start, end);
}

/** Reads the PROTO= value at `i` without allocating. */
function protoAt(line: string, i: number): SegProto | undefined {
  const end = line.indexOf(" ", i);
  const len = (end < 0 ? line.length : end) - i;
  if (len === 3 && line.startsWith("TCP", i)) return "tcp";
  if (len === 3 && line.startsWith("UDP", i)) return "udp";
  if ((len === 4 && line.startsWith("ICMP", i)) || (len === 6 && line.startsWith("ICMPv6", i)))
    return "icmp";
  return protoOf(line.slice(i, i + len));
}

function protoOf(p: string | undefined): SegProto | undefined {
  switch (p) {
    case "TCP":
    case "tcp":
    case "6":
      return "tcp";
    case "UDP":
    case "udp":
    case "17":
      return "udp";
    case "ICMP":
    case "ICMPv6":
    case "icmp":
    case "1":
    case "58":
      return "icmp";
    default:
      return undefined;
  }
}

/** The largest time a Date holds (ECMAScript: ±100,000,000 days from the epoch). */
const MAX_DATE_MS = 8.64e15;

/**
 * A JSON record's destination port: an integer 0-65535, or that integer written in decimal
 * digits. `Number()` alone took `""` and `null` as 0, `[22]` as 22 and `"0x16"` as 22, so a
 * malformed record became a flow on a port nobody used.
 */
function jsonPort(v: unknown): number | undefined {
  const n =
    typeof v === "number" ? v : typeof v === "string" && /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined;
}

/**
 * Parses kernel log lines from nftables/iptables/ufw `log prefix` rules
 * (`… IN=eth0 OUT= SRC=… DST=… PROTO=TCP SPT=… DPT=…`, IPv4 and IPv6) and zt's JSON flow
 * records (`{"src","dst","proto","dport","ts"}`; `client_ip`/`dst_ip`/`dst_port`
 * accepted too). Wall-clock times are read from an ISO 8601 or RFC 3164 line start;
 * RFC 3164 has no year, so the caller supplies it. Pure.
 */
export class LogLineParser {
  readonly #year: number;
  readonly #cache = new Map<string, number | null>();

  constructor(options: { year: number }) {
    this.#year = options.year;
  }

  parse(line: string): ObservedPacket | undefined {
    if (line.charCodeAt(0) === 123 /* { */) return this.#parseJson(line);
    // the kernel writes SRC, DST, PROTO, DPT in this order: search each from the last
    const iSrc = line.indexOf(" SRC=");
    if (iSrc < 0) return undefined;
    const src = field(line, " SRC=", iSrc);
    const iDst = line.indexOf(" DST=", iSrc);
    const dst = iDst < 0 ? undefined : field(line, " DST=", iDst);
    const iProto = iDst < 0 ? -1 : line.indexOf(" PROTO=", iDst);
    const proto = iProto < 0 ? undefined : protoAt(line, iProto + 7);
    if (!src || !dst || !proto) return undefined;
    const pkt: ObservedPacket = { src, dst, proto };
    if (proto !== "icmp") {
      const iDpt = line.indexOf(" DPT=", iProto);
      if (iDpt < 0) return undefined;
      let port = 0;
      let digits = 0;
      for (let i = iDpt + 5; i < line.length; i++) {
        const d = line.charCodeAt(i) - 48;
        if (d < 0 || d > 9) break;
        port = port * 10 + d;
        digits++;
      }
      if (digits === 0 || digits > 5 || port > 65535) return undefined;
      pkt.port = port;
    }
    const ts = this.#timeOf(line);
    if (ts !== undefined) pkt.ts = ts;
    const z = line.lastIndexOf("ZT-", iSrc);
    if (z >= 0) {
      const v = line.startsWith("ZT-WOULD-DROP", z)
        ? "ZT-WOULD-DROP"
        : line.startsWith("ZT-DROP", z)
          ? "ZT-DROP"
          : undefined;
      if (v) pkt.verdict = v;
    }
    return pkt;
  }

  #timeOf(line: string): number | undefined {
    const c = line.charCodeAt(0);
    if (c >= 48 && c <= 57 && line.charCodeAt(4) === 45 /* - */) {
      const sp = line.indexOf(" ");
      const stamp = sp < 0 ? line : line.slice(0, sp);
      // cache per second and zone: drop the fraction, add it back by hand
      if (stamp.length < 19 || stamp.charCodeAt(10) !== 84 /* T */) return undefined;
      let zone = 19;
      let frac = 0;
      if (stamp.charCodeAt(19) === 46 /* . */) {
        let scale = 100;
        zone = 20;
        for (; zone < stamp.length; zone++) {
          const d = stamp.charCodeAt(zone) - 48;
          if (d < 0 || d > 9) break;
          if (scale >= 1) frac += d * scale; // milliseconds: the first three digits
          scale /= 10;
        }
      }
      const key = zone === 19 ? stamp : stamp.slice(0, 19) + stamp.slice(zone);
      let base = this.#cache.get(key);
      if (base === undefined) {
        const t = Date.parse(key);
        base = Number.isNaN(t) ? null : t;
        if (this.#cache.size > 4096) this.#cache.clear();
        this.#cache.set(key, base);
      }
      return base === null ? undefined : base + frac;
    }
    if (c >= 65 && c <= 90 && line.charCodeAt(3) === 32) {
      const stamp = line.slice(0, 15);
      let t = this.#cache.get(stamp);
      if (t === undefined) {
        const m = /^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)$/.exec(stamp);
        const month = m ? MONTHS[m[1]!] : undefined;
        t =
          m && month !== undefined
            ? Date.UTC(this.#year, month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]))
            : null;
        if (this.#cache.size > 4096) this.#cache.clear();
        this.#cache.set(stamp, t);
      }
      return t ?? undefined;
    }
    return undefined;
  }

  #parseJson(line: string): ObservedPacket | undefined {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    const src = o["src"] ?? o["client_ip"];
    const dst = o["dst"] ?? o["dst_ip"];
    if (typeof src !== "string" || typeof dst !== "string") return undefined;
    const proto = protoOf(String(o["proto"] ?? "tcp"));
    if (!proto) return undefined;
    const pkt: ObservedPacket = { src, dst, proto };
    if (proto !== "icmp") {
      const port = jsonPort(o["dport"] ?? o["dst_port"]);
      if (port === undefined) return undefined;
      pkt.port = port;
    }
    const ts = o["ts"] ?? o["time"];
    const t = typeof ts === "number" ? ts : typeof ts === "string" ? Date.parse(ts) : NaN;
    // a number past what a Date can hold (±8.64e15 ms) made toISOString throw in learn's output
    if (Number.isFinite(t) && Math.abs(t) <= MAX_DATE_MS) pkt.ts = t;
    return pkt;
  }
}
