import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/** Audit checkpoints, sink/consumer cursors, bans and fired alerts. */
export const audit = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable("audit_checkpoints")
      .addColumn("size", "bigint", (c) => c.primaryKey())
      .addColumn("ts", "bigint", (c) => c.notNull())
      .addColumn("origin", "text", (c) => c.notNull())
      .addColumn("head_hash", "text", (c) => c.notNull())
      .addColumn("key_id", "text", (c) => c.notNull())
      .addColumn("note", "text", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("audit_cursors")
      .addColumn("name", "text", (c) => c.primaryKey())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("dropped", "bigint", (c) => c.notNull().defaultTo(0))
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("audit_bans")
      .addColumn("key", "text", (c) => c.primaryKey())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("value", "text", (c) => c.notNull())
      .addColumn("rule", "text", (c) => c.notNull())
      .addColumn("reason", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("until", "bigint", (c) => c.notNull())
      .addColumn("count", "integer", (c) => c.notNull())
      .addColumn("lifted_at", "bigint")
      .execute();
    await db.schema
      .createTable("audit_alerts")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("ts", "bigint", (c) => c.notNull())
      .addColumn("rule", "text", (c) => c.notNull())
      .addColumn("severity", "text", (c) => c.notNull())
      .addColumn("key", "text", (c) => c.notNull())
      .addColumn("message", "text", (c) => c.notNull())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("data", "text", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("audit_alerts_ts").on("audit_alerts").column("ts").execute();
  },
});
