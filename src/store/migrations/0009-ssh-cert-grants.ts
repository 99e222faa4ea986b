import type { Kysely, Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/**
 * PKI: the grants each SSH user certificate relied on, one row per grant, so the KRL lists
 * the certificate when any of them is revoked. (Its key id names them too, at most 8; a
 * certificate signed before this table, whose key id named one grant, is still read from
 * its key id.)
 */
export const sshCertGrants = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable("pki_ssh_cert_grants")
      .addColumn("serial", "text", (c) => c.notNull())
      .addColumn("grant_id", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("pki_ssh_cert_grants_pk", ["serial", "grant_id"])
      .execute();
    await db.schema
      .createIndex("pki_ssh_cert_grants_grant")
      .on("pki_ssh_cert_grants")
      .column("grant_id")
      .execute();
  },
});
