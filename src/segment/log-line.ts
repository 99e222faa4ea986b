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

function field(line: string, key: string): string | undefined {
  const i = line.indexOf(key);
  if (i < 0) return undefined;
  const start = i + key.length;
  let end = line.indexOf(" ", start);
  if (end < 0) end = line.length;
  return line.slice(start, end);
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

/**
 * Parses kernel log lines from nftables/iptables/ufw `log prefix` rules
 * (`… IN=eth0 OUT= SRC=… DST=… PROTO=TCP SPT=… DPT=…`, IPv4 and IPv6) and zt's JSON flow
 * records (`{"src","dst","proto","dport","ts"}`; `client_ip`/`dst_ip`/`dst_port`
 * accepted too). Wall-clock times are read from an ISO 8601 or RFC 3164 line start;
 * RFC 3164 has no year, so the caller supplies it. Pure.
 */
export class LogLineParser {
  readonly #year: number;
  #lastStamp = "";
  #lastTs: number | undefined;

  constructor(options: { year: number }) {
    this.#year = options.year;
  }

  parse(line: string): ObservedPacket | undefined {
    if (line.charCodeAt(0) === 123 /* { */) return this.#parseJson(line);
    const src = field(line, " SRC=");
    if (src === undefined) return undefined;
    const dst = field(line, " DST=");
    const proto = protoOf(field(line, " PROTO="));
    if (!dst || !proto) return undefined;
    const pkt: ObservedPacket = { src, dst, proto };
    if (proto !== "icmp") {
      const dpt = field(line, " DPT=");
      if (dpt === undefined) return undefined;
      const port = Number(dpt);
      if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
      pkt.port = port;
    }
    const ts = this.#timeOf(line);
    if (ts !== undefined) pkt.ts = ts;
    const z = line.indexOf("ZT-");
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
    let stamp: string;
    if (c >= 48 && c <= 57 && line.charCodeAt(4) === 45 /* - */) {
      const sp = line.indexOf(" ");
      stamp = sp < 0 ? line : line.slice(0, sp);
      if (stamp === this.#lastStamp) return this.#lastTs;
      const t = Date.parse(stamp);
      this.#lastStamp = stamp;
      this.#lastTs = Number.isNaN(t) ? undefined : t;
      return this.#lastTs;
    }
    if (c >= 65 && c <= 90 && line.charCodeAt(3) === 32) {
      stamp = line.slice(0, 15);
      if (stamp === this.#lastStamp) return this.#lastTs;
      const m = /^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)$/.exec(stamp);
      const month = m ? MONTHS[m[1]!] : undefined;
      this.#lastStamp = stamp;
      this.#lastTs =
        m && month !== undefined
          ? Date.UTC(this.#year, month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]))
          : undefined;
      return this.#lastTs;
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
      const port = Number(o["dport"] ?? o["dst_port"]);
      if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
      pkt.port = port;
    }
    const ts = o["ts"] ?? o["time"];
    const t = typeof ts === "number" ? ts : typeof ts === "string" ? Date.parse(ts) : NaN;
    if (!Number.isNaN(t)) pkt.ts = t;
    return pkt;
  }
}
