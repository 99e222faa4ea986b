import { ZtError } from "../core/errors.js";

/** One DER TLV: its tag, the bytes of the whole element and of its contents. */
export interface DerElement {
  tag: number;
  whole: Buffer;
  content: Buffer;
}

/**
 * Reads the DER elements inside `buf` (definite lengths only, as DER requires).
 * Used to take a CSR apart into signed bytes and signature without re-encoding.
 */
export function readDerChildren(buf: Buffer): DerElement[] {
  const out: DerElement[] = [];
  let i = 0;
  while (i < buf.length) {
    const start = i;
    const tag = buf[i++]!;
    if ((tag & 0x1f) === 0x1f) throw malformed("high tag numbers are not used here");
    if (i >= buf.length) throw malformed("truncated length");
    let len = buf[i++]!;
    if (len & 0x80) {
      const n = len & 0x7f;
      // X.690 §10.1: DER uses the definite form, and our inputs are far below 2^32 bytes.
      if (n === 0 || n > 4) throw malformed("unsupported length form");
      if (i + n > buf.length) throw malformed("truncated length");
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + buf[i++]!;
    }
    if (i + len > buf.length) throw malformed("element runs past the end");
    out.push({ tag, whole: buf.subarray(start, i + len), content: buf.subarray(i, i + len) });
    i += len;
  }
  return out;
}

function malformed(what: string): ZtError {
  return new ZtError("ZT_PKI_CSR_INVALID", `malformed DER: ${what}`, { reason: "der-malformed" });
}

/** DER INTEGER for a non-negative number (used for the CRL number). */
export function derInteger(value: bigint): Buffer {
  let hex = value.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  let body = Buffer.from(hex, "hex");
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

/**
 * Parses PEM (exactly one block of the given label; text around it is ignored, RFC 7468
 * §2) or passes DER through. Two blocks are refused: which one is meant is not ours to
 * guess, and a reader that takes the first (as openssl does) may see another request.
 */
export function pemOrDer(input: string | Uint8Array, label: string): Buffer {
  if (typeof input !== "string") return Buffer.from(input);
  if (input.split(`-----BEGIN ${label}-----`).length > 2) {
    throw new ZtError("ZT_PKI_CSR_INVALID", `expected one PEM block "${label}", found several`, {
      reason: "pem-multiple",
    });
  }
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`);
  const m = re.exec(input);
  if (!m) {
    throw new ZtError("ZT_PKI_CSR_INVALID", `expected a PEM block "${label}"`, {
      reason: "pem-missing",
    });
  }
  return Buffer.from(m[1]!.replace(/\s+/g, ""), "base64");
}

/** Splits a PEM bundle into its DER certificates. */
export function pemCertificates(text: string): Buffer[] {
  const re = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g;
  const out: Buffer[] = [];
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) out.push(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
  return out;
}

export function toPem(der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}
