import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { ZtError } from "../../core/errors.js";
import { rsaExponentProblem } from "../csr.js";
import { SshReader, SshWriter } from "./ssh-wire.js";

/** The largest public key line we read (an RSA-8192 key is ~1.4 KB). */
export const MAX_SSH_KEY_BYTES = 8 * 1024;

export type SshKeyType =
  "ssh-ed25519" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" | "ssh-rsa";

/** A plain (not certificate) OpenSSH public key, checked to be a real key. */
export interface SshPublicKey {
  type: SshKeyType;
  /** The RFC 4253 §6.6 public key blob. */
  blob: Buffer;
  /** The key's own fields after the type name, as they go into a certificate. */
  fields: Buffer;
  comment: string;
  /** `SHA256:<base64 without padding>`, as ssh-keygen -l prints it. */
  fingerprint: string;
}

const CURVES: Record<string, { id: string; crv: string; size: number }> = {
  "ecdsa-sha2-nistp256": { id: "nistp256", crv: "P-256", size: 32 },
  "ecdsa-sha2-nistp384": { id: "nistp384", crv: "P-384", size: 48 },
  "ecdsa-sha2-nistp521": { id: "nistp521", crv: "P-521", size: 66 },
};

function bad(message: string, reason: string): ZtError {
  return new ZtError("ZT_PKI_KEY_INVALID", message, { reason });
}

export function sshFingerprint(blob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`) and proves it is a
 * key: the blob's structure must match its type and the key material must load.
 * Certificates, private keys and anything else are refused with ZT_PKI_KEY_INVALID.
 */
export function parseSshPublicKey(line: string): SshPublicKey {
  if (Buffer.byteLength(line) > MAX_SSH_KEY_BYTES)
    throw bad("SSH public key is too large", "ssh-key-too-large");
  if (line.includes("PRIVATE KEY"))
    throw bad("this is a private key; give the .pub file", "ssh-private-key");
  // One key per input: of a file holding several, taking the first would sign, or revoke,
  // that one alone while the caller meant them all.
  const lines = line.split(/\r?\n/).filter((l) => l.trim() !== "");
  if (lines.length > 1)
    throw bad(
      `expected one public key line, got ${lines.length} lines: give each key on its own`,
      "ssh-key-multiple",
    );
  const parts = (lines[0] ?? "").trim().split(/\s+/);
  const [typeName, b64, ...rest] = parts;
  if (!typeName || !b64)
    throw bad("expected an OpenSSH public key line: TYPE BASE64 [COMMENT]", "ssh-key-format");
  if (typeName.includes("-cert-"))
    throw bad("this is a certificate, not a public key", "ssh-key-is-cert");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64))
    throw bad("SSH public key is not base64", "ssh-key-format");
  const blob = Buffer.from(b64, "base64");
  const r = new SshReader(blob);
  const inner = r.string().toString("latin1");
  if (inner !== typeName)
    throw bad(
      `key type ${typeName} does not match its data (${inner.slice(0, 40)})`,
      "ssh-key-type-mismatch",
    );
  const fields = blob.subarray(4 + inner.length);
  let type: SshKeyType;
  if (inner === "ssh-ed25519") {
    const pk = r.string();
    if (pk.length !== 32) throw bad("Ed25519 public key must be 32 bytes", "ssh-key-malformed");
    loadKey(() =>
      createPublicKey({
        key: { kty: "OKP", crv: "Ed25519", x: pk.toString("base64url") },
        format: "jwk",
      }),
    );
    type = "ssh-ed25519";
  } else if (Object.hasOwn(CURVES, inner)) {
    const curve = CURVES[inner]!;
    const id = r.string().toString("latin1");
    const q = r.string();
    if (id !== curve.id)
      throw bad(`ECDSA curve ${id} does not match key type ${inner}`, "ssh-key-malformed");
    if (q.length !== 1 + 2 * curve.size || q[0] !== 4)
      throw bad("ECDSA point must be uncompressed", "ssh-key-malformed");
    const x = q.subarray(1, 1 + curve.size).toString("base64url");
    const y = q.subarray(1 + curve.size).toString("base64url");
    loadKey(() => createPublicKey({ key: { kty: "EC", crv: curve.crv, x, y }, format: "jwk" }));
    type = inner as SshKeyType;
  } else if (inner === "ssh-rsa") {
    const e = mpint(r.string(), "exponent");
    const n = mpint(r.string(), "modulus");
    const key = loadKey(() =>
      createPublicKey({
        key: {
          kty: "RSA",
          e: stripZeros(e).toString("base64url"),
          n: stripZeros(n).toString("base64url"),
        },
        format: "jwk",
      }),
    );
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw bad(`RSA keys must be at least 2048 bits, got ${bits}`, "ssh-key-size");
    const problem = rsaExponentProblem(key.asymmetricKeyDetails?.publicExponent);
    if (problem) throw bad(`RSA key: ${problem}`, "ssh-key-exponent");
    type = "ssh-rsa";
  } else {
    throw bad(`unsupported SSH key type ${inner.slice(0, 60)}`, "ssh-key-type");
  }
  if (!r.done) throw bad("SSH public key has trailing data", "ssh-key-malformed");
  return { type, blob, fields, comment: rest.join(" "), fingerprint: sshFingerprint(blob) };
}

/**
 * RFC 4251 §5: an mpint is minimal, with a leading zero byte only before a set high bit.
 * OpenSSH strips any other zeros, so a padded modulus is the same key under another blob
 * and fingerprint: it would slip past a revocation recorded by fingerprint.
 */
function mpint(b: Buffer, what: string): Buffer {
  const negative = b.length > 0 && (b[0]! & 0x80) !== 0;
  const padded = b.length > 0 && b[0] === 0 && (b.length === 1 || (b[1]! & 0x80) === 0);
  if (negative || padded)
    throw bad(
      `RSA ${what} is not a minimal positive mpint (RFC 4251 §5): re-export the key with ssh-keygen`,
      "ssh-key-malformed",
    );
  return b;
}

function stripZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

function loadKey(f: () => KeyObject): KeyObject {
  try {
    return f();
  } catch {
    throw bad("SSH public key material is not a valid key", "ssh-key-malformed");
  }
}

/** The public key blob of an Ed25519 KeyObject (our CA keys). */
export function ed25519PublicBlob(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  const pk = Buffer.from(String(jwk.x), "base64url");
  return new SshWriter().string("ssh-ed25519").string(pk).toBuffer();
}

/** An authorized_keys-style line for a blob. */
export function sshKeyLine(blob: Uint8Array, comment?: string): string {
  const r = new SshReader(Buffer.from(blob));
  const type = r.string().toString("latin1");
  return `${type} ${Buffer.from(blob).toString("base64")}${comment ? ` ${comment}` : ""}`;
}
