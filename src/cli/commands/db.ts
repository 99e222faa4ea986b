import type { Command } from "commander";
import {
  migrateStore,
  migrationStatus,
  openStore,
  type MigrationState,
  type Store,
} from "../../store/index.js";
import { loadCliConfig, printJson, printTable, withoutContext } from "../cli-context.js";

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
        withStore(cmd, async (store) => {
          const migrations = await migrationStatus(store);
          const report = statusReport(store, migrations);
          if (opts.json) {
            printJson(report);
            return;
          }
          process.stdout.write(`engine:   ${report.engine}\nlocation: ${report.location}\n`);
          process.stdout.write(
            `schema:   ${report.applied} applied, ${report.pending} pending\n\n`,
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

function statusReport(store: Store, migrations: MigrationState[]) {
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
