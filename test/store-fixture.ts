/**
 * Test fixture for the storage engines: a fresh SQLite data directory, or a fresh,
 * uniquely named PostgreSQL database on the server named by ZT_TEST_DATABASE_URL
 * (default postgres://postgres@127.0.0.1:5432/postgres, the admin connection).
 *
 * When the server cannot be reached the PostgreSQL suites fail if
 * ZT_TEST_DATABASE_URL is set (CI says "PostgreSQL is here"), and otherwise are
 * skipped with a loud warning.
 */
import { afterEach } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { Migrator, type Kysely } from "kysely";
import { allMigrations, openStore, type Store, type StoreDialect } from "../src/store/index.js";

export const ADMIN_URL =
  process.env["ZT_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REQUIRED = process.env["ZT_TEST_DATABASE_URL"] !== undefined;

let probe: Promise<boolean> | undefined;

/** Whether PostgreSQL tests can run; throws when they must but cannot. */
export function postgresAvailable(): Promise<boolean> {
  probe ??= (async () => {
    const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      await client.query("SELECT 1");
      return true;
    } catch (e) {
      const why = `PostgreSQL at ${new URL(ADMIN_URL).host} is unreachable: ${(e as Error).message}`;
      if (REQUIRED) throw new Error(`ZT_TEST_DATABASE_URL is set but ${why}`);
      console.warn(
        `\n*** SKIPPING PostgreSQL tests: ${why} (set ZT_TEST_DATABASE_URL to make this fail) ***\n`,
      );
      return false;
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return probe;
}

async function admin<T>(body: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface TestDatabase {
  /** postgres://… of the new database */
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** CREATE DATABASE zt_test_<random>; drop() removes it (terminating its connections). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `zt_test_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () =>
      admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

/** Terminates server connections to a test database, optionally only one application's. */
export async function terminateConnections(
  database: string,
  applicationName?: string,
): Promise<number> {
  return admin(async (c) => {
    const r = await c.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid() AND ($2::text IS NULL OR application_name = $2)`,
      [database, applicationName ?? null],
    );
    return r.rowCount ?? 0;
  });
}

/** Where a store for one engine lives: pass `storeOptions` to openStore. */
export interface EngineTarget {
  storeOptions: { dataDir: string; databaseUrl?: string };
  /** The PostgreSQL database name (undefined for SQLite). */
  database: string | undefined;
  cleanup(): Promise<void>;
}

/** zt.yaml text for a store on `t` (its data_dir, and database_url for PostgreSQL), then `rest`. */
export function engineConfigYaml(t: EngineTarget, rest: string): string {
  const url = t.storeOptions.databaseUrl;
  return `data_dir: ${t.storeOptions.dataDir}\n${url ? `database_url: "${url}"\n` : ""}${rest}`;
}

/** Writes {@link engineConfigYaml} as `zt.yaml` in the target's data directory; returns its path. */
export function writeEngineConfig(t: EngineTarget, rest: string): string {
  const path = join(t.storeOptions.dataDir, "zt.yaml");
  writeFileSync(path, engineConfigYaml(t, rest));
  return path;
}

export interface Engine {
  name: StoreDialect;
  /** A fresh, empty place to open a store. */
  fresh(): Promise<EngineTarget>;
}

export const sqliteEngine: Engine = {
  name: "sqlite",
  async fresh() {
    const dataDir = mkdtempSync(join(tmpdir(), "zt-store-"));
    return {
      storeOptions: { dataDir },
      database: undefined,
      cleanup: async () => rmSync(dataDir, { recursive: true, force: true }),
    };
  },
};

export const postgresEngine: Engine = {
  name: "postgres",
  async fresh() {
    const dataDir = mkdtempSync(join(tmpdir(), "zt-store-"));
    const db = await createTestDatabase();
    return {
      storeOptions: { dataDir, databaseUrl: db.url },
      database: db.name,
      cleanup: async () => {
        await db.drop();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
};

/** The engines to run a conformance suite over (PostgreSQL only when reachable). */
export async function engines(): Promise<Engine[]> {
  return (await postgresAvailable()) ? [sqliteEngine, postgresEngine] : [sqliteEngine];
}

/**
 * For a `describe.each(ENGINES)` block: `target()` gives a fresh place for a store of
 * `engine`, removed after the test; `cleanups` takes the test's other cleanups, run
 * after it in reverse order (a cleanup that fails does not stop the rest).
 */
export function perTestTargets(engine: Engine): {
  target(): Promise<EngineTarget>;
  cleanups: (() => Promise<void>)[];
} {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });
  return {
    cleanups,
    async target() {
      const t = await engine.fresh();
      cleanups.push(t.cleanup);
      return t;
    },
  };
}

/** Polls a condition (no fixed sleeps for time to pass; bounded wait for I/O). */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * A store on `t` as an earlier version left it: migrated up to `last` (a migration's name,
 * e.g. "0010-renew-proofs") and no further. `migrateStore` then applies the rest.
 */
export async function openStoreMigratedUpTo(t: EngineTarget, last: string): Promise<Store> {
  const store = await openStore({ ...t.storeOptions, migrate: false });
  const upTo = Object.fromEntries(
    Object.entries(allMigrations(store.dialect)).filter(([name]) => name <= last),
  );
  const { error } = await new Migrator({
    db: store.db as unknown as Kysely<unknown>,
    provider: { getMigrations: async () => upTo },
    migrationTableName: "zt_migrations",
    migrationLockTableName: "zt_migrations_lock",
  }).migrateToLatest();
  if (error) {
    await store.close();
    throw error;
  }
  return store;
}
