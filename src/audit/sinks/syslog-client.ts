import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect as netConnect, isIP, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";

export interface SyslogOptions {
  host: string;
  port: number;
  protocol: "udp" | "tcp" | "tls";
  appName: string;
  /** PEM CA for TLS (default: system roots). */
  ca?: string | undefined;
  timeoutMs?: number;
}

/** RFC 5424 severities used by zt. */
export type SyslogSeverity = 2 | 4 | 5 | 6; // crit, warning, notice, info

/** Facility 13: log audit (RFC 5424 §6.2.1). */
const FACILITY_LOG_AUDIT = 13;

/** Escapes a PARAM-VALUE (RFC 5424 §6.3.3: `"`, `\` and `]`). */
function sdValue(v: string): string {
  return v.replace(/["\\\]]/g, (c) => `\\${c}`);
}

/**
 * Formats one RFC 5424 message:
 * `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [zt@32473 …] MSG`.
 * 32473 is the private enterprise number reserved for documentation (RFC 5612).
 */
export function formatSyslog(o: {
  severity: SyslogSeverity;
  ts: number;
  host: string;
  appName: string;
  msgId: string;
  sd: Record<string, string>;
  msg: string;
}): string {
  const pri = FACILITY_LOG_AUDIT * 8 + o.severity;
  const params = Object.entries(o.sd)
    .map(([k, v]) => ` ${k}="${sdValue(v)}"`)
    .join("");
  const msgId = o.msgId.replace(/[^\x21-\x7e]/g, "_").slice(0, 32) || "-";
  return `<${pri}>1 ${new Date(o.ts).toISOString()} ${o.host} ${o.appName} ${process.pid} ${msgId} [zt@32473${params}] ${o.msg}`;
}

/**
 * A syslog sender: UDP (one datagram per message), TCP or TLS with RFC 6587 / RFC 5425
 * octet-counting framing (`LEN SP MSG`). Reconnects on the next send after an error.
 */
export class SyslogClient {
  readonly #o: SyslogOptions;
  readonly host =
    hostname()
      .replace(/[^\x21-\x7e]/g, "_")
      .slice(0, 255) || "-";
  #udp: UdpSocket | undefined;
  #stream: Socket | undefined;

  constructor(options: SyslogOptions) {
    this.#o = options;
  }

  get appName(): string {
    return this.#o.appName;
  }

  async send(messages: string[]): Promise<void> {
    if (this.#o.protocol === "udp") {
      const sock = (this.#udp ??= createSocket(isIP(this.#o.host) === 6 ? "udp6" : "udp4"));
      for (const m of messages) {
        await new Promise<void>((res, rej) =>
          sock.send(Buffer.from(m), this.#o.port, this.#o.host, (e) => (e ? rej(e) : res())),
        );
      }
      return;
    }
    const stream = await this.#connect();
    const framed = messages.map((m) => `${Buffer.byteLength(m)} ${m}`).join("");
    await new Promise<void>((res, rej) => {
      stream.write(framed, (e) => (e ? rej(e) : res()));
    }).catch((e: unknown) => {
      this.#stream?.destroy();
      this.#stream = undefined;
      throw e;
    });
  }

  async #connect(): Promise<Socket> {
    if (this.#stream && !this.#stream.destroyed) return this.#stream;
    const { host, port, protocol } = this.#o;
    const timeout = this.#o.timeoutMs ?? 5_000;
    const sock: Socket =
      protocol === "tls"
        ? tlsConnect({
            host,
            port,
            servername: isIP(host) ? undefined : host,
            ...(this.#o.ca ? { ca: readFileSync(this.#o.ca) } : {}),
          })
        : netConnect({ host, port });
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => {
        sock.destroy();
        rej(new Error(`syslog ${host}:${port}: connect timed out`));
      }, timeout);
      sock.once(protocol === "tls" ? "secureConnect" : "connect", () => {
        clearTimeout(timer);
        res();
      });
      sock.once("error", (e) => {
        clearTimeout(timer);
        rej(e);
      });
    });
    sock.on("error", () => {
      sock.destroy();
      if (this.#stream === sock) this.#stream = undefined;
    });
    sock.on("close", () => {
      if (this.#stream === sock) this.#stream = undefined;
    });
    this.#stream = sock;
    return sock;
  }

  async close(): Promise<void> {
    this.#udp?.close();
    this.#udp = undefined;
    if (this.#stream) await new Promise<void>((r) => this.#stream!.end(() => r()));
    this.#stream = undefined;
  }
}
