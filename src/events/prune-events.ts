import { sql } from "kysely";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";

/**
 * `meta` key holding the pruned horizon: every event with a seq up to this value may have
 * been deleted. A reader whose position is below it has lost events and must resync.
 */
export const EVENTS_PRUNED_THROUGH_KEY = "events.pruned_through";

/**
 * Advisory lock key taken (transaction-scoped, try-only) by a prune batch on PostgreSQL,
 * so that replicas pruning at the same moment take turns instead of deleting the same
 * rows. "zt-prune" as a 63-bit integer. Appends do not take it.
 */
export const EVENTS_PRUNE_LOCK_KEY = 0x7a742d7072756e65n;

export interface PruneEventsOptions {
  /** Now, by the injected clock (ms). */
  now: number;
  /** Events older than this are deleted (ms, `events.retention`). */
  retentionMs: number;
  /** Rows deleted per transaction (default 1000): no batch holds a lock for long. */
  batchSize?: number;
  /** Checked between batches: stop early (the process is shutting down). */
  shouldStop?: () => boolean;
}

export interface PruneEventsResult {
  /** Rows deleted by this call. */
  deleted: number;
  /** Batches (transactions) run. */
  batches: number;
  /** The pruned horizon after this call (0: nothing was ever pruned). */
  prunedThrough: number;
}

/** The pruned horizon: events up to this seq may be gone (0 when none ever were). */
export async function readPrunedThrough(store: Pick<Store, "db">): Promise<number> {
  const row = await store.db
    .selectFrom("meta")
    .select("value")
    .where("key", "=", EVENTS_PRUNED_THROUGH_KEY)
    .executeTakeFirst();
  const n = row ? Number(row.value) : 0;
  // A value that is not a seq is read as "everything may be gone": readers resync.
  return Number.isSafeInteger(n) && n >= 0 ? n : Number.MAX_SAFE_INTEGER;
}

/**
 * Deletes events older than the retention, oldest first, in short transactions of
 * `batchSize` rows, on SQLite and PostgreSQL. Each batch deletes a prefix of the log by
 * seq (up to its newest row older than the cutoff: seq order is commit order, so a row
 * before it committed earlier) and raises the pruned horizon in the same transaction,
 * so a reader that misses a deleted row always sees a horizon at or above it (readers
 * read the horizon after the rows). The horizon only ever grows.
 */
export async function pruneEvents(store: Store, o: PruneEventsOptions): Promise<PruneEventsResult> {
  const cutoff = o.now - o.retentionMs;
  const batchSize = Math.max(1, o.batchSize ?? 1000);
  let deleted = 0;
  let batches = 0;
  for (;;) {
    if (o.shouldStop?.()) break;
    const n = await store.db.transaction().execute(async (trx) => {
      if (store.dialect === "postgres") {
        const lock = await sql<{
          ok: boolean;
        }>`SELECT pg_try_advisory_xact_lock(${sql.lit(EVENTS_PRUNE_LOCK_KEY.toString())}::bigint) AS ok`.execute(
          trx,
        );
        // Another replica is pruning: it will do this work.
        if (!lock.rows[0]?.ok) return 0;
      }
      const rows = await trx
        .selectFrom("events")
        .select(["seq", "ts"])
        .orderBy("seq")
        .limit(batchSize)
        .execute();
      let upTo: number | undefined;
      let count = 0;
      rows.forEach((r, i) => {
        if (Number(r.ts) < cutoff) {
          upTo = Number(r.seq);
          count = i + 1;
        }
      });
      if (upTo === undefined) return 0;
      await trx
        .insertInto("meta")
        .values({ key: EVENTS_PRUNED_THROUGH_KEY, value: String(upTo) })
        .onConflict((oc) =>
          oc.column("key").doUpdateSet({
            value:
              store.dialect === "postgres"
                ? sql<string>`GREATEST(meta.value::bigint, excluded.value::bigint)::text`
                : sql<string>`CAST(max(CAST(meta.value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)`,
          }),
        )
        .execute();
      await trx.deleteFrom("events").where("seq", "<=", upTo).execute();
      return count;
    });
    if (n === 0) break;
    deleted += n;
    batches++;
    if (n < batchSize) break;
  }
  return { deleted, batches, prunedThrough: await readPrunedThrough(store) };
}

export interface EventPrunerOptions {
  clock: Clock;
  retentionMs: number;
  /** Time between passes (ms; default: a tenth of the retention, between 1 min and 1 h). */
  intervalMs?: number;
  batchSize?: number;
  /** Told about each pass that deleted rows, and each that failed (the next pass retries). */
  onPass?: (r: PruneEventsResult) => void;
  onError?: (e: unknown) => void;
}

/**
 * Prunes the `events` table periodically (`zt up` runs one; with several replicas each
 * does, and the batches take turns). `runOnce()` runs a pass now, in order with the
 * timer's (tests call it after moving an injected clock).
 */
export class EventPruner {
  readonly #store: Store;
  readonly #o: EventPrunerOptions;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<PruneEventsResult | undefined> = Promise.resolve(undefined);
  #stopped = false;

  constructor(store: Store, options: EventPrunerOptions) {
    this.#store = store;
    this.#o = options;
    this.#intervalMs =
      options.intervalMs ?? Math.min(3_600_000, Math.max(60_000, options.retentionMs / 10));
  }

  start(): void {
    this.#stopped = false;
    this.#schedule();
  }

  /** Runs one pass now; resolves with its result (undefined when it failed). */
  runOnce(): Promise<PruneEventsResult | undefined> {
    this.#running = this.#running.then(() => this.#pass());
    return this.#running;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  async #pass(): Promise<PruneEventsResult | undefined> {
    try {
      const r = await pruneEvents(this.#store, {
        now: this.#o.clock.now(),
        retentionMs: this.#o.retentionMs,
        ...(this.#o.batchSize !== undefined ? { batchSize: this.#o.batchSize } : {}),
        shouldStop: () => this.#stopped,
      });
      if (r.deleted > 0) this.#o.onPass?.(r);
      return r;
    } catch (e) {
      this.#o.onError?.(e);
      return undefined;
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      void this.runOnce().finally(() => this.#schedule());
    }, this.#intervalMs);
    this.#timer.unref();
  }
}
