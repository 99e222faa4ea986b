import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/**
 * PKI: the renewal proofs consumed, one row per (SPIFFE ID, new key). A proof signs only
 * the CSR, so the same request verifies again; the primary key makes its consumption a
 * single insert that only one of any number of concurrent copies wins.
 */
export const renewProofs = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable("pki_renew_proofs")
      .addColumn("spiffe_id", "text", (c) => c.notNull())
      .addColumn("key_sha256", "text", (c) => c.notNull())
      .addColumn("serial", "text", (c) => c.notNull())
      .addColumn("used_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("pki_renew_proofs_pk", ["spiffe_id", "key_sha256"])
      .execute();
  },
});
