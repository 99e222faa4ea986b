import type { KeyObject } from "node:crypto";
import type { Store } from "../store/index.js";
import { ZtError } from "../core/errors.js";
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
  /**
   * Checkpoint notes from outside the database (a witness file, `--checkpoint`). They are
   * what anchors the check: a bare string is labelled "a given checkpoint".
   */
  checkpointNotes?: (string | ExternalNote)[];
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
  /**
   * True when at least one checkpoint from outside the database was checked: only then
   * can a rewrite or truncation by someone who can write the database fail the check.
   */
  anchored: boolean;
  /** Distinct checkpoint notes given from outside the database. */
  externalCheckpoints: number;
  /** Size of the newest outside checkpoint: events after it are checked only internally. */
  anchoredThrough: number;
  /** True when only given public keys were trusted, not the database's keys table. */
  keysPinned: boolean;
  /** What this check could not establish (e.g. that it is only internal). */
  warnings: string[];
  problem?: ChainProblem;
}

/** A checkpoint note and where it came from, to name it in a failure. */
export interface ExternalNote {
  note: string;
  source: string;
}

/** A head the chain must still pass through, and where it is known from. */
export interface TrustedHead {
  size: number;
  /** Hex hash of event `size`. */
  headHash: string;
  source: string;
}

interface KnownCheckpoint extends SignedCheckpoint {
  source: string;
  external: boolean;
}

/** Warning given when nothing outside the database anchors the check. */
export const INTERNAL_ONLY_WARNING =
  "verification is only internal: the events, the checkpoints and the keys that signed them " +
  "were all read from the database, so someone who can write the database could rewrite or " +
  "shorten the log (and delete or replace its checkpoints) without this check failing; " +
  "configure audit.witness.file and audit.checkpoint_public_key to anchor it (docs/audit.md)";

/** Warning given when the key is pinned but no checkpoint from outside was checked. */
export const NO_WITNESS_WARNING =
  "no checkpoint from outside the database was checked: with the key pinned, a rewrite " +
  "before the newest stored checkpoint fails, but a deleted tail whose checkpoints were " +
  "deleted too does not; configure audit.witness.file (docs/audit.md)";

const COLUMNS =
  "seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash";

/**
 * Re-walks the audit chain, recomputing every hash, and checks it against every
 * signed checkpoint (stored ones and those given). Reports the first bad seq and what
 * is wrong: altered, missing, reordered, truncated (past a checkpoint), or a checkpoint
 * that does not match or whose signature fails. The result says whether anything from
 * outside the database anchored the check (`anchored`, `warnings`).
 */
export async function verifyAuditLog(
  store: Store,
  options: VerifyAuditOptions = {},
): Promise<VerifyAuditResult> {
  const reader = rowReader(store);
  const fromSeq = Math.max(1, options.fromSeq ?? 1);
  const keysPinned = options.onlyGivenKeys === true;
  let externalCheckpoints = 0;
  let anchoredThrough = 0;
  let verifier = new ChainVerifier(fromSeq, GENESIS_HASH);
  let cpChecked = 0;
  const result = (problem?: ChainProblem): VerifyAuditResult => {
    const anchored = externalCheckpoints > 0;
    const warnings: string[] = [];
    if (!anchored) warnings.push(keysPinned ? NO_WITNESS_WARNING : INTERNAL_ONLY_WARNING);
    return {
      ok: problem === undefined,
      fromSeq,
      checked: verifier.checked,
      lastSeq: verifier.lastSeq,
      headHash: verifier.headHash,
      checkpointsChecked: cpChecked,
      anchored,
      externalCheckpoints,
      anchoredThrough,
      keysPinned,
      warnings,
      ...(problem ? { problem } : {}),
    };
  };

  if (fromSeq > 1) {
    const before = await reader.hashAt(fromSeq - 1);
    if (before === undefined) {
      return result({
        seq: fromSeq - 1,
        kind: "missing",
        detail: `event ${fromSeq - 1} (the start point's predecessor) is missing`,
      });
    }
    verifier = new ChainVerifier(fromSeq, before);
  }

  // Checkpoints: signature first, then matched during the walk. A note the database and
  // a witness both hold is checked once, and named by the witness if it fails.
  const keys = await trustedCheckpointKeys(store, options);
  const stored = await store.db
    .selectFrom("audit_checkpoints")
    .select(["note"])
    .orderBy("size")
    .execute();
  const byNote = new Map<string, KnownCheckpoint>();
  const given = (options.checkpointNotes ?? []).map((n) =>
    typeof n === "string" ? { note: n, source: "a given checkpoint" } : n,
  );
  for (const { note, source, external } of [
    ...stored.map((r) => ({ note: r.note, source: "audit_checkpoints", external: false })),
    ...given.map((g) => ({ ...g, external: true })),
  ]) {
    let cp: SignedCheckpoint;
    try {
      cp = parseCheckpoint(note);
    } catch (e) {
      throw new ZtError("ZT_AUDIT_CHECKPOINT_INVALID", `${source}: ${(e as Error).message}`);
    }
    const id = `${cp.size}:${cp.headHash}:${cp.signature.toString("base64")}`;
    const known = byNote.get(id);
    if (known) {
      if (external && !known.external) byNote.set(id, { ...known, source, external });
      continue;
    }
    byNote.set(id, { ...cp, source, external });
  }
  const checkpoints = [...byNote.values()].sort((a, b) => a.size - b.size);
  for (const cp of checkpoints) {
    if (cp.external) {
      externalCheckpoints++;
      anchoredThrough = Math.max(anchoredThrough, cp.size);
    }
  }
  for (const cp of checkpoints) {
    if (!keys.some((k) => verifyCheckpointSignature(cp, k))) {
      return result({
        seq: cp.size,
        kind: "checkpoint-signature",
        detail: `the checkpoint at size ${cp.size} (${cp.source}) is not signed by a trusted audit key`,
      });
    }
  }
  const pendingCps = checkpoints.filter((c) => c.size >= fromSeq - 1);
  let cpIndex = 0;
  let lastMatchedSize = fromSeq - 1;

  const total = await reader.headSeq();
  const pageSize = options.pageSize ?? 10_000;
  let after = fromSeq - 1;
  const checkCps = (): ChainProblem | undefined => {
    while (cpIndex < pendingCps.length && pendingCps[cpIndex]!.size <= verifier.lastSeq) {
      const cp = pendingCps[cpIndex]!;
      if (cp.size === verifier.lastSeq && cp.headHash !== verifier.headHash) {
        return {
          seq: lastMatchedSize + 1,
          kind: "checkpoint-mismatch",
          detail: `the chain at ${cp.size} does not match its signed checkpoint (${cp.source}): an event in ${lastMatchedSize + 1}..${cp.size} was rewritten and re-hashed`,
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
  if (earlyCp) return result(earlyCp);

  while (store.sqlite) {
    // SQLite fast path: rows as arrays in canonical order (see ChainVerifier.pushRaw).
    const rows = reader.rawPage!(after, pageSize);
    if (rows.length === 0) break;
    for (const row of rows) {
      const problem = verifier.pushRaw(row, reader.seqOfHashSync()) ?? checkCps();
      if (problem) return result(problem);
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
      if (problem?.kind === "altered") {
        // PostgreSQL has no synchronous lookup: classify the broken link now.
        return result((await refine(reader, row, verifier)) ?? problem);
      }
      const cpProblem = problem ?? checkCps();
      if (cpProblem) return result(cpProblem);
    }
    after = Number(rows[rows.length - 1]!.seq);
    options.onProgress?.(verifier.checked, total);
    if (rows.length < pageSize) break;
  }
  const beyond = pendingCps
    .slice(cpIndex)
    .filter((c) => c.size > verifier.lastSeq)
    .sort((a, b) => Number(b.external) - Number(a.external) || b.size - a.size)[0];
  if (beyond) {
    const last = verifier.lastSeq;
    return result({
      seq: last + 1,
      kind: "truncated",
      detail: `the log ends at ${last} but a signed checkpoint (${beyond.source}) covers ${beyond.size} events: events ${last + 1}..${beyond.size} are missing`,
    });
  }
  return result();
}

/**
 * Checks that the stored chain still passes through every head in `heads` and leads on
 * from the newest of them to `head` (the current newest event): re-hashes every event
 * from the oldest trusted head up to `head.seq`, starting with that head's own event.
 * Returns the first problem, or undefined when the chain leads on. The checkpointer
 * calls it before signing, so a head forged in the database is never signed.
 */
export async function checkChainLeadsOn(
  store: Store,
  heads: readonly TrustedHead[],
  head: { seq: number; hash: string },
  pageSize = 5_000,
): Promise<ChainProblem | undefined> {
  const sorted = heads.filter((h) => h.size > 0).sort((a, b) => a.size - b.size);
  const newest = sorted[sorted.length - 1];
  if (!newest) return undefined;
  if (head.seq < newest.size) {
    return {
      seq: head.seq + 1,
      kind: "truncated",
      detail: `the log ends at ${head.seq} but a checkpoint already signed (${newest.source}) covers ${newest.size} events: events ${head.seq + 1}..${newest.size} were deleted`,
    };
  }
  const reader = rowReader(store);
  const first = sorted[0]!.size;
  let verifier: ChainVerifier | undefined;
  let next = 0;
  let after = first - 1;
  while (after < head.seq) {
    const rows = await reader.page(after, Math.min(pageSize, head.seq - after));
    if (rows.length === 0) break;
    for (const row of rows) {
      if (!verifier) {
        if (Number(row.seq) !== first) break;
        // Start at the trusted head's own event, so its content is re-hashed too.
        verifier = new ChainVerifier(first, row.prev_hash ?? "");
      }
      const problem = verifier.push(row, () => undefined);
      if (problem) return problem;
      while (next < sorted.length && sorted[next]!.size === verifier.lastSeq) {
        const h = sorted[next++]!;
        if (h.headHash !== verifier.headHash) {
          return {
            seq: h.size,
            kind: "checkpoint-mismatch",
            detail: `event ${h.size} no longer has the hash signed in the checkpoint at ${h.size} (${h.source}): an event up to ${h.size} was rewritten and re-hashed`,
          };
        }
      }
    }
    if (!verifier) break;
    after = Number(rows[rows.length - 1]!.seq);
  }
  const last = verifier?.lastSeq ?? first - 1;
  if (!verifier || last !== head.seq) {
    return {
      seq: last + 1,
      kind: "missing",
      detail: `event ${last + 1} is missing (the log's head is ${head.seq})`,
    };
  }
  if (verifier.headHash !== head.hash) {
    return { seq: head.seq, kind: "altered", detail: `content does not match its hash` };
  }
  return undefined;
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

/**
 * Public keys trusted for checkpoints: the given ones, plus (unless `onlyGivenKeys`)
 * every `audit-checkpoint` key in the keys table, which the database's writer controls.
 */
export async function trustedCheckpointKeys(
  store: Store,
  options: Pick<VerifyAuditOptions, "publicKeys" | "onlyGivenKeys">,
): Promise<KeyObject[]> {
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
