import { createHash } from "node:crypto";

/** The `prev_hash` of the first record: 32 zero bytes, hex. */
export const GENESIS_HASH = "0".repeat(64);

/** The columns a record's hash covers, in this order. */
export interface ChainedFields {
  seq: number;
  id: string;
  ts: number;
  kind: string;
  outcome: string;
  subject: string | null;
  source_ip: string | null;
  route: string | null;
  action: string | null;
  decision_id: string | null;
  policies: string | null;
  reason: string | null;
  /** JSON text exactly as stored. */
  data: string;
}

/**
 * The canonical serialisation of a record: a JSON array of the chained columns in a
 * fixed order. Every value is a string, an integer or null, so JSON.stringify is
 * deterministic; `data` is hashed as its stored text, not re-encoded.
 */
export function canonicalRecord(r: ChainedFields): string {
  return JSON.stringify([
    r.seq,
    r.id,
    r.ts,
    r.kind,
    r.outcome,
    r.subject,
    r.source_ip,
    r.route,
    r.action,
    r.decision_id,
    r.policies,
    r.reason,
    r.data,
  ]);
}

/** `hash = SHA-256(prev_hash bytes || canonical record)`, hex. */
export function chainHash(prevHashHex: string, r: ChainedFields): string {
  return createHash("sha256")
    .update(Buffer.from(prevHashHex, "hex"))
    .update(canonicalRecord(r))
    .digest("hex");
}

/** {@link chainHash} on raw bytes (hot loops keep the previous digest as a Buffer). */
export function chainDigest(prev: Buffer, r: ChainedFields): Buffer {
  return createHash("sha256").update(prev).update(canonicalRecord(r)).digest();
}
