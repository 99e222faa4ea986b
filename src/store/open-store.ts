import { chmodSync, closeSync, constants, existsSync, openSync, statSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import {
  CompiledQuery,
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  SqliteDriver,
  type DatabaseConnection,
  type Driver,
  type Migration,
  type MigrationProvider,
  type SqliteDialectConfig,
} from "kysely";
import { ZtError } from "../core/errors.js";
import type { StoreDialect } from "./dialect.js";
import type { Tables } from "./tables.js";
import { allMigrations } from "./migrations/index.js";
import { isPostgresUrl, parseDatabaseUrl, type PostgresTarget } from "./database-url.js";
import { describePgError } from "./pg-errors.js";
import { makeDirectories } from "../core/make-directories.js";

export interface StoreOptions {
  /** Folder for the embedded SQLite database (used when no databaseUrl is given). */
  dataDir: string;
  /** postgres://… selects PostgreSQL (see docs/scale-out.md for its parameters). */
  databaseUrl?: string | undefined;
  /** Connection pool size for PostgreSQL (the URL's `pool_max` wins). */
  poolSize?: number;
  /** Statement timeout for PostgreSQL, ms (the URL's `statement_timeout` wins). */
  statementTimeoutMs?: number;
  /** Run pending migrations while opening (default true). `zt db status` opens without. */
  migrate?: boolean;
  /**
   * Make the store when there is none (default true): the SQLite file and its folder, or
   * the schema in an empty PostgreSQL database. False (every CLI command but `zt init`,
   * `zt up`, `zt ca init`, `zt db migrate`) refuses with ZT_STORE instead, so a mistyped
   * data_dir or database_url is an error, not a new empty store that answers "no users".
   */
  create?: boolean;
}

/** The store: one Kysely instance over SQLite or PostgreSQL, and the facts callers branch on. */
export interface Store {
  readonly db: Kysely<Tables>;
  readonly dialect: StoreDialect;
  /** Where the data lives, without credentials: the SQLite file, or `host:port/database`. */
  readonly location: string;
  /** Where the SQLite file is (undefined for PostgreSQL). */
  readonly file: string | undefined;
  /** Raw better-sqlite3 handle, for the few hot paths that need a synchronous statement. */
  readonly sqlite: Database.Database | undefined;
  /** PostgreSQL pool, for LISTEN/NOTIFY. */
  readonly pgPool: pg.Pool | undefined;
  /** PostgreSQL connection settings (for a dedicated LISTEN connection); holds the password. */
  readonly pgConfig: pg.PoolConfig | undefined;
  close(): Promise<void>;
}

export interface MigrationState {
  name: string;
  /** undefined while pending */
  executedAt: Date | undefined;
}

const MIGRATION_TABLE = "zt_migrations";
const MIGRATION_LOCK_TABLE = "zt_migrations_lock";

// int8 → number: every bigint we store (ms timestamps, sequence numbers) fits in 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

/**
 * Opens the store and runs pending migrations. `databaseUrl` = postgres://… selects
 * PostgreSQL, no URL the SQLite file in `dataDir`. Concurrent openers (several
 * replicas starting at once) are serialised: PostgreSQL by Kysely's advisory lock,
 * SQLite by a write transaction around the migration run.
 */
export async function openStore(options: StoreOptions): Promise<Store> {
  const url = options.databaseUrl?.trim();
  // Anything but postgres:// is refused (naming what is wrong, never echoing the URL,
  // which may hold a password) rather than silently falling back to SQLite.
  if (url && !isPostgresUrl(url)) parseDatabaseUrl(url);
  if (!url && options.create === false) refuseMissingSqlite(options.dataDir);
  const store = url ? await openPostgres(options) : openSqlite(options.dataDir);
  if (options.migrate === false) return store;
  try {
    if (options.create === false && !(await hasSchema(store))) throw noStore(store);
    await migrateStore(store);
  } catch (e) {
    await store.close();
    throw e;
  }
  return store;
}

/**
 * Kysely's SQLite driver with every transaction begun IMMEDIATE (Kysely begins them
 * DEFERRED). The audit writer thread is a second connection committing all the time: a
 * deferred transaction that reads and then writes fails at once with "database is
 * locked" (SQLITE_BUSY_SNAPSHOT, no busy wait) when that thread commits in between. Taking
 * the write lock at BEGIN makes it wait on busy_timeout instead, like a single write.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;
  constructor(config: SqliteDialectConfig) {
    super(config);
    this.#config = config;
  }
  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config);
  }
}

/** The SQLite file a data directory holds. */
export function sqliteFile(dataDir: string): string {
  return join(dataDir, "zt.db");
}

/** ZT_STORE unless `<dataDir>/zt.db` is there; checked before SQLite would make it. */
function refuseMissingSqlite(dataDir: string): void {
  if (existsSync(sqliteFile(dataDir))) return;
  throw new ZtError(
    "ZT_STORE",
    `no zt store at ${dataDir} (no zt.db there): run \`zt init\` to create one, or check data_dir (zt.yaml, ZT_DATA_DIR)`,
    { dataDir },
  );
}

/** Whether zt's migrations table is there: a store zt made, of whatever version. */
async function hasSchema(store: Store): Promise<boolean> {
  const sql =
    store.dialect === "postgres"
      ? `SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = '${MIGRATION_TABLE}' AND schemaname = ANY (current_schemas(false))`
      : `SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '${MIGRATION_TABLE}'`;
  const r = await store.db.executeQuery(CompiledQuery.raw(sql));
  return r.rows.length > 0;
}

function noStore(store: Store): ZtError {
  return store.dialect === "postgres"
    ? new ZtError(
        "ZT_STORE",
        `no zt schema in the PostgreSQL database ${store.location}: run \`zt db migrate\` (or \`zt init\`) to create it, or check database_url (zt.yaml, ZT_DATABASE_URL)`,
        { location: store.location },
      )
    : new ZtError(
        "ZT_STORE",
        `no zt store in ${store.location} (a database without zt's schema): run \`zt init\` to create one, or check data_dir (zt.yaml, ZT_DATA_DIR)`,
        { location: store.location },
      );
}

export function openSqlite(dataDir: string): Store {
  makeDirectories(dataDir, 0o700);
  const file = sqliteFile(dataDir);
  let sqlite: Database.Database;
  try {
    keepPrivate(file);
    sqlite = new Database(file);
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma("synchronous = FULL");
    sqlite.pragma("busy_timeout = 5000");
    sqlite.pragma("foreign_keys = ON");
  } catch (e) {
    throw new ZtError("ZT_STORE", `cannot open database ${file}: ${(e as Error).message}`, {
      file,
    });
  }
  const db = new Kysely<Tables>({ dialect: new ImmediateSqliteDialect({ database: sqlite }) });
  return {
    db,
    dialect: "sqlite",
    location: file,
    file,
    sqlite,
    pgPool: undefined,
    pgConfig: undefined,
    close: async () => {
      await db.destroy();
    },
  };
}

/**
 * The database holds sealed keys, TOTP secrets and the audit log: 0600, like a key file.
 * SQLite creates its file with the umask's mode (0644, usually) and gives the -wal and
 * -shm files the database file's mode, so the file is made 0600 before SQLite opens it;
 * an existing one of this user's that others could read (made before this) is narrowed.
 */
function keepPrivate(file: string): void {
  try {
    closeSync(openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600));
    const st = statSync(file);
    if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) chmodSync(file, 0o600);
  } catch {
    /* SQLite's own open reports what is wrong with the file */
  }
}

async function openPostgres(options: StoreOptions): Promise<Store> {
  const target = parseDatabaseUrl(options.databaseUrl ?? "", {
    poolSize: options.poolSize,
    statementTimeoutMs: options.statementTimeoutMs,
  });
  const pool = guardedPool(target.poolConfig);
  try {
    await pool.query("SELECT 1");
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw unreachable(target, e);
  }
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    dialect: "postgres",
    location: target.location,
    file: undefined,
    sqlite: undefined,
    pgPool: pool,
    pgConfig: target.poolConfig,
    close: async () => {
      await db.destroy();
    },
  };
}

/**
 * A pool whose connections can die without taking the process with them. `pg` emits
 * 'error' on a client whose connection drops while it is checked out between two
 * queries (inside a transaction, say); with no listener that is an uncaught exception.
 * The listener only swallows the event: the query in flight, or the next one on that
 * client, still fails with the error, and the pool discards the broken client.
 */
function guardedPool(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(config);
  pool.on("error", () => undefined); // an idle client died; the pool replaces it
  pool.on("connect", (client) => {
    client.on("error", () => undefined);
  });
  return pool;
}

function unreachable(target: PostgresTarget, e: unknown): ZtError {
  return new ZtError(
    "ZT_STORE",
    `cannot connect to PostgreSQL at ${target.location} as ${target.user}: ${describePgError(e, typeof target.poolConfig.password === "string" ? target.poolConfig.password : undefined)}`,
    { location: target.location },
  );
}

/**
 * Runs pending migrations; returns the names applied now. Safe to call from several
 * processes at once: only one runs them, the others wait and then find nothing to do.
 */
export async function migrateStore(store: Store): Promise<string[]> {
  const migrations = allMigrations(store.dialect);
  return store.dialect === "postgres"
    ? migratePostgres(store, migrations)
    : migrateSqlite(store, migrations);
}

async function migratePostgres(
  store: Store,
  migrations: Record<string, Migration>,
): Promise<string[]> {
  // A connection of its own, without the statement timeout: waiting for another
  // replica's migration (Kysely's pg_advisory_lock) or a long DDL must not time out.
  const config: pg.PoolConfig = { ...store.pgConfig, max: 1 };
  delete config.statement_timeout;
  delete config.query_timeout;
  const pool = guardedPool(config);
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  try {
    return await runMigrator(db, migrations);
  } finally {
    await db.destroy();
  }
}

async function migrateSqlite(
  store: Store,
  migrations: Record<string, Migration>,
): Promise<string[]> {
  const sqlite = store.sqlite!;
  // SQLite has one writer at a time: BEGIN IMMEDIATE takes the write lock, so the
  // whole run is atomic and a second migrator (another process, or another handle in
  // this one) waits for the first and then finds nothing to do.
  await beginImmediate(sqlite, store.location);
  try {
    const applied = await runMigrator(store.db as unknown as Kysely<unknown>, migrations);
    sqlite.exec("COMMIT");
    return applied;
  } catch (e) {
    if (sqlite.inTransaction) sqlite.exec("ROLLBACK");
    throw e;
  }
}

/**
 * BEGIN IMMEDIATE without blocking the event loop: the busy handler is switched off
 * and the wait happens here, asynchronously, so a holder in this same process can
 * finish its (async) migration meanwhile.
 */
async function beginImmediate(
  sqlite: Database.Database,
  location: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!tryBeginImmediate(sqlite, location, deadline)) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * One attempt at SQLite's write lock (BEGIN IMMEDIATE) without the driver's synchronous
 * busy wait, which would block this thread — and with it a holder of the lock in this
 * same process — until the timeout. False while another connection holds the lock (the
 * caller waits asynchronously and tries again); ZT_STORE past `deadline` (epoch ms).
 */
export function tryBeginImmediate(
  sqlite: Database.Database,
  location: string,
  deadline: number,
): boolean {
  const busy = sqlite.pragma("busy_timeout", { simple: true }) as number;
  sqlite.pragma("busy_timeout = 0");
  try {
    sqlite.exec("BEGIN IMMEDIATE");
    return true;
  } catch (e) {
    const code = (e as { code?: string }).code ?? "";
    if (!code.startsWith("SQLITE_BUSY") || Date.now() > deadline) {
      throw new ZtError("ZT_STORE", `database ${location} is locked: ${(e as Error).message}`, {
        location,
      });
    }
    return false;
  } finally {
    sqlite.pragma(`busy_timeout = ${busy}`);
  }
}

function migrator(db: Kysely<unknown>, migrations: Record<string, Migration>): Migrator {
  const provider: MigrationProvider = { getMigrations: async () => migrations };
  return new Migrator({
    db,
    provider,
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  });
}

async function runMigrator(
  db: Kysely<unknown>,
  migrations: Record<string, Migration>,
): Promise<string[]> {
  const { error, results } = await migrator(db, migrations).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName;
    throw new ZtError(
      "ZT_STORE",
      `database migration${failed ? ` ${failed}` : ""} failed: ${(error as Error).message ?? String(error)}`,
      failed ? { migration: failed } : {},
      { cause: error },
    );
  }
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}

/** Every known migration with when it ran (undefined = pending), in order. */
export async function migrationStatus(store: Store): Promise<MigrationState[]> {
  const all = await migrator(
    store.db as unknown as Kysely<unknown>,
    allMigrations(store.dialect),
  ).getMigrations();
  return all.map((m) => ({ name: m.name, executedAt: m.executedAt }));
}
