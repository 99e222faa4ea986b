import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/** Users, groups, MFA state, sessions, audit events, the event log, keys. */
export const foundation = (dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    const seqType = dialect === "postgres" ? "bigint" : "integer";
    await db.schema
      .createTable("users")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("name", "text", (c) => c.notNull().unique())
      .addColumn("email", "text")
      .addColumn("password_hash", "text", (c) => c.notNull())
      .addColumn("totp_secret_sealed", "text")
      .addColumn("totp_last_step", "bigint", (c) => c.notNull().defaultTo(0))
      .addColumn("disabled", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("groups")
      .addColumn("name", "text", (c) => c.primaryKey())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("user_groups")
      .addColumn("user_id", "text", (c) => c.notNull().references("users.id").onDelete("cascade"))
      .addColumn("group_name", "text", (c) =>
        c.notNull().references("groups.name").onDelete("cascade"),
      )
      .addPrimaryKeyConstraint("user_groups_pk", ["user_id", "group_name"])
      .execute();
    await db.schema
      .createTable("backup_codes")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("user_id", "text", (c) => c.notNull().references("users.id").onDelete("cascade"))
      .addColumn("code_hash", "text", (c) => c.notNull())
      .addColumn("used_at", "bigint")
      .execute();
    await db.schema.createIndex("backup_codes_user").on("backup_codes").column("user_id").execute();
    await db.schema
      .createTable("auth_failures")
      .addColumn("key", "text", (c) => c.primaryKey())
      .addColumn("failures", "integer", (c) => c.notNull())
      .addColumn("window_start", "bigint", (c) => c.notNull())
      .addColumn("lockouts", "integer", (c) => c.notNull())
      .addColumn("locked_until", "bigint", (c) => c.notNull())
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("sessions")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("token_hash", "text", (c) => c.notNull().unique())
      .addColumn("user_id", "text", (c) => c.notNull().references("users.id").onDelete("cascade"))
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .addColumn("last_seen_at", "bigint", (c) => c.notNull())
      .addColumn("mfa_at", "bigint", (c) => c.notNull())
      .addColumn("source_ip", "text", (c) => c.notNull())
      .addColumn("user_agent", "text", (c) => c.notNull())
      .addColumn("device_id", "text")
      .addColumn("revoked_at", "bigint")
      .addColumn("revoke_reason", "text")
      .execute();
    await db.schema.createIndex("sessions_user").on("sessions").column("user_id").execute();
    await db.schema
      .createTable("audit_events")
      .addColumn("seq", seqType, (c) => c.primaryKey())
      .addColumn("id", "text", (c) => c.notNull().unique())
      .addColumn("ts", "bigint", (c) => c.notNull())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("outcome", "text", (c) => c.notNull())
      .addColumn("subject", "text")
      .addColumn("source_ip", "text")
      .addColumn("route", "text")
      .addColumn("action", "text")
      .addColumn("decision_id", "text")
      .addColumn("policies", "text")
      .addColumn("reason", "text")
      .addColumn("data", "text", (c) => c.notNull())
      .addColumn("prev_hash", "text")
      .addColumn("hash", "text")
      .execute();
    await db.schema
      .createIndex("audit_events_decision")
      .on("audit_events")
      .column("decision_id")
      .execute();
    await db.schema.createIndex("audit_events_ts").on("audit_events").column("ts").execute();
    await db.schema
      .createTable("events")
      .addColumn("seq", dialect === "postgres" ? "bigserial" : "integer", (c) =>
        dialect === "postgres" ? c.primaryKey() : c.primaryKey().autoIncrement(),
      )
      .addColumn("ts", "bigint", (c) => c.notNull())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("data", "text", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("keys")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("purpose", "text", (c) => c.notNull())
      .addColumn("alg", "text", (c) => c.notNull())
      .addColumn("public_jwk", "text", (c) => c.notNull())
      .addColumn("private_sealed", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("not_after", "bigint")
      .addColumn("status", "text", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("keys_purpose").on("keys").column("purpose").execute();
    await db.schema
      .createTable("meta")
      .addColumn("key", "text", (c) => c.primaryKey())
      .addColumn("value", "text", (c) => c.notNull())
      .execute();
  },
});
