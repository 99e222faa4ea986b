import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/**
 * Identity: the timestamps of the settled failed sign-ins of the last hour per lockout key
 * (JSON array of ms), kept apart from the lockout window (`recent_failures`), which a
 * lockout empties. They are what `context.failed_attempts` counts.
 */
export const failedAttempts = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .alterTable("auth_failures")
      .addColumn("failed_at", "text", (c) => c.notNull().defaultTo("[]"))
      .execute();
  },
});
