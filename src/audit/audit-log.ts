import { sql } from "kysely";
import type { Statement } from "better-sqlite3";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import { randomBytes } from "node:crypto";
import { ZtError } from "../core/errors.js";
import type { AuditInput, AuditSink } from "./audit-types.js";
import { chainDigest, GENESIS_HASH, type ChainedFields } from "./audit-chain.js";
import { redactedJson } from "./redact.js";
import { countAuditWritten, countDropped } from "./metrics.js";

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
}

/** A record as written: exactly the columns the hash chain covers (one definition, in audit-chain.ts). */
export type AuditRowOut = ChainedFields;

/** A record as stored, with its place in the hash chain. */
export interface AuditRowChained extends AuditRowOut {
  prev_hash: string;
  hash: string;
}

/** PostgreSQL advisory lock key serialising appends to the chain ("ztaudit" as an int). */
export const AUDIT_PG_LOCK_KEY = 0x7a7461756469;

/** Largest batch committed in one transaction. */
const MAX_TX_ROWS = 5_000;

/**
 * The audit log writer. `record` only buffers (never blocks, never throws); batches
 * are appended to the hash chain in one transaction each: the transaction reads the
 * current head under the writers' lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL
 * `pg_advisory_xact_lock`), so the chain stays a single gap-free chain even with
 * several processes or replicas writing to one database. `flush()` resolves only
 * after the commit (SQLite WAL with synchronous=FULL: fsynced).
 */
export class AuditLog implements AuditSink {
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #maxBatch: number;
  readonly #maxBuffered: number;
  readonly #listeners = new Set<(records: AuditRowChained[]) => void>();
  #buffer: AuditRowChained[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  #flushQueued = false;
  #sqliteAppend: ((batch: AuditRowChained[]) => void) | undefined;

  constructor(store: Store, options: AuditLogOptions) {
    this.#store = store;
    this.#clock = options.clock;
    this.#maxBatch = options.maxBatch ?? 500;
    this.#maxBuffered = options.maxBuffered ?? 200_000;
    if (options.onWritten) this.#listeners.add(options.onWritten);
    this.#timer = setInterval(() => {
      if (this.#buffer.length > 0) this.flush().catch(() => undefined);
    }, options.flushIntervalMs ?? 50);
    this.#timer.unref();
  }

  /** Buffers a record; returns its id. Never throws on the hot path. */
  record(input: AuditInput): string {
    const id = nextEventId();
    let data: string;
    try {
      data = redactedJson(input.data);
    } catch {
      data = JSON.stringify({ error: "data-not-serialisable" });
    }
    this.#buffer.push({
      seq: 0,
      id,
      ts: this.#clock.now(),
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
        this.flush().catch(() => undefined);
      });
    }
    return id;
  }

  /** Records buffered and not yet committed. */
  get pending(): number {
    return this.#buffer.length;
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
    const next = this.#writing.catch(() => undefined).then(() => this.#writeAll());
    this.#writing = next;
    return next;
  }

  async #writeAll(): Promise<void> {
    while (this.#buffer.length > 0) {
      const batch = this.#buffer.splice(0, MAX_TX_ROWS);
      try {
        if (this.#store.sqlite) {
          // Never join (as a savepoint) a Kysely transaction open on the same connection:
          // our rows would commit or roll back with it. Wait for it to end.
          for (let i = 0; this.#store.sqlite.inTransaction; i++) {
            if (i > 5_000) throw new Error("the database connection stayed inside a transaction");
            await new Promise((r) => setImmediate(r));
          }
          this.#appendSqlite(batch);
        } else await this.#appendPostgres(batch);
      } catch (e) {
        // Keep the records for the next attempt rather than lose them.
        this.#buffer = batch.concat(this.#buffer);
        throw new ZtError(
          "ZT_STORE",
          `audit log write failed: ${(e as Error).message}`,
          {},
          { cause: e },
        );
      }
      const last = batch[batch.length - 1]!;
      countAuditWritten(batch.length, last.seq);
      for (const l of this.#listeners) {
        try {
          l(batch);
        } catch {
          /* a listener never breaks the writer */
        }
      }
    }
  }

  #appendSqlite(batch: AuditRowChained[]): void {
    if (!this.#sqliteAppend) {
      const db = this.#store.sqlite!;
      const head: Statement<[], { seq: number; hash: string | null }> = db.prepare(
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
      );
      const insert = db.prepare(
        "INSERT INTO audit_events (seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash) " +
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      );
      const tx = db.transaction((rows: AuditRowChained[]) => {
        const h = head.get();
        chainBatch(rows, h ? Number(h.seq) : 0, h?.hash ?? GENESIS_HASH);
        for (const r of rows) {
          insert.run(
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
            r.prev_hash,
            r.hash,
          );
        }
      });
      this.#sqliteAppend = (rows) => tx.immediate(rows);
    }
    this.#sqliteAppend(batch);
  }

  async #appendPostgres(batch: AuditRowChained[]): Promise<void> {
    await this.#store.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${AUDIT_PG_LOCK_KEY})`.execute(trx);
      const h = await trx
        .selectFrom("audit_events")
        .select(["seq", "hash"])
        .orderBy("seq", "desc")
        .limit(1)
        .executeTakeFirst();
      chainBatch(batch, h ? Number(h.seq) : 0, h?.hash ?? GENESIS_HASH);
      for (let i = 0; i < batch.length; i += 500) {
        await trx
          .insertInto("audit_events")
          .values(batch.slice(i, i + 500))
          .execute();
      }
    });
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }
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

/** Event ids as `newId("evt")` makes them (128 random bits, base64url), from a pooled buffer. */
let idPool = Buffer.alloc(0);
let idOffset = 0;
function nextEventId(): string {
  if (idOffset + 16 > idPool.length) {
    idPool = randomBytes(16 * 1024);
    idOffset = 0;
  }
  const id = `evt_${idPool.toString("base64url", idOffset, idOffset + 16)}`;
  idOffset += 16;
  return id;
}
