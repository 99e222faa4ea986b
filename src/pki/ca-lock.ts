import { sql, type Kysely } from "kysely";
import { tryBeginImmediate, type Store, type Tables } from "../store/index.js";
import { ZtError } from "../core/errors.js";

/**
 * PostgreSQL advisory lock key (transaction-scoped) that serialises changes to the set
 * of active intermediates. Arbitrary but fixed: "zt-pkica" as a 63-bit integer.
 */
export const PKI_CA_LOCK_KEY = 0x7a742d706b696361n;

const SQLITE_LOCK_TIMEOUT_MS = 30_000;

/**
 * Runs `body` in one transaction that holds a lock every zt process on the same
 * database respects, so a read-decide-write on the CA rows (is a rotation due? make
 * one, retire the rest) happens as one step even with several replicas.
 *
 * - PostgreSQL: `pg_advisory_xact_lock`, released at commit or rollback. Reads after
 *   it (READ COMMITTED) see what the previous holder committed.
 * - SQLite: `BEGIN IMMEDIATE` (the database's single write lock), waited for
 *   asynchronously so that a holder in this same process (another store handle) can
 *   finish meanwhile. Kysely's connection is held for the whole transaction, so
 *   nothing else on this handle runs inside it.
 */
export async function withCaLock<T>(
  store: Store,
  body: (db: Kysely<Tables>) => Promise<T>,
): Promise<T> {
  if (store.dialect === "postgres") {
    // READ COMMITTED whatever the database's default: reads after the lock must see what
    // the previous holder committed (a snapshot from before the wait would not).
    return store.db
      .transaction()
      .setIsolationLevel("read committed")
      .execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(${sql.lit(PKI_CA_LOCK_KEY.toString())}::bigint)`.execute(
          trx,
        );
        return body(trx);
      });
  }
  const sqlite = store.sqlite;
  if (!sqlite) throw new ZtError("ZT_STORE", "the SQLite store has no connection handle");
  const deadline = Date.now() + SQLITE_LOCK_TIMEOUT_MS;
  for (;;) {
    // Kysely's connection is held only while we hold the lock too: between attempts
    // the rest of this process keeps using the store.
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
