import type { KeyObject } from "node:crypto";
import type { Store } from "../store/index.js";
import { GENESIS_HASH } from "./audit-chain.js";
import { ChainVerifier, type ChainProblem, type RawRow, type StoredRow } from "./chain-verifier.js";
import {
  parseCheckpoint,
  publicKeyFromJwk,
  verifyCheckpointSignature,
  type SignedCheckpoint,
} from "./checkpoint-note.js";

export const CHECKPOINT_KEY_PURPOSE = "audit-checkpoint";

export interface VerifyAuditOptions {
  /** Start at this seq, trusting the stored hash of the event before it. */
  fromSeq?: number;
  /** Extra checkpoint notes to check against (e.g. from a witness file). */
  checkpointNotes?: string[];
  /** Public keys trusted for checkpoints besides those in the keys table. */
  publicKeys?: KeyObject[];
  /** Only trust `publicKeys`, not the keys stored in the database. */
  onlyGivenKeys?: boolean;
  /** Called every page with events checked so far and the head seq. */
  onProgress?: (checked: number, total: number) => void;
  pageSize?: number;
}

export interface VerifyAuditResult {
  ok: boolean;
  fromSeq: number;
  /** Events whose hash was recomputed and matched. */
  checked: number;
  /** Seq and hash of the last good event. */
  lastSeq: number;
  headHash: string;
  checkpointsChecked: number;
  problem?: ChainProblem;
}

const COLUMNS =
  "seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash";

/**
 * Re-walks the audit chain, recomputing every hash, and checks it against every
 * signed checkpoint (stored ones and those given). Reports the first bad seq and what
 * is wrong: altered, missing, reordered, truncated (past a checkpoint), or a checkpoint
 * that does not match or whose signature fails.
 */
export async function verifyAuditLog(
  store: Store,
  options: VerifyAuditOptions = {},
): Promise<VerifyAuditResult> {
  const reader = rowReader(store);
  const fromSeq = Math.max(1, options.fromSeq ?? 1);
  let prev = GENESIS_HASH;
  if (fromSeq > 1) {
    const before = await reader.hashAt(fromSeq - 1);
    if (before === undefined) {
      return fail(fromSeq, 0, fromSeq - 1, GENESIS_HASH, 0, {
        seq: fromSeq - 1,
        kind: "missing",
        detail: `event ${fromSeq - 1} (the start point's predecessor) is missing`,
      });
    }
    prev = before;
  }

  // Checkpoints: signature first, then matched during the walk.
  const keys = await trustedKeys(store, options);
  const stored = await store.db
    .selectFrom("audit_checkpoints")
    .select(["note"])
    .orderBy("size")
    .execute();
  const notes = [...stored.map((r) => r.note), ...(options.checkpointNotes ?? [])];
  const checkpoints: SignedCheckpoint[] = [];
  for (const note of notes) {
    const cp = parseCheckpoint(note);
    if (!keys.some((k) => verifyCheckpointSignature(cp, k))) {
      return fail(fromSeq, 0, fromSeq - 1, prev, 0, {
        seq: cp.size,
        kind: "checkpoint-signature",
        detail: `the checkpoint at size ${cp.size} is not signed by a trusted audit key`,
      });
    }
    checkpoints.push(cp);
  }
  checkpoints.sort((a, b) => a.size - b.size);
  const pendingCps = checkpoints.filter((c) => c.size >= fromSeq - 1);
  let cpIndex = 0;
  let lastMatchedSize = fromSeq - 1;
  let cpChecked = 0;

  const total = await reader.headSeq();
  const verifier = new ChainVerifier(fromSeq, prev);
  const pageSize = options.pageSize ?? 10_000;
  let after = fromSeq - 1;
  const checkCps = (): ChainProblem | undefined => {
    while (cpIndex < pendingCps.length && pendingCps[cpIndex]!.size <= verifier.lastSeq) {
      const cp = pendingCps[cpIndex]!;
      if (cp.size === verifier.lastSeq && cp.headHash !== verifier.headHash) {
        return {
          seq: lastMatchedSize + 1,
          kind: "checkpoint-mismatch",
          detail: `the chain at ${cp.size} does not match its signed checkpoint: an event in ${lastMatchedSize + 1}..${cp.size} was rewritten and re-hashed`,
        };
      }
      if (cp.size === verifier.lastSeq) {
        lastMatchedSize = cp.size;
        cpChecked++;
      }
      cpIndex++;
    }
    return undefined;
  };
  const earlyCp = checkCps();
  if (earlyCp) return fail(fromSeq, 0, verifier.lastSeq, verifier.headHash, cpChecked, earlyCp);

  while (store.sqlite) {
    // SQLite fast path: rows as arrays in canonical order (see ChainVerifier.pushRaw).
    const rows = reader.rawPage!(after, pageSize);
    if (rows.length === 0) break;
    for (const row of rows) {
      const problem = verifier.pushRaw(row, reader.seqOfHashSync());
      if (problem)
        return fail(
          fromSeq,
          verifier.checked,
          verifier.lastSeq,
          verifier.headHash,
          cpChecked,
          problem,
        );
      const cpProblem = checkCps();
      if (cpProblem)
        return fail(
          fromSeq,
          verifier.checked,
          verifier.lastSeq,
          verifier.headHash,
          cpChecked,
          cpProblem,
        );
    }
    after = rows[rows.length - 1]![0];
    options.onProgress?.(verifier.checked, total);
    if (rows.length < pageSize) break;
  }
  while (!store.sqlite) {
    const rows = await reader.page(after, pageSize);
    if (rows.length === 0) break;
    for (const row of rows) {
      const problem = verifier.push(row, reader.seqOfHashSync());
      if (problem) {
        if (problem.kind === "altered") {
          // PostgreSQL has no synchronous lookup: classify the broken link now.
          const refined = await refine(reader, row, verifier);
          return fail(
            fromSeq,
            verifier.checked,
            verifier.lastSeq,
            verifier.headHash,
            cpChecked,
            refined ?? problem,
          );
        }
        return fail(
          fromSeq,
          verifier.checked,
          verifier.lastSeq,
          verifier.headHash,
          cpChecked,
          problem,
        );
      }
      const cpProblem = checkCps();
      if (cpProblem)
        return fail(
          fromSeq,
          verifier.checked,
          verifier.lastSeq,
          verifier.headHash,
          cpChecked,
          cpProblem,
        );
    }
    after = Number(rows[rows.length - 1]!.seq);
    options.onProgress?.(verifier.checked, total);
    if (rows.length < pageSize) break;
  }
  const beyond = pendingCps.slice(cpIndex).find((c) => c.size > verifier.lastSeq);
  if (beyond) {
    return fail(fromSeq, verifier.checked, verifier.lastSeq, verifier.headHash, cpChecked, {
      seq: verifier.lastSeq + 1,
      kind: "truncated",
      detail: `the log ends at ${verifier.lastSeq} but a signed checkpoint covers ${beyond.size} events`,
    });
  }
  return {
    ok: true,
    fromSeq,
    checked: verifier.checked,
    lastSeq: verifier.lastSeq,
    headHash: verifier.headHash,
    checkpointsChecked: cpChecked,
  };
}

async function refine(
  reader: RowReader,
  row: StoredRow,
  verifier: ChainVerifier,
): Promise<ChainProblem | undefined> {
  const head = verifier.headHash;
  if (!row.prev_hash || row.prev_hash === head) return undefined;
  const owner = await reader.seqOfHash(row.prev_hash);
  const probe = new ChainVerifier(verifier.lastSeq + 1, head);
  return probe.push(row, () => owner);
}

function fail(
  fromSeq: number,
  checked: number,
  lastSeq: number,
  headHash: string,
  checkpointsChecked: number,
  problem: ChainProblem,
): VerifyAuditResult {
  return { ok: false, fromSeq, checked, lastSeq, headHash, checkpointsChecked, problem };
}

async function trustedKeys(store: Store, options: VerifyAuditOptions): Promise<KeyObject[]> {
  const keys = [...(options.publicKeys ?? [])];
  if (options.onlyGivenKeys) return keys;
  const rows = await store.db
    .selectFrom("keys")
    .select(["public_jwk"])
    .where("purpose", "=", CHECKPOINT_KEY_PURPOSE)
    .execute();
  for (const r of rows)
    keys.push(publicKeyFromJwk(JSON.parse(r.public_jwk) as Record<string, unknown>));
  return keys;
}

interface RowReader {
  page(afterSeq: number, limit: number): Promise<StoredRow[]>;
  /** SQLite only: rows as arrays (canonical order, then prev_hash, hash). */
  rawPage?: (afterSeq: number, limit: number) => RawRow[];
  hashAt(seq: number): Promise<string | undefined>;
  headSeq(): Promise<number>;
  seqOfHash(hash: string): Promise<number | undefined>;
  /** A synchronous lookup used inside the walk (PostgreSQL: always undefined, refined after). */
  seqOfHashSync(): (hash: string) => number | undefined;
}

function rowReader(store: Store): RowReader {
  const sqlite = store.sqlite;
  if (sqlite) {
    const page = sqlite.prepare(
      `SELECT ${COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?`,
    );
    const rawPage = sqlite
      .prepare(`SELECT ${COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?`)
      .raw(true);
    const hashAt = sqlite.prepare("SELECT hash FROM audit_events WHERE seq = ?");
    const head = sqlite.prepare("SELECT MAX(seq) AS m FROM audit_events");
    const byHash = sqlite.prepare("SELECT seq FROM audit_events WHERE hash = ? LIMIT 1");
    return {
      page: async (afterSeq, limit) => page.all(afterSeq, limit) as StoredRow[],
      rawPage: (afterSeq, limit) => rawPage.all(afterSeq, limit) as RawRow[],
      hashAt: async (seq) =>
        (hashAt.get(seq) as { hash: string | null } | undefined)?.hash ?? undefined,
      headSeq: async () => Number((head.get() as { m: number | null }).m ?? 0),
      seqOfHash: async (hash) => {
        const r = byHash.get(hash) as { seq: number } | undefined;
        return r ? Number(r.seq) : undefined;
      },
      seqOfHashSync: () => (hash) => {
        const r = byHash.get(hash) as { seq: number } | undefined;
        return r ? Number(r.seq) : undefined;
      },
    };
  }
  return {
    page: async (afterSeq, limit) => {
      const rows = await store.db
        .selectFrom("audit_events")
        .selectAll()
        .where("seq", ">", afterSeq)
        .orderBy("seq")
        .limit(limit)
        .execute();
      return rows.map((r) => ({ ...r, seq: Number(r.seq), ts: Number(r.ts) }));
    },
    hashAt: async (seq) =>
      (
        await store.db
          .selectFrom("audit_events")
          .select("hash")
          .where("seq", "=", seq)
          .executeTakeFirst()
      )?.hash ?? undefined,
    headSeq: async () =>
      Number(
        (
          await store.db
            .selectFrom("audit_events")
            .select((eb) => eb.fn.max("seq").as("m"))
            .executeTakeFirst()
        )?.m ?? 0,
      ),
    seqOfHash: async (hash) => {
      const r = await store.db
        .selectFrom("audit_events")
        .select("seq")
        .where("hash", "=", hash)
        .executeTakeFirst();
      return r ? Number(r.seq) : undefined;
    },
    seqOfHashSync: () => () => undefined,
  };
}
