import { sql, type Kysely, type Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/** The longest SVID lifetime zt allows (`pki.svid_max_ttl` is bounded by 24h). */
const SVID_LIFETIME_BOUND_MS = 24 * 3_600_000;

/**
 * PKI: when each consumed renewal proof stops mattering, `signer_not_after`: the notAfter of
 * the SVID whose key signed it (a renewal with that SVID is refused after it anyway), so
 * the rows can be pruned. A row consumed before this column existed gets an upper bound:
 * its use plus the longest SVID lifetime, as the SVID that signed it was valid then.
 */
export const renewProofExpiry = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .alterTable("pki_renew_proofs")
      .addColumn("signer_not_after", "bigint", (c) => c.notNull().defaultTo(0))
      .execute();
    await sql`UPDATE pki_renew_proofs SET signer_not_after = used_at + ${sql.lit(SVID_LIFETIME_BOUND_MS)}`.execute(
      db,
    );
    await db.schema
      .createIndex("pki_renew_proofs_signer_not_after")
      .on("pki_renew_proofs")
      .column("signer_not_after")
      .execute();
  },
});
