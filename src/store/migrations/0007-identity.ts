import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/**
 * Identity: the timestamps of recent failed sign-in attempts per lockout key (JSON array
 * of ms), so "at most N failures in any window" is a sliding window, not a fixed one.
 */
export const identity = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .alterTable("auth_failures")
      .addColumn("recent_failures", "text", (c) => c.notNull().defaultTo("[]"))
      .execute();
  },
});
