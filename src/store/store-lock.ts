import { sql, type Kysely } from "kysely";
import { ZtError } from "../core/errors.js";
import { tryBeginImmediate, type Store } from "./open-store.js";
import type { Tables } from "./tables.js";

const SQLITE_LOCK_TIMEOUT_MS = 30_000;

/**
 * Runs `body` in one transaction holding a lock that every zt process on the same
 * database respects, so a read-decide-write (is a CA rotation due? is a break-glass
 * grant still active?) happens as one step even with several replicas.
 *
 * - PostgreSQL: `pg_advisory_xact_lock(key)`, released at commit or rollback. Reads
 *   after it (READ COMMITTED, whatever the database's default) see what the previous
 *   holder committed; a snapshot from before the wait would not.
 * - SQLite: `BEGIN IMMEDIATE` (the database's single write lock; `key` does not narrow
 *   it), waited for asynchronously so that a holder in this same process (another store
 *   handle) can finish meanwhile. Kysely's connection is held for the whole transaction
 *   and only while the lock is held: between attempts the rest of this process keeps
 *   using the store.
 */
export async function withStoreLock<T>(
  store: Store,
  key: bigint,
  body: (db: Kysely<Tables>) => Promise<T>,
): Promise<T> {
  if (store.dialect === "postgres") {
    return store.db
      .transaction()
      .setIsolationLevel("read committed")
      .execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(${sql.lit(key.toString())}::bigint)`.execute(trx);
        return body(trx);
      });
  }
  const sqlite = store.sqlite;
  if (!sqlite) throw new ZtError("ZT_STORE", "the SQLite store has no connection handle");
  const deadline = Date.now() + SQLITE_LOCK_TIMEOUT_MS;
  for (;;) {
    const done = await store.db.connection().execute(async (db) => {
      if (!tryBeginImmediate(sqlite, store.location, deadline)) return undefined;
      try {
        const value = await body(db);
        sqlite.exec("COMMIT");
        return { value };
      } catch (e) {
        if (sqlite.inTransaction) sqlite.exec("ROLLBACK");
        throw e;
      }
    });
    if (done) return done.value;
    await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
  }
}
