import { existsSync } from "node:fs";
import type { Command } from "commander";
import {
  allMigrations,
  migrateStore,
  migrationStatus,
  openStore,
  sqliteFile,
  type MigrationState,
  type Store,
} from "../../store/index.js";
import {
  assertBackupFile,
  backupSqlite,
  restoreSqlite,
  type BackupSummary,
} from "../../store/sqlite-backup.js";
import { parseAuditConfig } from "../../audit/index.js";
import { loadMasterKey } from "../../keys/index.js";
import { ZtError } from "../../core/errors.js";
import type { ZtConfig } from "../../config/index.js";
import {
  auditAfter,
  fileErrorOf,
  loadCliConfig,
  printJson,
  printTable,
  withContext,
  withoutContext,
} from "../cli-context.js";
import { makeDirectories } from "../../core/make-directories.js";

const actor = () => `cli:${process.env["USER"] ?? "unknown"}`;

/**
 * `zt db migrate|status` — the store's schema. Neither needs the master key: they only
 * touch the schema, so an operator can run them before a rollout, from any replica.
 */
export function registerDbCommands(program: Command): void {
  const db = program.command("db").description("database schema: migrations and status");

  db.command("status")
    .description("engine, location (without credentials) and applied / pending migrations")
    .option("--json", "JSON output")
    .action(async (opts: { json?: boolean }, cmd: Command) =>
      withoutContext(() =>
        withStoreIfAny(cmd, async (store, config) => {
          const migrations = store ? await migrationStatus(store) : pendingMigrations();
          const report = store
            ? statusReport(store, migrations)
            : statusReport(
                { dialect: "sqlite", location: sqliteFile(config.data_dir) },
                migrations,
              );
          if (opts.json) {
            printJson(report);
            return;
          }
          process.stdout.write(`engine:   ${report.engine}\nlocation: ${report.location}\n`);
          process.stdout.write(
            `schema:   ${report.applied} applied, ${report.pending} pending${store ? "" : " (no database file: `zt init` or `zt db migrate` creates it)"}\n\n`,
          );
          printTable(
            migrations.map((m) => ({
              migration: m.name,
              status: m.executedAt ? "applied" : "pending",
              applied_at: m.executedAt?.toISOString(),
            })),
            ["migration", "status", "applied_at"],
          );
        }),
      ),
    );

  registerDbBackupCommands(db);

  db.command("migrate")
    .description(
      "apply pending migrations (safe while other replicas start: one runs them, the others wait)",
    )
    .option("--json", "JSON output")
    .action(async (opts: { json?: boolean }, cmd: Command) =>
      withoutContext(() =>
        withStore(cmd, async (store) => {
          const applied = await migrateStore(store);
          const report = {
            ...statusReport(store, await migrationStatus(store)),
            applied_now: applied,
          };
          if (opts.json) printJson(report);
          else if (applied.length === 0)
            process.stdout.write(
              `schema is up to date (${report.applied} migrations) at ${report.location}\n`,
            );
          else process.stdout.write(`applied ${applied.join(", ")} at ${report.location}\n`);
        }),
      ),
    );
}

/**
 * `zt db backup|restore` — a consistent copy of the embedded SQLite store while zt runs,
 * and its restore while zt is stopped. Both audited (the backup in the live log, the
 * restore in the restored one).
 */
export function registerDbBackupCommands(db: Command): void {
  db.command("backup")
    .description(
      "copy the embedded SQLite store to FILE (0600) while zt runs: a consistent, checked snapshot",
    )
    .argument("<file>", "where to write the backup")
    .option("--force", "replace FILE if it exists")
    .option("--json", "JSON output")
    .action(async (file: string, opts: { force?: boolean; json?: boolean }, cmd: Command) =>
      withContext(cmd, async (ctx) => {
        const r = backupSqlite(ctx.store, file, opts.force === true);
        ctx.audit.record({
          kind: "db.backup",
          outcome: "success",
          subject: actor(),
          data: { file: r.file, bytes: r.bytes, audit_head: r.auditHead },
        });
        await ctx.audit.flush();
        if (opts.json) printJson(summaryJson(r));
        else
          process.stdout.write(
            `${describe(r)}\n` +
              `The master key is not in it (it never is): keep ${masterKeyWhere(ctx.config)} apart from\n` +
              "the backup; a restore needs the master key in use when the backup was made.\n",
          );
      }),
    );

  db.command("restore")
    .description(
      "replace the embedded SQLite store with a backup (zt stopped); the replaced database is kept aside",
    )
    .argument("<file>", "a file written by zt db backup")
    .option("--json", "JSON output")
    .action(async (file: string, opts: { json?: boolean }, cmd: Command) =>
      withoutContext(async () => {
        const config = loadCliConfig(cmd);
        if (config.database_url)
          throw new ZtError(
            "ZT_USAGE",
            'zt db restore replaces the embedded SQLite store; this config uses PostgreSQL: restore it with pg_restore or psql (docs/scale-out.md, "Backups")',
          );
        // Named first: a mistyped path is not found, before the master key is looked for
        // or the data directory made.
        try {
          assertBackupFile(file);
        } catch (e) {
          throw fileErrorOf("backup", e);
        }
        const box = loadMasterKey({
          dataDir: config.data_dir,
          masterKeyFile: config.master_key_file,
          envValue: process.env["ZT_MASTER_KEY"],
        });
        makeDirectories(config.data_dir, 0o700);
        const r = restoreSqlite(config.data_dir, file, box);
        // Recorded in the restored log: the chain goes on from the backup's last record.
        await auditAfter(config, {
          kind: "db.restore",
          outcome: "success",
          subject: actor(),
          data: { file: r.file, previous: r.previous ?? null, audit_head: r.auditHead },
        });
        const witness = parseAuditConfig(config.audit, config.trust_domain).witness.file;
        if (opts.json) {
          printJson({
            ...summaryJson(r),
            previous: r.previous ?? null,
            witness_file: witness ?? null,
          });
          return;
        }
        process.stdout.write(
          `restored ${describe(r)}\n` +
            (r.previous
              ? `The database it replaced is kept as ${r.previous} (with its -wal/-shm, if any).\n`
              : "") +
            (witness
              ? `The audit log now ends at seq ${r.auditHead}: if the witness file ${witness} holds a later\n` +
                "checkpoint, zt will report the log truncated. Move that file aside (keep it as a record)\n" +
                "before starting zt (docs/audit.md).\n"
              : ""),
        );
      }),
    );
}

function describe(r: BackupSummary): string {
  return `${r.file}: ${r.bytes} bytes, ${r.migrations} migrations, ${r.users} users, audit log up to seq ${r.auditHead}`;
}

function summaryJson(r: BackupSummary) {
  return {
    file: r.file,
    bytes: r.bytes,
    migrations: r.migrations,
    users: r.users,
    audit_head: r.auditHead,
  };
}

function masterKeyWhere(config: {
  master_key_file?: string | undefined;
  data_dir: string;
}): string {
  return process.env["ZT_MASTER_KEY"]
    ? "ZT_MASTER_KEY"
    : (config.master_key_file ?? `${config.data_dir}/master.key`);
}

async function withStore(cmd: Command, body: (store: Store) => Promise<void>): Promise<void> {
  const config = loadCliConfig(cmd);
  const store = await openStore({
    dataDir: config.data_dir,
    databaseUrl: config.database_url,
    migrate: false,
  });
  try {
    await body(store);
  } finally {
    await store.close();
  }
}

/**
 * Like withStore, without making a SQLite file that is not there (`zt db status` pointed at
 * a mistyped data_dir must not leave a database behind): the body then gets undefined.
 */
async function withStoreIfAny(
  cmd: Command,
  body: (store: Store | undefined, config: ZtConfig) => Promise<void>,
): Promise<void> {
  const config = loadCliConfig(cmd);
  if (!config.database_url && !existsSync(sqliteFile(config.data_dir)))
    return body(undefined, config);
  const store = await openStore({
    dataDir: config.data_dir,
    databaseUrl: config.database_url,
    migrate: false,
  });
  try {
    await body(store, config);
  } finally {
    await store.close();
  }
}

/** Every migration, none applied: a store not made yet. */
function pendingMigrations(): MigrationState[] {
  return Object.keys(allMigrations("sqlite"))
    .sort()
    .map((name) => ({ name, executedAt: undefined }));
}

function statusReport(store: Pick<Store, "dialect" | "location">, migrations: MigrationState[]) {
  const applied = migrations.filter((m) => m.executedAt !== undefined);
  return {
    engine: store.dialect,
    location: store.location,
    applied: applied.length,
    pending: migrations.length - applied.length,
    migrations: migrations.map((m) => ({
      name: m.name,
      applied_at: m.executedAt?.toISOString() ?? null,
    })),
  };
}
