import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/** Devices and their posture reports; access requests, grants and break-glass. */
export const deviceAccess = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable("devices")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("user_id", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("public_key", "text", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("approved_at", "bigint")
      .addColumn("approved_by", "text")
      .addColumn("last_report_at", "bigint")
      .addColumn("compliant", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("score", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("os", "text")
      .addColumn("checks", "text", (c) => c.notNull().defaultTo("{}"))
      .execute();
    await db.schema.createIndex("devices_user").on("devices").column("user_id").execute();
    await db.schema
      .createTable("device_reports")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("received_at", "bigint", (c) => c.notNull())
      .addColumn("report", "text", (c) => c.notNull())
      .addColumn("score", "integer", (c) => c.notNull())
      .addColumn("compliant", "integer", (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("device_reports_device")
      .on("device_reports")
      .columns(["device_id", "received_at"])
      .execute();
    await db.schema
      .createTable("access_requests")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("user_id", "text", (c) => c.notNull())
      .addColumn("user_name", "text", (c) => c.notNull())
      .addColumn("resource", "text", (c) => c.notNull())
      .addColumn("reason", "text", (c) => c.notNull())
      .addColumn("ttl_ms", "bigint", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("required_approvals", "integer", (c) => c.notNull())
      .addColumn("approvals", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("decided_at", "bigint")
      .addColumn("decided_by", "text")
      .addColumn("starts_at", "bigint")
      .addColumn("expires_at", "bigint")
      .execute();
    await db.schema
      .createIndex("access_requests_status")
      .on("access_requests")
      .columns(["status", "expires_at"])
      .execute();
  },
});
