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
