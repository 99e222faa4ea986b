export {
  openStore,
  openSqlite,
  sqliteFile,
  migrateStore,
  migrationStatus,
  tryBeginImmediate,
} from "./open-store.js";
export { withStoreLock } from "./store-lock.js";
export { allMigrations } from "./migrations/index.js";
export type { Store, StoreOptions, MigrationState } from "./open-store.js";
export { isPostgresUrl, parseDatabaseUrl, redactDatabaseUrl } from "./database-url.js";
export type { PostgresTarget, SslMode } from "./database-url.js";
export { describePgError } from "./pg-errors.js";
export type { StoreDialect } from "./dialect.js";
export type * from "./tables.js";
export type * from "./tables-pki.js";
export type * from "./tables-audit.js";
export type * from "./tables-device.js";
export type * from "./tables-access.js";
export type * from "./tables-identity.js";
