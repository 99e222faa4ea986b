import type { Insertable } from "kysely";
import type { Store } from "../store/index.js";
import type { PkiCertsTable } from "../store/tables-pki.js";

/**
 * Group commit for issued certificates: every issuance waits until its row is durable
 * (revocation by serial needs it), but rows issued while a write is in flight share
 * the next transaction, so one fsync covers many concurrent issuances.
 */
export class CertRecorder {
  readonly #store: Store;
  readonly #maxBatch: number;
  #pending: { row: Insertable<PkiCertsTable>; done: (e?: unknown) => void }[] = [];
  #writing = false;

  constructor(store: Store, maxBatch = 500) {
    this.#store = store;
    this.#maxBatch = maxBatch;
  }

  record(row: Insertable<PkiCertsTable>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ row, done: (e) => (e === undefined ? resolve() : reject(e)) });
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending.splice(0, this.#maxBatch);
        try {
          await this.#store.db
            .insertInto("pki_certs")
            .values(batch.map((b) => b.row))
            .execute();
          for (const b of batch) b.done();
        } catch (e) {
          for (const b of batch) b.done(e ?? new Error("insert failed"));
        }
      }
    } finally {
      this.#writing = false;
    }
  }
}
