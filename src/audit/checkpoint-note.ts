import { createHash, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { ZtError } from "../core/errors.js";

/**
 * Signed checkpoints of the audit chain, as text notes in the spirit of C2SP
 * tlog-checkpoint / signed-note:
 *
 * ```
 * example.test/zt/audit
 * 1234
 * <base64 of the 32-byte hash of event 1234>
 *
 * — example.test/zt/audit <base64(key hash (4 bytes) || Ed25519 signature)>
 * ```
 *
 * The signature covers the text above the blank line (with its final newline). The
 * key hash is the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key), as in
 * signed-note. The "root hash" line is the head of zt's hash chain (not a Merkle root).
 */
export interface Checkpoint {
  origin: string;
  size: number;
  /** Hex hash of event `size`. */
  headHash: string;
}

export interface SignedCheckpoint extends Checkpoint {
  note: string;
  keyName: string;
  keyHash: Buffer;
  signature: Buffer;
}

const EM_DASH = "\u2014";

export function checkpointBody(cp: Checkpoint): string {
  return `${cp.origin}\n${cp.size}\n${Buffer.from(cp.headHash, "hex").toString("base64")}\n`;
}

/** Raw 32-byte Ed25519 public key of a KeyObject. */
export function rawEd25519(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new ZtError("ZT_AUDIT_CHECKPOINT_INVALID", "checkpoint key is not an Ed25519 key");
  }
  return Buffer.from(jwk.x, "base64url");
}

export function noteKeyHash(name: string, publicKey: KeyObject): Buffer {
  return createHash("sha256")
    .update(`${name}\n`)
    .update(Buffer.from([0x01]))
    .update(rawEd25519(publicKey))
    .digest()
    .subarray(0, 4);
}

/** Signs a checkpoint with an Ed25519 private key, returning the note text. */
export function signCheckpoint(
  cp: Checkpoint,
  privateKey: KeyObject,
  publicKey: KeyObject,
): string {
  const body = checkpointBody(cp);
  const sig = sign(null, Buffer.from(body), privateKey);
  const blob = Buffer.concat([noteKeyHash(cp.origin, publicKey), sig]).toString("base64");
  return `${body}\n${EM_DASH} ${cp.origin} ${blob}\n`;
}

function invalid(msg: string): ZtError {
  return new ZtError("ZT_AUDIT_CHECKPOINT_INVALID", `checkpoint: ${msg}`);
}

/** Parses a note (no signature check). Throws ZT_AUDIT_CHECKPOINT_INVALID naming what is wrong. */
export function parseCheckpoint(note: string): SignedCheckpoint {
  const sep = note.indexOf("\n\n");
  if (sep < 0) throw invalid("expected a blank line between the body and the signature");
  const body = note.slice(0, sep + 1);
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) throw invalid("expected origin, size and hash lines");
  const [origin, sizeText, hashText] = lines as [string, string, string];
  if (!/^\S+$/.test(origin)) throw invalid("origin line is empty or has spaces");
  if (!/^(0|[1-9]\d{0,15})$/.test(sizeText))
    throw invalid(`size line: expected a decimal integer, got ${JSON.stringify(sizeText)}`);
  const hash = Buffer.from(hashText, "base64");
  if (hash.length !== 32 || hash.toString("base64") !== hashText)
    throw invalid("hash line: expected base64 of 32 bytes");
  const sigLine = note.slice(sep + 2).split("\n")[0] ?? "";
  const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(sigLine);
  if (!m) throw invalid("signature line: expected '\u2014 <name> <base64>'");
  const blob = Buffer.from(m[2]!, "base64");
  if (blob.length !== 4 + 64)
    throw invalid("signature: expected a 4-byte key hash and a 64-byte Ed25519 signature");
  return {
    origin,
    size: Number(sizeText),
    headHash: hash.toString("hex"),
    note,
    keyName: m[1]!,
    keyHash: blob.subarray(0, 4),
    signature: blob.subarray(4),
  };
}

/**
 * Splits a text holding several notes one after another (a witness file appends each new
 * checkpoint) into single notes. Notes may be separated by blank lines or not at all: a
 * note ends with its last signature line, and no body line starts with "\u2014 " (an
 * origin has no spaces). Throws ZT_AUDIT_CHECKPOINT_INVALID naming the line of a note
 * that has no signature, so a damaged witness is never read as a shorter one.
 */
export function splitCheckpointNotes(text: string): string[] {
  const lines = text.split("\n");
  const notes: string[] = [];
  let i = 0;
  while (i < lines.length) {
    if (lines[i] === "") {
      i++;
      continue;
    }
    const start = i;
    while (i < lines.length && lines[i] !== "") i++;
    const body = lines.slice(start, i);
    i++;
    const sigs: string[] = [];
    while (i < lines.length && lines[i]!.startsWith("\u2014 ")) sigs.push(lines[i++]!);
    if (sigs.length === 0)
      throw invalid(`the note starting at line ${start + 1} has no signature line`);
    notes.push(`${body.join("\n")}\n\n${sigs.join("\n")}\n`);
  }
  return notes;
}

/** True when the note's signature verifies under `publicKey` (and its key hash matches). */
export function verifyCheckpointSignature(cp: SignedCheckpoint, publicKey: KeyObject): boolean {
  if (!noteKeyHash(cp.keyName, publicKey).equals(cp.keyHash)) return false;
  const body = checkpointBody(cp);
  if (cp.keyName !== cp.origin) return false;
  return verify(null, Buffer.from(body), publicKey, cp.signature);
}

/** Public key from a stored JWK (the keys table's `public_jwk`). */
export function publicKeyFromJwk(jwk: Record<string, unknown>): KeyObject {
  return createPublicKey({ key: jwk as never, format: "jwk" });
}
