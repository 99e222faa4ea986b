import type Database from "better-sqlite3";
import type { hash as Hash } from "node:crypto";

/**
 * A batch of records on its way to the chain, packed for a cheap hand-over to the writer
 * thread: strings holding, per record, a null mask and the 12 chained columns after
 * `seq` (id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies,
 * reason, data), fields separated by U+0000. A string crosses a thread boundary as one
 * copy; structured-cloning 12 small values per record costs about twice as much.
 * Values never hold U+0000 (the writer replaces it before hashing, as PostgreSQL refuses
 * it); a batch that did would travel as a flat array instead (`cols`).
 */
export interface PackedBatch {
  n: number;
  /**
   * Whole records, in order, split over several strings: one string above V8's regular
   * object size (~128 KiB) goes to large-object space, measured at ~1 ms to allocate
   * here (fresh pages each time) against ~10 µs below it.
   */
  text?: string[];
  cols?: (string | number | null)[];
  /**
   * The batch may already be committed (it was in flight when the writer thread died):
   * look for its first id before appending, and report the stored chain if found.
   */
  check: boolean;
}

/** Where a batch landed: `seq` of its first record, the hash before it, and every hash (hex, concatenated). */
export interface AppendResult {
  firstSeq: number;
  prevHash: string;
  hashes: string;
}

/**
 * Rows committed in one transaction at most when the writer thread merges queued batches.
 * Larger transactions write each dirtied index page once instead of once per batch
 * (measured: ~1.3–1.8× the rows/s of 5,000-row transactions); the cap bounds how long
 * the write lock is held (other writers wait on busy_timeout meanwhile).
 */
export const MAX_MERGED_ROWS = 20_000;

/**
 * Returns `append(batches)`: one `BEGIN IMMEDIATE` transaction that reads the chain head
 * under the write lock, chains the batches in order (seq, prev_hash, SHA-256 over the
 * canonical record, exactly as `canonicalRecord`/`chainDigest` in audit-chain.ts —
 * equivalence is tested), inserts them and commits (WAL + synchronous=FULL: fsynced).
 * Multi-row INSERTs were measured slower than a prepared single-row INSERT here, so
 * rows are inserted one statement each.
 *
 * This function has no free variables: the writer thread runs it from its source text
 * (see audit-writer-thread.ts), so it may only use its parameters and globals.
 */
export function createSqliteAppender(
  db: Database.Database,
  hash: typeof Hash,
): (batches: PackedBatch[]) => AppendResult[] {
  const insert = db.prepare(
    "INSERT INTO audit_events (seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash) " +
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const head = db.prepare("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1");
  const byId = db.prepare("SELECT seq FROM audit_events WHERE id = ?").pluck();
  const stored = db.prepare(
    "SELECT id, prev_hash, hash FROM audit_events WHERE seq >= ? ORDER BY seq LIMIT ?",
  );
  const GENESIS = "0".repeat(64);
  // Bit i of the mask: nullable column i (subject … reason) is NULL.
  const NULLABLE_FROM = 4;
  const NULLABLE_TO = 10;

  /** The 12 columns after seq, record by record, as one flat array. */
  function unpack(b: PackedBatch): (string | number | null)[] {
    if (b.cols) return b.cols;
    const texts = b.text ?? [];
    const parts: string[] = texts.length === 1 ? texts[0]!.split("\u0000") : [];
    if (texts.length > 1) for (const t of texts) for (const v of t.split("\u0000")) parts.push(v);
    const out: (string | number | null)[] = new Array(b.n * 12);
    let p = 0;
    for (let r = 0; r < b.n; r++) {
      const mask = Number(parts[p++]);
      const o = r * 12;
      for (let c = 0; c < 12; c++) {
        const v = parts[p++] ?? "";
        if (c === 1) out[o + c] = Number(v);
        else if (c >= NULLABLE_FROM && c <= NULLABLE_TO && mask & (1 << (c - NULLABLE_FROM)))
          out[o + c] = null;
        else out[o + c] = v;
      }
    }
    return out;
  }

  /** The batch's stored chain if its first record is already in the table (a retry after an unknown outcome). */
  function alreadyStored(b: PackedBatch, cols: (string | number | null)[]): AppendResult | null {
    const seq = byId.get(cols[0]) as number | bigint | undefined;
    if (seq === undefined) return null;
    const rows = stored.all(Number(seq), b.n) as { id: string; prev_hash: string; hash: string }[];
    // A batch is committed in one transaction: it is stored whole or not at all.
    if (rows.length !== b.n || rows.some((r, i) => r.id !== cols[i * 12]))
      throw new Error(`audit batch starting with ${String(cols[0])} is stored only in part`);
    return {
      firstSeq: Number(seq),
      prevHash: rows[0]!.prev_hash,
      hashes: rows.map((r) => r.hash).join(""),
    };
  }

  // prev_hash bytes || canonical text, hashed in one call (crypto.hash: no Hash object per
  // record). UTF-8 is written as createHash().update(string) writes it.
  let buf = Buffer.alloc(64 * 1024);

  const tx = db.transaction((batches: PackedBatch[]): AppendResult[] => {
    const h = head.get() as { seq: number | bigint; hash: string | null } | undefined;
    let seq = h ? Number(h.seq) : 0;
    let prevHex = h?.hash ?? GENESIS;
    buf.write(prevHex, 0, "hex");
    const rec: (string | number | null)[] = new Array(13);
    const params: (string | number | null)[] = new Array(15);
    const results: AppendResult[] = [];
    for (const b of batches) {
      const cols = unpack(b);
      const found = b.check ? alreadyStored(b, cols) : null;
      if (found) {
        results.push(found);
        continue;
      }
      const firstSeq = seq + 1;
      const prevHash = prevHex;
      const hashes: string[] = new Array(b.n);
      for (let r = 0; r < b.n; r++) {
        const o = r * 12;
        params[0] = rec[0] = ++seq;
        for (let c = 1; c < 13; c++) params[c] = rec[c] = cols[o + c - 1]!;
        // canonicalRecord: the JSON array of seq and the 12 columns, in this order.
        const text = JSON.stringify(rec);
        if (32 + text.length * 3 > buf.length) {
          const bigger = Buffer.alloc(32 + text.length * 3);
          buf.copy(bigger, 0, 0, 32);
          buf = bigger;
        }
        const len = buf.write(text, 32, "utf8");
        const hex = hash("sha256", buf.subarray(0, 32 + len), "hex");
        buf.write(hex, 0, "hex");
        params[13] = prevHex;
        params[14] = hex;
        insert.run(params);
        hashes[r] = hex;
        prevHex = hex;
      }
      results.push({ firstSeq, prevHash, hashes: hashes.join("") });
    }
    return results;
  });
  return (batches) => tx.immediate(batches);
}
