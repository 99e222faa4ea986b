export { openStore, openSqlite, migrateStore, migrationStatus } from "./open-store.js";
export type { Store, StoreOptions } from "./open-store.js";
export type { StoreDialect } from "./dialect.js";
export type * from "./tables.js";
