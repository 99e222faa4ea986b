import { ZtError } from "../../core/errors.js";

/** RFC 4251 §5 data types, written into one growing buffer. */
export class SshWriter {
  readonly #parts: Buffer[] = [];

  byte(v: number): this {
    this.#parts.push(Buffer.from([v & 0xff]));
    return this;
  }

  uint32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.#parts.push(b);
    return this;
  }

  uint64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt.asUintN(64, v));
    this.#parts.push(b);
    return this;
  }

  /** `string`: uint32 length then the bytes. */
  string(v: string | Uint8Array): this {
    const data = typeof v === "string" ? Buffer.from(v, "utf8") : Buffer.from(v);
    this.uint32(data.length);
    this.#parts.push(data);
    return this;
  }

  /** `mpint`: two's complement, big-endian, minimal, positive values get a leading 0 if needed. */
  mpint(v: Uint8Array): this {
    let i = 0;
    while (i < v.length && v[i] === 0) i++;
    let body = Buffer.from(v.subarray(i));
    if (body.length > 0 && body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
    return this.string(body);
  }

  raw(v: Uint8Array): this {
    this.#parts.push(Buffer.from(v));
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.#parts);
  }
}

/** Reads RFC 4251 data types; any overrun is a ZT_PKI_KEY_INVALID (input from outside). */
export class SshReader {
  readonly #buf: Buffer;
  #pos = 0;

  constructor(buf: Buffer) {
    this.#buf = buf;
  }

  get done(): boolean {
    return this.#pos === this.#buf.length;
  }

  uint32(): number {
    this.#need(4);
    const v = this.#buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }

  uint64(): bigint {
    this.#need(8);
    const v = this.#buf.readBigUInt64BE(this.#pos);
    this.#pos += 8;
    return v;
  }

  string(): Buffer {
    const len = this.uint32();
    this.#need(len);
    const v = this.#buf.subarray(this.#pos, this.#pos + len);
    this.#pos += len;
    return v;
  }

  #need(n: number): void {
    if (this.#pos + n > this.#buf.length) {
      throw new ZtError("ZT_PKI_KEY_INVALID", "SSH key data is truncated", {
        reason: "ssh-key-truncated",
      });
    }
  }
}
