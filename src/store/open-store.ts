import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { Kysely, Migrator, PostgresDialect, SqliteDialect, type MigrationProvider } from "kysely";
import { ZtError } from "../core/errors.js";
import type { StoreDialect } from "./dialect.js";
import type { Tables } from "./tables.js";
import { allMigrations } from "./migrations/index.js";

export interface StoreOptions {
  /** Folder for the embedded SQLite database (used when no databaseUrl is given). */
  dataDir: string;
  /** postgres://… selects PostgreSQL. */
  databaseUrl?: string | undefined;
  /** Connection pool size for PostgreSQL. */
  poolSize?: number;
  /** Statement timeout for PostgreSQL, ms. */
  statementTimeoutMs?: number;
}

/** The store: one Kysely instance over SQLite or PostgreSQL, and the facts callers branch on. */
export interface Store {
  readonly db: Kysely<Tables>;
  readonly dialect: StoreDialect;
  /** Where the SQLite file is (undefined for PostgreSQL). */
  readonly file: string | undefined;
  /** Raw better-sqlite3 handle, for the few hot paths that need a synchronous statement. */
  readonly sqlite: Database.Database | undefined;
  /** PostgreSQL pool, for LISTEN/NOTIFY. */
  readonly pgPool: pg.Pool | undefined;
  close(): Promise<void>;
}

// int8 → number: every bigint we store (ms timestamps, sequence numbers) fits in 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

/** Opens the store and runs pending migrations (serialised by Kysely's migration lock). */
export async function openStore(options: StoreOptions): Promise<Store> {
  const store = options.databaseUrl ? openPostgres(options) : openSqlite(options.dataDir);
  try {
    await migrateStore(store);
  } catch (e) {
    await store.close();
    throw e;
  }
  return store;
}

export function openSqlite(dataDir: string): Store {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, "zt.db");
  let sqlite: Database.Database;
  try {
    sqlite = new Database(file);
  } catch (e) {
    throw new ZtError("ZT_STORE", `cannot open database ${file}: ${(e as Error).message}`, { file });
  }
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("synchronous = FULL");
  sqlite.pragma("busy_timeout = 5000");
  sqlite.pragma("foreign_keys = ON");
  const db = new Kysely<Tables>({ dialect: new SqliteDialect({ database: sqlite }) });
  return {
    db,
    dialect: "sqlite",
    file,
    sqlite,
    pgPool: undefined,
    close: async () => {
      await db.destroy();
    },
  };
}

function openPostgres(options: StoreOptions): Store {
  const pool = new pg.Pool({
    connectionString: options.databaseUrl,
    max: options.poolSize ?? 10,
    statement_timeout: options.statementTimeoutMs ?? 10_000,
  });
  pool.on("error", () => {
    /* an idle client died; the pool replaces it. Callers see errors on their own queries. */
  });
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    dialect: "postgres",
    file: undefined,
    sqlite: undefined,
    pgPool: pool,
    close: async () => {
      await db.destroy();
    },
  };
}

export async function migrateStore(store: Store): Promise<string[]> {
  const migrations = allMigrations(store.dialect);
  const provider: MigrationProvider = { getMigrations: async () => migrations };
  const migrator = new Migrator({ db: store.db, provider, migrationTableName: "zt_migrations", migrationLockTableName: "zt_migrations_lock" });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    throw new ZtError("ZT_STORE", `database migration failed: ${(error as Error).message ?? String(error)}`, {}, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}

export async function migrationStatus(store: Store): Promise<{ name: string; executedAt: Date | undefined }[]> {
  const migrator = new Migrator({
    db: store.db,
    provider: { getMigrations: async () => allMigrations(store.dialect) },
    migrationTableName: "zt_migrations",
    migrationLockTableName: "zt_migrations_lock",
  });
  const all = await migrator.getMigrations();
  return all.map((m) => ({ name: m.name, executedAt: m.executedAt }));
}
