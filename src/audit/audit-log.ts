import { sql } from "kysely";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import { hash } from "node:crypto";
import { timeOrderedId } from "../core/ids.js";
import { ZtError } from "../core/errors.js";
import type { AuditInput, AuditSink } from "./audit-types.js";
import { chainDigest, GENESIS_HASH, type ChainedFields } from "./audit-chain.js";
import { redactedJson } from "./redact.js";
import { countAuditWritten, countDropped } from "./metrics.js";
import { createSqliteAppender, type AppendResult, type PackedBatch } from "./sqlite-appender.js";
import { WriterThread } from "./audit-writer-thread.js";

export interface AuditLogOptions {
  clock: Clock;
  /** Flush at least this often (ms). */
  flushIntervalMs?: number;
  /** Flush as soon as this many records are buffered. */
  maxBatch?: number;
  /**
   * Records held in memory while the store cannot be written (then the oldest are
   * dropped and counted in `zt_audit_dropped_events_total{sink="writer"}`).
   */
  maxBuffered?: number;
  /** Called after records are durably written (e.g. for exporters, alerts). */
  onWritten?: (records: AuditRowOut[]) => void;
  /**
   * SQLite: append on a writer thread with its own connection (default `true`), so the
   * caller's event loop never waits for hashing, inserts or fsync. `false` writes on the
   * caller's thread (as PostgreSQL, which does not block, always does).
   */
  writerThread?: boolean;
  /** @internal Enables the writer thread's fault injection (tests only). */
  writerThreadTestHooks?: boolean;
}

/** A record as written: exactly the columns the hash chain covers (one definition, in audit-chain.ts). */
export type AuditRowOut = ChainedFields;

/** A record as stored, with its place in the hash chain. */
export interface AuditRowChained extends AuditRowOut {
  prev_hash: string;
  hash: string;
}

/** How an AuditLog writes: see {@link AuditLog.writerMode}. */
export type AuditWriterMode = "thread" | "inline" | "postgres";

/** PostgreSQL advisory lock key serialising appends to the chain ("ztaudit" as an int). */
export const AUDIT_PG_LOCK_KEY = 0x7a7461756469;

/** Largest batch committed in one transaction. */
const MAX_TX_ROWS = 5_000;
/**
 * Batches handed to the writer thread ahead of its acknowledgements; more wait (and grow)
 * in the buffer. The thread merges queued batches into one transaction.
 */
const MAX_THREAD_INFLIGHT = 8;
/** Writer thread deaths in a row (no commit in between) before writing inline instead. */
const MAX_THREAD_CRASHES = 3;

/** Records whose transaction has not committed; kept whole so a retry can recognise them. */
interface Batch {
  rows: AuditRowChained[];
  /** The batch may already be stored (its writer died before acknowledging it). */
  check: boolean;
}

interface Inflight {
  id: number;
  batch: Batch;
  settled: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * The audit log writer. `record` only buffers (never blocks, never throws); batches
 * are appended to the hash chain in one transaction each: the transaction reads the
 * current head under the writers' lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL
 * `pg_advisory_xact_lock`), so the chain stays a single gap-free chain even with
 * several processes or replicas writing to one database. `flush()` resolves only
 * after the commit (SQLite WAL with synchronous=FULL: fsynced).
 *
 * With SQLite the appends run on a writer thread (`node:worker_threads`) that owns a
 * second connection to the same file: the caller's event loop only redacts, packs and
 * posts. If that thread dies, the batches it had not acknowledged are kept and retried
 * (recognised by their first id if they had committed after all), waiting `flush()`
 * calls reject with ZT_STORE, and the thread is restarted; after repeated deaths, or
 * if it cannot open the database, appends run inline on the caller's connection.
 */
export class AuditLog implements AuditSink {
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #maxBatch: number;
  readonly #maxBuffered: number;
  readonly #listeners = new Set<(records: AuditRowChained[]) => void>();
  #buffer: AuditRowChained[] = [];
  /** Batches to write before the buffer, oldest first (a failed attempt's batches). */
  #retry: Batch[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  #flushQueued = false;
  #sqliteAppend: ((batches: PackedBatch[]) => AppendResult[]) | undefined;
  #thread: WriterThread | undefined;
  #threadCrashes = 0;
  /** Why the writer thread could not open the database (then appends run inline). */
  #threadOpenError: string | undefined;
  #inflight: Inflight[] = [];

  constructor(store: Store, options: AuditLogOptions) {
    this.#store = store;
    this.#clock = options.clock;
    this.#maxBatch = options.maxBatch ?? 500;
    this.#maxBuffered = options.maxBuffered ?? 200_000;
    if (options.onWritten) this.#listeners.add(options.onWritten);
    if (store.sqlite && store.file && store.file !== ":memory:" && options.writerThread !== false) {
      this.#thread = new WriterThread(
        {
          file: store.file,
          busyTimeoutMs: Number(store.sqlite.pragma("busy_timeout", { simple: true })) || 5_000,
          ...(options.writerThreadTestHooks ? { testHooks: true } : {}),
        },
        {
          done: (id, r) => this.#threadDone(id, r),
          failed: (id, e, uncertain) => this.#threadFailed(id, e, uncertain),
        },
      );
    }
    this.#timer = setInterval(() => {
      if (this.#buffer.length > 0 || this.#retry.length > 0) this.#kick();
    }, options.flushIntervalMs ?? 50);
    this.#timer.unref();
  }

  /** Where appends run now: a writer thread, inline on the caller's SQLite connection, or PostgreSQL. */
  get writerMode(): AuditWriterMode {
    if (!this.#store.sqlite) return "postgres";
    return this.#thread ? "thread" : "inline";
  }

  /** Buffers a record; returns its id. Never throws on the hot path. */
  record(input: AuditInput): string {
    const ts = this.#clock.now();
    const id = timeOrderedId("evt", ts);
    let data: string;
    try {
      data = redactedJson(input.data);
    } catch {
      data = JSON.stringify({ error: "data-not-serialisable" });
    }
    this.#buffer.push({
      seq: 0,
      id,
      ts,
      kind: input.kind,
      outcome: input.outcome,
      subject: input.subject ?? null,
      source_ip: input.sourceIp ?? null,
      route: input.route ?? null,
      action: input.action ?? null,
      decision_id: input.decisionId ?? null,
      policies: input.policies ? JSON.stringify(input.policies) : null,
      reason: input.reason ?? null,
      data,
      prev_hash: "",
      hash: "",
    });
    if (this.#buffer.length > this.#maxBuffered) {
      const over = this.#buffer.length - this.#maxBuffered;
      this.#buffer.splice(0, over);
      countDropped("writer", over);
    }
    if (this.#buffer.length >= this.#maxBatch && !this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => {
        this.#flushQueued = false;
        this.#kick();
      });
    }
    return id;
  }

  /**
   * The buffer is half full (the store or the writer thread cannot keep up): the PEP
   * refuses new requests with 503 until it drains, rather than allow what it may have
   * to drop from the log later (records are dropped, and counted, only when full).
   */
  get backlogged(): boolean {
    return this.pending >= this.#maxBuffered / 2;
  }

  /** Records not yet committed (buffered, in flight or waiting for a retry). */
  get pending(): number {
    let n = this.#buffer.length;
    for (const b of this.#retry) n += b.rows.length;
    for (const f of this.#inflight) n += f.batch.rows.length;
    return n;
  }

  /**
   * Listens for records after they are committed, in sequence order per writer.
   * Returns an unsubscribe function. Listener errors are ignored.
   */
  addWrittenListener(listener: (records: AuditRowChained[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Writes every buffered record. Resolves after the commit; rejects with ZT_STORE if
   * the store could not be written (the records stay buffered for the next attempt).
   */
  async flush(): Promise<void> {
    while (this.#thread) {
      if (this.#thread.fatal) {
        this.#thread = undefined;
        break;
      }
      this.#dispatch(true);
      try {
        await Promise.all(this.#inflight.map((f) => f.settled));
      } catch (e) {
        // A thread that could not even open the database is no failure of the store:
        // the batches are kept, and written inline below.
        if (this.#thread || !this.#threadOpenError) throw e;
        break;
      }
      // Left over: a batch the thread could not be handed (try again, or inline).
      if (this.#retry.length === 0) return;
    }
    // No writer thread (or no longer): write inline.
    const next = this.#writing.catch(() => undefined).then(() => this.#writeAll());
    this.#writing = next;
    return next;
  }

  /** Background write (batch full, timer): never rejects. */
  #kick(): void {
    if (this.#thread?.fatal) this.#thread = undefined;
    if (this.#thread) this.#dispatch(false);
    else this.flush().catch(() => undefined);
  }

  /** Hands batches to the writer thread; `all` ignores the in-flight limit (flush). */
  #dispatch(all: boolean): void {
    const thread = this.#thread!;
    while (this.#retry.length > 0 || this.#buffer.length > 0) {
      if (!all && thread.inflight >= MAX_THREAD_INFLIGHT) return;
      const batch = this.#retry.shift() ?? {
        rows: this.#buffer.splice(0, MAX_TX_ROWS),
        check: false,
      };
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const settled = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      settled.catch(() => undefined); // a background batch may fail with nobody waiting
      let id: number;
      try {
        id = thread.send(packBatch(batch));
      } catch {
        // No thread can be started here (resource limits, a locked-down runtime): keep
        // the batch, and write inline once nothing is in flight on the thread.
        this.#retry.unshift(batch);
        if (thread.inflight === 0) this.#thread = undefined;
        return;
      }
      this.#inflight.push({ id, batch, settled, resolve, reject });
    }
  }

  // WriterThread acknowledges in send order, so #inflight's head is always the batch named.
  #threadDone(_id: number, r: AppendResult): void {
    const f = this.#inflight.shift()!;
    this.#threadCrashes = 0;
    this.#written(f.batch.rows, r);
    f.resolve();
    if (this.#thread && (this.#buffer.length >= this.#maxBatch || this.#retry.length > 0))
      this.#dispatch(false);
  }

  #threadFailed(_id: number, e: Error, uncertain: boolean): void {
    // The head batch and every later one in flight were not written (or, if the thread
    // died, maybe were): keep them, in order, ahead of anything else.
    const lost = this.#inflight;
    this.#inflight = [];
    this.#retry = lost
      .map((f) => ({ rows: f.batch.rows, check: f.batch.check || uncertain }))
      .concat(this.#retry);
    if (this.#thread?.fatal) {
      this.#threadOpenError = this.#thread.fatal;
      this.#thread = undefined;
    }
    if (uncertain && ++this.#threadCrashes >= MAX_THREAD_CRASHES) this.#thread = undefined;
    const err = storeError(e);
    for (const f of lost) f.reject(err);
  }

  async #writeAll(): Promise<void> {
    while (this.#retry.length > 0 || this.#buffer.length > 0) {
      const batch = this.#retry.shift() ?? {
        rows: this.#buffer.splice(0, MAX_TX_ROWS),
        check: false,
      };
      let r: AppendResult;
      try {
        if (this.#store.sqlite) {
          // Never join (as a savepoint) a Kysely transaction open on the same connection:
          // our rows would commit or roll back with it. Wait for it to end.
          for (let i = 0; this.#store.sqlite.inTransaction; i++) {
            if (i > 5_000) throw new Error("the database connection stayed inside a transaction");
            await new Promise((r) => setImmediate(r));
          }
          r = this.#appendSqlite(batch);
        } else r = await this.#appendPostgres(batch.rows);
      } catch (e) {
        // Keep the records for the next attempt rather than lose them.
        this.#retry.unshift(batch);
        throw storeError(e);
      }
      this.#written(batch.rows, r);
    }
  }

  /** Fills in the chain fields the writer assigned and tells the listeners. */
  #written(rows: AuditRowChained[], r: AppendResult): void {
    let prev = r.prevHash;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      row.seq = r.firstSeq + i;
      row.prev_hash = prev;
      row.hash = prev = r.hashes.slice(i * 64, i * 64 + 64);
    }
    countAuditWritten(rows.length, r.firstSeq + rows.length - 1);
    for (const l of this.#listeners) {
      try {
        l(rows);
      } catch {
        /* a listener never breaks the writer */
      }
    }
  }

  #appendSqlite(batch: Batch): AppendResult {
    this.#sqliteAppend ??= createSqliteAppender(this.#store.sqlite!, hash);
    return this.#sqliteAppend([packBatch(batch)])[0]!;
  }

  async #appendPostgres(batch: AuditRowChained[]): Promise<AppendResult> {
    let result: AppendResult | undefined;
    await this.#store.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${AUDIT_PG_LOCK_KEY})`.execute(trx);
      const h = await trx
        .selectFrom("audit_events")
        .select(["seq", "hash"])
        .orderBy("seq", "desc")
        .limit(1)
        .executeTakeFirst();
      const rows = batch.map((r) => ({ ...r }));
      chainBatch(rows, h ? Number(h.seq) : 0, h?.hash ?? GENESIS_HASH);
      for (let i = 0; i < rows.length; i += 500) {
        await trx
          .insertInto("audit_events")
          .values(rows.slice(i, i + 500))
          .execute();
      }
      result = {
        firstSeq: rows[0]!.seq,
        prevHash: rows[0]!.prev_hash,
        hashes: rows.map((r) => r.hash).join(""),
      };
    });
    return result!;
  }

  /** Flushes, then ends the writer thread. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    // Never started (a short-lived CLI command): starting a thread now only to write a few
    // records costs more than writing them here.
    if (this.#thread && !this.#thread.started) this.#thread = undefined;
    try {
      await this.flush();
    } finally {
      await this.#thread?.close();
    }
  }

  /** @internal Fault injection for the tests: the writer thread dies after its next commit, unacknowledged. */
  crashWriterThreadAfterNextCommit(): void {
    this.#thread?.exitAfterNextCommit();
  }
}

function storeError(e: unknown): ZtError {
  if (e instanceof ZtError) return e;
  return new ZtError(
    "ZT_STORE",
    `audit log write failed: ${(e as Error).message}`,
    {},
    { cause: e },
  );
}

/**
 * Characters per packed string at most (unless one record is longer): below V8's
 * regular heap object limit (128 KiB), above which every string is a fresh
 * large-object allocation (~1 ms each, measured, against ~10 µs for 120 KB).
 */
const PACK_CHUNK_CHARS = 96 * 1024;

/** A batch as the writer thread takes it (see PackedBatch). */
function packBatch(b: Batch): PackedBatch {
  const rows = b.rows;
  const text: string[] = [];
  let parts: string[] = [];
  let size = 0;
  let fields = 0;
  for (const r of rows) {
    const mask =
      (r.subject === null ? 1 : 0) |
      (r.source_ip === null ? 2 : 0) |
      (r.route === null ? 4 : 0) |
      (r.action === null ? 8 : 0) |
      (r.decision_id === null ? 16 : 0) |
      (r.policies === null ? 32 : 0) |
      (r.reason === null ? 64 : 0);
    const subject = r.subject ?? "";
    const sourceIp = r.source_ip ?? "";
    const route = r.route ?? "";
    const action = r.action ?? "";
    const decisionId = r.decision_id ?? "";
    const policies = r.policies ?? "";
    const reason = r.reason ?? "";
    const ts = String(r.ts);
    const len =
      r.id.length +
      ts.length +
      r.kind.length +
      r.outcome.length +
      subject.length +
      sourceIp.length +
      route.length +
      action.length +
      decisionId.length +
      policies.length +
      reason.length +
      r.data.length +
      16;
    if (size > 0 && size + len > PACK_CHUNK_CHARS) {
      text.push(parts.join("\u0000"));
      fields += parts.length;
      parts = [];
      size = 0;
    }
    size += len;
    parts.push(
      String(mask),
      r.id,
      ts,
      r.kind,
      r.outcome,
      subject,
      sourceIp,
      route,
      action,
      decisionId,
      policies,
      reason,
      r.data,
    );
  }
  if (parts.length > 0 || text.length === 0) {
    text.push(parts.join("\u0000"));
    fields += parts.length;
  }
  // The separator must not occur inside a value: a record holding U+0000 sends columns.
  let nul = 0;
  for (const t of text) nul += countNul(t);
  if (nul === fields - text.length) return { n: rows.length, text, check: b.check };
  const cols: (string | number | null)[] = [];
  for (const r of rows) {
    cols.push(r.id, r.ts, r.kind, r.outcome, r.subject, r.source_ip, r.route, r.action);
    cols.push(r.decision_id, r.policies, r.reason, r.data);
  }
  return { n: rows.length, cols, check: b.check };
}

function countNul(s: string): number {
  let n = 0;
  for (let i = s.indexOf("\u0000"); i !== -1; i = s.indexOf("\u0000", i + 1)) n++;
  return n;
}

/** Assigns seq, prev_hash and hash to a batch following the head (seq, hash). */
function chainBatch(rows: AuditRowChained[], headSeq: number, headHash: string): void {
  let seq = headSeq;
  let prevHex = headHash;
  let prev: Buffer = Buffer.from(headHash, "hex");
  for (const r of rows) {
    r.seq = ++seq;
    r.prev_hash = prevHex;
    prev = chainDigest(prev, r);
    r.hash = prevHex = prev.toString("hex");
  }
}
