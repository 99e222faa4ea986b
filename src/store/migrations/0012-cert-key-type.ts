import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/**
 * PKI: each issued certificate's key type (`ec-p256`, `ec-p384`, `rsa-<bits>`, `ed25519`),
 * for `zt cert list`. Neither the key nor the certificate is stored, so rows issued before
 * this column have none (null).
 */
export const certKeyType = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.alterTable("pki_certs").addColumn("key_type", "text").execute();
  },
});
