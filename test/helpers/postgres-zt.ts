/**
 * A zt store on a fresh PostgreSQL database (see store-fixture.ts), initialised by the real
 * `zt init`, and the two extra connections a race test uses: one to hold a lock, one to
 * watch, in pg_stat_activity, for zt's statements waiting on it.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { createTestDatabase, waitFor, type TestDatabase } from "../store-fixture.js";
import { tempDir } from "./zt-process.js";
import { expectOk, ztCli, type ZtCli } from "./zt-cli.js";

export interface PostgresZt {
  db: TestDatabase;
  dir: string;
  /** The zt.yaml path. */
  config: string;
  zt: ZtCli;
  /** Drops the database and removes the directory. */
  cleanup(): Promise<void>;
}

export interface PostgresZtOptions {
  /** Prefix of the temporary directory. */
  prefix: string;
  env: Record<string, string>;
  /** `zt up` listens on ephemeral loopback ports (proxy and API). */
  listen?: boolean;
  /** More zt.yaml, after data_dir and database_url. */
  yaml?: string;
}

/** A fresh database and data directory, a zt.yaml naming both, and `zt init` run on them. */
export async function startPostgresZt(o: PostgresZtOptions): Promise<PostgresZt> {
  const db = await createTestDatabase();
  const dir = tempDir(o.prefix);
  const cleanup = async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const config = join(dir, "zt.yaml");
    writeFileSync(
      config,
      `data_dir: ${join(dir, "data")}\ndatabase_url: ${db.url}\n` +
        (o.listen ? `listen: { proxy: "127.0.0.1:0", api: "127.0.0.1:0" }\n` : "") +
        (o.yaml ?? ""),
    );
    const zt = ztCli(config, o.env);
    expectOk(await zt(["init"]));
    return { db, dir, config, zt, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

export interface LockRace {
  /** Holds the lock: BEGIN, take it, let zt's statements queue behind it, COMMIT. */
  lock: pg.Client;
  /**
   * Another connection: inside its transaction the lock holder sees a frozen snapshot, so
   * pg_stat_activity (and any write meant to commit before the lock goes) is read here.
   */
  watch: pg.Client;
  /** Waits until at least `count` statements matching `queryLike` (ILIKE) wait on a lock. */
  waitForLockWaiters(what: string, count?: number, queryLike?: string): Promise<void>;
  end(): Promise<void>;
}

/** Opens the lock and watch connections of a race test on `db`. */
export async function startLockRace(db: TestDatabase): Promise<LockRace> {
  const lock = new pg.Client({ connectionString: db.url });
  const watch = new pg.Client({ connectionString: db.url });
  const end = async () => {
    await lock.end().catch(() => undefined);
    await watch.end().catch(() => undefined);
  };
  try {
    await lock.connect();
    await watch.connect();
  } catch (e) {
    await end();
    throw e;
  }
  const waiting = async (queryLike: string) =>
    Number(
      (
        await watch.query<{ n: string }>(
          `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query ILIKE $2`,
          [db.name, queryLike],
        )
      ).rows[0]!.n,
    );
  return {
    lock,
    watch,
    waitForLockWaiters: (what, count = 1, queryLike = "%") =>
      waitFor(async () => (await waiting(queryLike)) >= count, what),
    end,
  };
}
