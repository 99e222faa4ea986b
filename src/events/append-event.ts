import { sql } from "kysely";
import type { Store } from "../store/index.js";

/** PostgreSQL NOTIFY channel; the payload is the event's sequence number. */
export const EVENTS_CHANNEL = "zt_events";

/**
 * Advisory lock key taken (transaction-scoped) by every event append on PostgreSQL.
 * Arbitrary but fixed: "zt-events" as a 63-bit integer.
 */
export const EVENTS_LOCK_KEY = 0x7a742d6576656e74n;

export interface AppendedEvent {
  seq: number;
  ts: number;
}

export interface AppendEventHooks {
  /** Test hook: runs inside the transaction after the insert, before the commit. */
  beforeCommit?: (seq: number) => Promise<void>;
}

/**
 * Appends one row to `events` so that **sequence order equals commit order**, which
 * is what lets a reader deliver "everything after seq N" without ever skipping a row.
 *
 * - SQLite has a single writer: the rowid is assigned inside the write lock.
 * - PostgreSQL: a `bigserial` value is taken at INSERT time but becomes visible at
 *   COMMIT, so with two writers seq 8 could be seen before seq 7 commits, and a reader
 *   at 8 would skip 7 for ever. Each append therefore takes a transaction-scoped
 *   advisory lock before drawing its seq. The lock is released only after the commit
 *   is visible, so the next writer's seq is larger and commits later. The NOTIFY is
 *   sent inside the same transaction, so it is delivered only once the row is visible.
 *
 * Events are rare (revocations, policy and membership changes), so serialising their
 * inserts costs nothing measurable; audit records do not go through here.
 */
export async function appendEvent(
  store: Store,
  row: { ts: number; kind: string; data: string },
  hooks: AppendEventHooks = {},
): Promise<AppendedEvent> {
  if (store.dialect !== "postgres") {
    const r = await store.db
      .insertInto("events")
      .values(row)
      .returning("seq")
      .executeTakeFirstOrThrow();
    return { seq: Number(r.seq), ts: row.ts };
  }
  return store.db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${sql.lit(EVENTS_LOCK_KEY.toString())}::bigint)`.execute(
      trx,
    );
    const r = await trx.insertInto("events").values(row).returning("seq").executeTakeFirstOrThrow();
    const seq = Number(r.seq);
    await sql`SELECT pg_notify(${EVENTS_CHANNEL}, ${String(seq)})`.execute(trx);
    await hooks.beforeCommit?.(seq);
    return { seq, ts: row.ts };
  });
}
