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

/** A `whenDurable()` promise: settled once `row` (and so every record before it) commits. */
interface DurableWaiter {
  row: AuditRowChained;
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
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
  /** The newest record (records commit in the order they were recorded). */
  #last: AuditRowChained | undefined;
  /** `whenDurable()` promises not yet settled, oldest (and lowest record) first. */
  #durableWaiters: DurableWaiter[] = [];
  #durableKickQueued = false;
  #durableWriteQueued = false;

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
    const row: AuditRowChained = {
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
    };
    this.#buffer.push(row);
    this.#last = row;
    if (this.#buffer.length > this.#maxBuffered) {
      const over = this.#buffer.length - this.#maxBuffered;
      for (const r of this.#buffer.splice(0, over)) r.seq = -1; // whenDurable: dropped
      countDropped("writer", over);
      // A waiter's record may be among those dropped: it is not going to be durable.
      if (this.#durableWaiters.length > 0)
        this.#failDurableWaiters(
          new ZtError("ZT_STORE", "audit log backlog full: records were dropped", {}),
        );
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
   * Resolves once every record recorded before this call is committed (fsynced, as
   * for `flush()`). Group commit: the records of every caller in one turn of the event
   * loop go to the store together at the end of that turn (not on the 50 ms timer), and
   * those arriving while it commits go in the next transaction. Rejects with ZT_STORE if
   * the write fails (the records stay buffered for a retry, as with `flush()`) or records
   * are dropped from a full backlog. Records commit in the order they were recorded, so
   * call it right after `record()`, with no `await` in between.
   *
   * @example
   * // audit.durable_before_forward: the allow record is durable before the upstream acts.
   * const d = decisions.decide(facts); // records the decision
   * await audit.whenDurable(); // rejects → answer 503, do not forward
   * forwardHttp(req, res, agents, fo);
   */
  whenDurable(): Promise<void> {
    const row = this.#last;
    if (row === undefined || row.seq > 0) return Promise.resolve();
    if (row.seq < 0)
      return Promise.reject(
        new ZtError("ZT_STORE", "audit log backlog full: records were dropped", {}),
      );
    const tail = this.#durableWaiters[this.#durableWaiters.length - 1];
    if (tail?.row === row) return tail.promise;
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // rejected with nobody waiting any more: not unhandled
    this.#durableWaiters.push({ row, promise, resolve, reject });
    this.#scheduleDurableWrite();
    return promise;
  }

  /** Writes what durable waiters wait for at the end of this event-loop turn (once per turn). */
  #scheduleDurableWrite(): void {
    if (this.#durableKickQueued) return;
    this.#durableKickQueued = true;
    setImmediate(() => {
      this.#durableKickQueued = false;
      if (this.#durableWaiters.length > 0) this.#durableWrite();
    });
  }

  /**
   * Group commit: hands the buffer to the writer thread (batches queued while it commits
   * are merged into its next transaction), or, inline, queues at most one write behind
   * the one running, which then takes every record that arrived meanwhile.
   */
  #durableWrite(): void {
    if (this.#thread?.fatal) this.#thread = undefined;
    if (this.#thread) {
      this.#dispatch(false);
      return;
    }
    if (this.#durableWriteQueued) return;
    this.#durableWriteQueued = true;
    const next = this.#writing
      .catch(() => undefined)
      .then(() => {
        this.#durableWriteQueued = false;
        return this.#writeAll();
      });
    this.#writing = next;
    next.catch(() => undefined); // #writeAll rejects the waiters itself
  }

  /** Resolves the waiters whose record is committed (`#written` has set its seq). */
  #settleDurable(): void {
    const waiters = this.#durableWaiters;
    let n = 0;
    while (n < waiters.length && waiters[n]!.row.seq > 0) waiters[n++]!.resolve();
    if (n > 0) waiters.splice(0, n);
  }

  #failDurableWaiters(e: Error): void {
    const waiters = this.#durableWaiters;
    this.#durableWaiters = [];
    for (const w of waiters) w.reject(e);
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
    if (
      this.#thread &&
      (this.#buffer.length >= this.#maxBatch ||
        this.#retry.length > 0 ||
        (this.#durableWaiters.length > 0 && this.#buffer.length > 0))
    )
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
    // A thread that could not open the database is no failure of the store: its batches
    // are written inline next. Anything else: the waiters' records may not be durable.
    if (this.#thread || !this.#threadOpenError) this.#failDurableWaiters(err);
    else if (this.#durableWaiters.length > 0) this.#scheduleDurableWrite();
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
        const err = storeError(e);
        this.#failDurableWaiters(err);
        throw err;
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
    if (this.#durableWaiters.length > 0) this.#settleDurable();
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
      for (const r of batch) makeStorable(r);
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

/** ES2024 string methods (Node 20 has them; the project's `lib` is ES2023). */
interface WellFormedString {
  isWellFormed(): boolean;
  toWellFormed(): string;
}

function storableText(s: string): string {
  if ((s as unknown as WellFormedString).isWellFormed() && !s.includes("\u0000")) return s;
  return (s as unknown as WellFormedString).toWellFormed().replaceAll("\u0000", "\uFFFD");
}

/**
 * Makes a record's plain text columns what every store keeps, before it is hashed, so
 * the hash is the hash of what `zt audit verify` reads back: a lone UTF-16 surrogate
 * (stored as UTF-8, it comes back as U+FFFD) and U+0000 (PostgreSQL refuses it in text,
 * and a batch it refuses would be retried at the head of the log forever) become
 * U+FFFD. `policies` and `data` are JSON text, where JSON.stringify has escaped both.
 * In place (the written listeners see the stored values); idempotent.
 */
function makeStorable(r: AuditRowChained): void {
  r.kind = storableText(r.kind);
  r.outcome = storableText(r.outcome);
  if (r.subject !== null) r.subject = storableText(r.subject);
  if (r.source_ip !== null) r.source_ip = storableText(r.source_ip);
  if (r.route !== null) r.route = storableText(r.route);
  if (r.action !== null) r.action = storableText(r.action);
  if (r.decision_id !== null) r.decision_id = storableText(r.decision_id);
  if (r.reason !== null) r.reason = storableText(r.reason);
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

/**
 * A batch as the writer thread takes it (see PackedBatch), its text columns made
 * storable first (see makeStorable). Checked on the packed strings, not per value: one
 * native scan per chunk for the usual batch, which holds neither a lone surrogate nor
 * an unexpected U+0000.
 */
function packBatch(b: Batch): PackedBatch {
  const p = packText(b.rows);
  if (p.storable) return { n: b.rows.length, text: p.text, check: b.check };
  for (const r of b.rows) makeStorable(r);
  const again = packText(b.rows);
  if (again.storable) return { n: b.rows.length, text: again.text, check: b.check };
  // Not reached (only `id` is left unchecked, and zt makes it): send columns, not text.
  const cols: (string | number | null)[] = [];
  for (const r of b.rows) {
    cols.push(r.id, r.ts, r.kind, r.outcome, r.subject, r.source_ip, r.route, r.action);
    cols.push(r.decision_id, r.policies, r.reason, r.data);
  }
  return { n: b.rows.length, cols, check: b.check };
}

/** Rows packed into U+0000-separated strings; `storable`: well-formed, no U+0000 inside a value. */
function packText(rows: AuditRowChained[]): { text: string[]; storable: boolean } {
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
  // The separator must not occur inside a value (nor U+0000 reach a store), and no value
  // may hold a lone surrogate: joining with U+0000 never pairs two halves.
  let nul = 0;
  let wellFormed = true;
  for (const t of text) {
    nul += countNul(t);
    if (!(t as unknown as WellFormedString).isWellFormed()) wellFormed = false;
  }
  return { text, storable: wellFormed && nul === fields - text.length };
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
