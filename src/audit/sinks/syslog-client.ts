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
  /** Connect timeout, and how long a receiver may take nothing we write (default 5 s). */
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
 * The largest UDP payload over IPv4 (65,535 − 8 − 20). RFC 5426 §3.2 lets a message be
 * truncated to what the transport carries; a longer datagram fails with EMSGSIZE, and
 * the same event would then be retried, and fail, forever.
 */
const MAX_UDP_PAYLOAD = 65_507;

/** The datagram for one message: truncated to {@link MAX_UDP_PAYLOAD} on a UTF-8 boundary. */
function udpPayload(message: string): Buffer {
  const b = Buffer.from(message);
  if (b.length <= MAX_UDP_PAYLOAD) return b;
  let end = MAX_UDP_PAYLOAD;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // never cut a character in two
  return b.subarray(0, end);
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
    if (messages.length === 0) return;
    if (this.#o.protocol === "udp") {
      const sock = (this.#udp ??= createSocket(isIP(this.#o.host) === 6 ? "udp6" : "udp4"));
      for (const m of messages) {
        await new Promise<void>((res, rej) =>
          sock.send(udpPayload(m), this.#o.port, this.#o.host, (e) => (e ? rej(e) : res())),
        );
      }
      return;
    }
    const stream = await this.#connect();
    await this.#write(stream, messages).catch((e: unknown) => {
      stream.destroy();
      if (this.#stream === stream) this.#stream = undefined;
      throw e;
    });
  }

  /**
   * Writes octet-counted frames in chunks of about 64 KB and fails when the receiver takes
   * nothing for `timeoutMs`: one that accepts the connection but stops reading would
   * otherwise hold the write (and every later delivery) forever.
   */
  #write(stream: Socket, messages: string[]): Promise<void> {
    const timeout = this.#o.timeoutMs ?? 5_000;
    const chunks: string[] = [];
    let chunk = "";
    for (const m of messages) {
      chunk += `${Buffer.byteLength(m)} ${m}`;
      if (chunk.length >= 65_536) {
        chunks.push(chunk);
        chunk = "";
      }
    }
    if (chunk !== "") chunks.push(chunk);
    return new Promise<void>((res, rej) => {
      let left = chunks.length;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (e?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) rej(e);
        else res();
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(
          () =>
            settle(
              new Error(
                `syslog ${this.#o.host}:${this.#o.port}: the receiver took nothing for ${timeout} ms`,
              ),
            ),
          timeout,
        );
      };
      arm();
      for (const c of chunks) {
        stream.write(c, (e) => {
          if (e) return settle(e);
          if (--left === 0) settle();
          else arm();
        });
      }
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
