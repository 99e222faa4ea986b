import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/** CA keys, issued certificates (X.509 and SSH), revocations, registrations, join tokens. */
export const pki = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable("pki_cas")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("cert", "text", (c) => c.notNull())
      .addColumn("private_sealed", "text", (c) => c.notNull())
      .addColumn("parent_id", "text")
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("not_after", "bigint", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("pki_cas_kind").on("pki_cas").columns(["kind", "status"]).execute();
    await db.schema
      .createTable("pki_certs")
      .addColumn("serial", "text", (c) => c.primaryKey())
      .addColumn("issuer_id", "text", (c) => c.notNull())
      .addColumn("spiffe_id", "text", (c) => c.notNull())
      .addColumn("dns_names", "text", (c) => c.notNull())
      .addColumn("not_before", "bigint", (c) => c.notNull())
      .addColumn("not_after", "bigint", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("key_sha256", "text", (c) => c.notNull())
      .addColumn("requested_by", "text", (c) => c.notNull())
      .addColumn("revoked_at", "bigint")
      .addColumn("revoke_reason", "text")
      .execute();
    await db.schema.createIndex("pki_certs_spiffe").on("pki_certs").column("spiffe_id").execute();
    await db.schema.createIndex("pki_certs_revoked").on("pki_certs").column("revoked_at").execute();
    await db.schema
      .createTable("pki_ssh_certs")
      .addColumn("serial", "text", (c) => c.primaryKey())
      .addColumn("ca_id", "text", (c) => c.notNull())
      .addColumn("cert_type", "text", (c) => c.notNull())
      .addColumn("key_id", "text", (c) => c.notNull())
      .addColumn("principals", "text", (c) => c.notNull())
      .addColumn("key_fingerprint", "text", (c) => c.notNull())
      .addColumn("valid_after", "bigint", (c) => c.notNull())
      .addColumn("valid_before", "bigint", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("revoked_at", "bigint")
      .addColumn("revoke_reason", "text")
      .execute();
    await db.schema
      .createIndex("pki_ssh_certs_key")
      .on("pki_ssh_certs")
      .column("key_fingerprint")
      .execute();
    await db.schema
      .createTable("pki_ssh_revoked_keys")
      .addColumn("key_fingerprint", "text", (c) => c.primaryKey())
      .addColumn("key_blob", "text", (c) => c.notNull())
      .addColumn("revoked_at", "bigint", (c) => c.notNull())
      .addColumn("reason", "text")
      .execute();
    await db.schema
      .createTable("pki_registrations")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("spiffe_id", "text", (c) => c.notNull().unique())
      .addColumn("dns_names", "text", (c) => c.notNull())
      .addColumn("max_ttl_ms", "bigint")
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("pki_join_tokens")
      .addColumn("token_hash", "text", (c) => c.primaryKey())
      .addColumn("registration_id", "text", (c) =>
        c.notNull().references("pki_registrations.id").onDelete("cascade"),
      )
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .addColumn("used_at", "bigint")
      .execute();
  },
});
