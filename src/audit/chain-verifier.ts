import { hash } from "node:crypto";
import { chainDigest, chainHash, GENESIS_HASH, type ChainedFields } from "./audit-chain.js";

export type ChainProblemKind =
  | "altered"
  | "missing"
  | "reordered"
  | "truncated"
  | "checkpoint-mismatch"
  | "checkpoint-signature";

export interface ChainProblem {
  /** The first bad sequence number. */
  seq: number;
  kind: ChainProblemKind;
  detail: string;
}

export interface StoredRow extends ChainedFields {
  prev_hash: string | null;
  hash: string | null;
}

/**
 * Walks a chain one row at a time (rows in ascending seq order) and reports the first
 * problem. Pure: the caller supplies the rows and, for classifying a broken link,
 * a lookup of which seq (if any) holds a given hash.
 */
export class ChainVerifier {
  #expectedSeq: number;
  #prev: string;
  #prevBuf: Buffer;
  #buf = Buffer.alloc(64 * 1024);
  #checked = 0;

  /** Starts at `fromSeq` with the hash of event `fromSeq - 1` (genesis for 1). */
  constructor(fromSeq = 1, prevHash: string = GENESIS_HASH) {
    this.#expectedSeq = fromSeq;
    this.#prev = prevHash;
    this.#prevBuf = Buffer.from(prevHash, "hex");
  }

  get checked(): number {
    return this.#checked;
  }
  /** Seq of the last good row (fromSeq - 1 before any). */
  get lastSeq(): number {
    return this.#expectedSeq - 1;
  }
  get headHash(): string {
    return this.#prev;
  }

  /**
   * Checks the next row. `seqOfHash` answers "which seq stores this hash?" and is
   * called only when a link is broken, to tell a reordering from an alteration.
   */
  /**
   * Fast path for a row read as an array in canonical column order followed by
   * `prev_hash, hash` (SQLite raw mode): the canonical text is the JSON of the first 13
   * values, identical to {@link canonicalRecord}. Falls back to `push` on any mismatch.
   */
  pushRaw(row: RawRow, seqOfHash: (hash: string) => number | undefined): ChainProblem | undefined {
    if (row[0] === this.#expectedSeq && row[13] === this.#prev) {
      // prev bytes || canonical text, hashed in one call (no Hash object per row).
      const text = JSON.stringify(row.slice(0, 13));
      if (32 + text.length * 3 > this.#buf.length) this.#buf = Buffer.alloc(32 + text.length * 3);
      this.#prevBuf.copy(this.#buf, 0, 0, 32);
      const len = this.#buf.write(text, 32, "utf8");
      const computed = hash("sha256", this.#buf.subarray(0, 32 + len), "hex");
      if (computed === row[14]) {
        this.#prev = computed;
        this.#prevBuf = Buffer.from(computed, "hex");
        this.#expectedSeq++;
        this.#checked++;
        return undefined;
      }
    }
    return this.push(rawToRow(row), seqOfHash);
  }

  push(row: StoredRow, seqOfHash: (hash: string) => number | undefined): ChainProblem | undefined {
    const seq = Number(row.seq);
    if (seq !== this.#expectedSeq) {
      return seq > this.#expectedSeq
        ? {
            seq: this.#expectedSeq,
            kind: "missing",
            detail: `events ${this.#expectedSeq}..${seq - 1} are missing (next stored is ${seq})`,
          }
        : { seq, kind: "reordered", detail: `seq ${seq} appears after ${this.#expectedSeq - 1}` };
    }
    const digest = chainDigest(this.#prevBuf, row);
    const computed = digest.toString("hex");
    if (row.prev_hash === this.#prev && computed === row.hash) {
      this.#prev = computed;
      this.#prevBuf = digest;
      this.#expectedSeq++;
      this.#checked++;
      return undefined;
    }
    if (row.prev_hash !== this.#prev && row.prev_hash) {
      const owner = seqOfHash(row.prev_hash);
      if (owner !== undefined && owner !== seq - 1) {
        return {
          seq,
          kind: "reordered",
          detail: `event ${seq} follows event ${owner} in the chain, not ${seq - 1}`,
        };
      }
      if (computed === row.hash || chainHash(row.prev_hash, row) === row.hash) {
        return {
          seq,
          kind: "altered",
          detail: `prev_hash does not match the hash of event ${seq - 1} (an earlier event was rewritten)`,
        };
      }
    }
    return { seq, kind: "altered", detail: `content does not match its hash` };
  }
}

/** seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash */
export type RawRow = [
  number,
  string,
  number,
  string,
  string,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string | null,
  string,
  string | null,
  string | null,
];

export function rawToRow(r: RawRow): StoredRow {
  return {
    seq: r[0],
    id: r[1],
    ts: r[2],
    kind: r[3],
    outcome: r[4],
    subject: r[5],
    source_ip: r[6],
    route: r[7],
    action: r[8],
    decision_id: r[9],
    policies: r[10],
    reason: r[11],
    data: r[12],
    prev_hash: r[13],
    hash: r[14],
  };
}
