/**
 * HAProxy's Stream Processing Offload Protocol (SPOP 2.0, HAProxy doc/SPOE.txt §3): the
 * frames an agent reads and writes. Pure: bytes in, values out, and the reverse. Every
 * length is checked against the bytes present; anything malformed throws SpopError with
 * the SPOP status code to disconnect with.
 */
import { SocketAddress } from "node:net";

/** SPOP frame types (§3.2.2). */
export const FRAME = {
  HAPROXY_HELLO: 1,
  HAPROXY_DISCONNECT: 2,
  NOTIFY: 3,
  AGENT_HELLO: 101,
  AGENT_DISCONNECT: 102,
  ACK: 103,
} as const;

/** SPOP status codes (§3.5) zt sends or reacts to. */
export const SPOP_STATUS = {
  NORMAL: 0,
  IO: 1,
  TOO_BIG: 3,
  INVALID: 4,
  NO_VERSION: 5,
  NO_FRAME_SIZE: 6,
  NO_CAPABILITIES: 7,
  BAD_VERSION: 8,
  BAD_FRAME_SIZE: 9,
  FRAGMENTATION: 10,
  UNKNOWN: 99,
} as const;

/** Variable scopes of the set-var action (§3.4). */
export const VAR_SCOPE = { PROCESS: 0, SESSION: 1, TRANSACTION: 2, REQUEST: 3, RESPONSE: 4 };

const FLAG_FIN = 1;
const FLAG_ABORT = 2;

/** Typed data (§3.1): NULL, booleans, integers, IP addresses (as text), strings, bytes. */
export type SpopValue = null | boolean | number | bigint | string | Buffer | SpopAddress;

/** An IPV4 / IPV6 typed value, kept apart from strings so a client cannot pass text as one. */
export interface SpopAddress {
  ip: string;
}

export class SpopError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "SpopError";
  }
}

export interface SpopFrame {
  type: number;
  flags: number;
  streamId: number;
  frameId: number;
  /** The payload, undecoded (its shape depends on the type). */
  payload: Buffer;
}

export interface SpopMessage {
  name: string;
  args: Map<string, SpopValue>;
}

/** A read cursor over one frame; every read checks the bytes are there. */
class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  byte(): number {
    if (this.pos >= this.buf.length) throw new SpopError(SPOP_STATUS.INVALID, "truncated frame");
    return this.buf[this.pos++]!;
  }

  bytes(n: number): Buffer {
    if (n > this.buf.length - this.pos) throw new SpopError(SPOP_STATUS.INVALID, "truncated frame");
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** HAProxy's "peers" varint (§3.1): 7.875 bits in the first byte, then 7 per byte. */
  varint(): number {
    let value = this.byte();
    if (value < 240) return value;
    let shift = 4;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      value += b * 2 ** shift;
      shift += 7;
      if (b < 128) {
        if (!Number.isSafeInteger(value))
          throw new SpopError(SPOP_STATUS.INVALID, "varint out of range");
        return value;
      }
    }
    throw new SpopError(SPOP_STATUS.INVALID, "varint too long");
  }

  string(): string {
    return this.bytes(this.varint()).toString("utf8");
  }

  typed(): SpopValue {
    const head = this.byte();
    const type = head & 0x0f;
    switch (type) {
      case 0:
        return null;
      case 1:
        return (head & 0x10) !== 0;
      case 2:
      case 3:
      case 4:
      case 5:
        // Signed values travel as their two's-complement bits; zt reads none of them.
        return this.varint();
      case 6:
        return { ip: [...this.bytes(4)].join(".") };
      case 7: {
        const b = this.bytes(16);
        const groups: string[] = [];
        for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
        // As the kernel writes it (inet_ntop, as for socket.remoteAddress): "2001:db8::1",
        // "::ffff:1.2.3.4". Bans and policies compare address text, so the HTTP path and
        // this one must spell one address the same way.
        return { ip: new SocketAddress({ address: groups.join(":"), family: "ipv6" }).address };
      }
      case 8:
        return this.string();
      case 9:
        return Buffer.from(this.bytes(this.varint()));
      default:
        throw new SpopError(SPOP_STATUS.INVALID, `unknown data type ${type}`);
    }
  }

  kvList(): Map<string, SpopValue> {
    const out = new Map<string, SpopValue>();
    while (!this.done) out.set(this.string(), this.typed());
    return out;
  }
}

/** Appends HAProxy's varint encoding of a non-negative integer to `out`. */
export function writeVarint(out: number[], n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`varint out of range: ${n}`);
  if (n < 240) {
    out.push(n);
    return;
  }
  out.push((n % 256) | 240);
  let rest = Math.floor((n - 240) / 16);
  while (rest >= 128) {
    out.push((rest % 256) | 128);
    rest = Math.floor((rest - 128) / 128);
  }
  out.push(rest);
}

/** Reads one varint from the start of `buf` (for tests and tools). */
export function readVarint(buf: Buffer): number {
  return new Reader(buf).varint();
}

function writeString(out: number[], s: string | Buffer): void {
  const b = typeof s === "string" ? Buffer.from(s, "utf8") : s;
  writeVarint(out, b.length);
  for (const x of b) out.push(x);
}

function writeTyped(out: number[], v: string | number | boolean): void {
  if (typeof v === "boolean") out.push(v ? 0x11 : 0x01);
  else if (typeof v === "number") {
    out.push(3); // UINT32
    writeVarint(out, v);
  } else {
    out.push(8);
    writeString(out, v);
  }
}

/**
 * Splits complete frames off the front of `buf`: `<LENGTH:4 bytes><FRAME>`. Returns the
 * frames and the bytes left over (an incomplete frame). A frame longer than
 * `maxFrameSize` is refused before it is buffered.
 */
export function splitFrames(
  buf: Buffer,
  maxFrameSize: number,
): { frames: SpopFrame[]; rest: Buffer } {
  const frames: SpopFrame[] = [];
  let pos = 0;
  while (buf.length - pos >= 4) {
    const len = buf.readUInt32BE(pos);
    if (len > maxFrameSize)
      throw new SpopError(SPOP_STATUS.TOO_BIG, `frame of ${len} bytes exceeds ${maxFrameSize}`);
    if (buf.length - pos - 4 < len) break;
    frames.push(parseFrame(buf.subarray(pos + 4, pos + 4 + len)));
    pos += 4 + len;
  }
  return { frames, rest: buf.subarray(pos) };
}

/**
 * Parses one frame (without its length prefix). A fragment (FIN clear, §3.2: the first of a
 * fragmented payload, or an UNSET continuation) or an abort (ABORT set) is refused with
 * status 10, never read as a whole frame: the agent does not announce the "fragmentation"
 * capability, HAProxy 2.x fragments only for agents that do (§3.2.1), and HAProxy 3.1
 * removed fragmentation (every frame has FIN set).
 */
export function parseFrame(frame: Buffer): SpopFrame {
  const r = new Reader(frame);
  const type = r.byte();
  const flags = r.bytes(4).readUInt32BE(0);
  const streamId = r.varint();
  const frameId = r.varint();
  if ((flags & FLAG_FIN) === 0 || (flags & FLAG_ABORT) !== 0)
    throw new SpopError(SPOP_STATUS.FRAGMENTATION, "fragmented frames are not supported");
  return { type, flags, streamId, frameId, payload: frame.subarray(r.pos) };
}

/** The KV-LIST payload of a HELLO or DISCONNECT frame. */
export function readKvList(payload: Buffer): Map<string, SpopValue> {
  return new Reader(payload).kvList();
}

/**
 * The set-var actions of an ACK's LIST-OF-ACTIONS (§3.4), as `ackFrame` writes them: the
 * variables by name (for tests and tools; HAProxy is the one that reads ACKs).
 */
export function readSetVars(payload: Buffer): Map<string, SpopValue> {
  const r = new Reader(payload);
  const out = new Map<string, SpopValue>();
  while (!r.done) {
    const type = r.byte();
    const nbArgs = r.byte();
    if (type !== 1 || nbArgs !== 3)
      throw new SpopError(SPOP_STATUS.INVALID, `not a set-var action (${type}, ${nbArgs} args)`);
    r.byte(); // the scope
    out.set(r.string(), r.typed());
  }
  return out;
}

/** The LIST-OF-MESSAGES payload of a NOTIFY frame (§3.2.6). */
export function readMessages(payload: Buffer): SpopMessage[] {
  const r = new Reader(payload);
  const out: SpopMessage[] = [];
  while (!r.done) {
    const name = r.string();
    const nbArgs = r.byte();
    const args = new Map<string, SpopValue>();
    for (let i = 0; i < nbArgs; i++) args.set(r.string(), r.typed());
    out.push({ name, args });
  }
  return out;
}

function frameBytes(type: number, streamId: number, frameId: number, body: number[]): Buffer {
  const head: number[] = [type, 0, 0, 0, FLAG_FIN];
  writeVarint(head, streamId);
  writeVarint(head, frameId);
  const out = Buffer.allocUnsafe(4 + head.length + body.length);
  out.writeUInt32BE(head.length + body.length, 0);
  Buffer.from(head).copy(out, 4);
  Buffer.from(body).copy(out, 4 + head.length);
  return out;
}

/** A KV-LIST frame (AGENT-HELLO, AGENT-DISCONNECT): stream and frame id 0. */
export function kvFrame(type: number, kv: Record<string, string | number | boolean>): Buffer {
  const body: number[] = [];
  for (const [k, v] of Object.entries(kv)) {
    writeString(body, k);
    writeTyped(body, v);
  }
  return frameBytes(type, 0, 0, body);
}

/** An ACK frame whose actions set transaction-scoped variables (strings or integers). */
export function ackFrame(
  streamId: number,
  frameId: number,
  vars: Record<string, string | number>,
): Buffer {
  const body: number[] = [];
  for (const [name, value] of Object.entries(vars)) {
    body.push(1, 3, VAR_SCOPE.TRANSACTION); // SET-VAR, 3 arguments, txn scope
    writeString(body, name);
    if (typeof value === "number") {
      body.push(2); // INT32
      writeVarint(body, value);
    } else {
      body.push(8);
      writeString(body, value);
    }
  }
  return frameBytes(FRAME.ACK, streamId, frameId, body);
}
