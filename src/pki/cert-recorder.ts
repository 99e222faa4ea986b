import type { Insertable } from "kysely";
import { ZtError } from "../core/errors.js";
import type { Store } from "../store/index.js";
import type { PkiCertsTable } from "../store/tables-pki.js";

interface PendingRow {
  row: Insertable<PkiCertsTable>;
  /** A renewal: recorded only if this serial is still unrevoked when the row commits. */
  renews: string | undefined;
  done: (e?: unknown) => void;
}

/**
 * Group commit for issued certificates: every issuance waits until its row is durable
 * (revocation by serial needs it), but rows issued while a write is in flight share
 * the next transaction, so one fsync covers many concurrent issuances.
 *
 * A renewal names the certificate it renews. In the transaction that records the new
 * row, the old row is locked (a no-op UPDATE) on the condition that it is unrevoked;
 * a revocation that got there first makes the renewal fail with ZT_PKI_REVOKED, and
 * one that comes later waits for this commit and then sees the new row
 * (`PkiService.revoke` re-scans by SPIFFE ID until nothing is left).
 */
export class CertRecorder {
  readonly #store: Store;
  readonly #maxBatch: number;
  #pending: PendingRow[] = [];
  #writing = false;

  constructor(store: Store, maxBatch = 500) {
    this.#store = store;
    this.#maxBatch = maxBatch;
  }

  /** Resolves once `row` is durable; rejects with ZT_PKI_REVOKED if `renews` was revoked first. */
  record(row: Insertable<PkiCertsTable>, renews?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ row, renews, done: (e) => (e === undefined ? resolve() : reject(e)) });
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending.splice(0, this.#maxBatch);
        try {
          const refused = await this.#write(batch);
          for (const b of batch) {
            b.done(
              refused.has(b)
                ? new ZtError("ZT_PKI_REVOKED", "the SVID being renewed has been revoked", {
                    reason: "cert-revoked",
                  })
                : undefined,
            );
          }
        } catch (e) {
          for (const b of batch) b.done(e ?? new Error("insert failed"));
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  /** Writes a batch; returns the renewals refused because their old certificate is revoked. */
  async #write(batch: PendingRow[]): Promise<Set<PendingRow>> {
    const parents = [...new Set(batch.flatMap((b) => (b.renews === undefined ? [] : [b.renews])))];
    if (parents.length === 0) {
      await this.#store.db
        .insertInto("pki_certs")
        .values(batch.map((b) => b.row))
        .execute();
      return new Set();
    }
    return this.#store.db.transaction().execute(async (trx) => {
      const live = await trx
        .updateTable("pki_certs")
        .set((eb) => ({ revoked_at: eb.ref("revoked_at") }))
        .where("serial", "in", parents)
        .where("revoked_at", "is", null)
        .returning("serial")
        .execute();
      const liveSet = new Set(live.map((r) => r.serial));
      const refused = new Set(
        batch.filter((b) => b.renews !== undefined && !liveSet.has(b.renews)),
      );
      const rows = batch.filter((b) => !refused.has(b)).map((b) => b.row);
      if (rows.length > 0) await trx.insertInto("pki_certs").values(rows).execute();
      return refused;
    });
  }
}
