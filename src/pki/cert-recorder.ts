import type { Insertable } from "kysely";
import { ZtError } from "../core/errors.js";
import type { Store } from "../store/index.js";
import type { PkiCertsTable } from "../store/tables-pki.js";

/** What a renewal asks of the transaction that records its certificate. */
export interface RecordConditions {
  /** The serial renewed: the row is recorded only if it is still unrevoked then. */
  renews?: string | undefined;
  /**
   * The request was authorised by a renewal proof: the row is recorded only if it is the
   * first to consume the proof for (spiffe_id, key_sha256), in `pki_renew_proofs`.
   * `signerNotAfterMs`: the notAfter of the SVID whose key signed the proof, kept so the
   * consumed proof can be pruned once that SVID can no longer be presented.
   */
  consumesProof?: { signerNotAfterMs: number } | undefined;
}

interface PendingRow extends RecordConditions {
  row: Insertable<PkiCertsTable>;
  done: (e?: unknown) => void;
}

/** The refusal of a renewal proof that has been used already (one message for every path). */
export function renewProofReplayed(): ZtError {
  return new ZtError(
    "ZT_AUTH_FAILED",
    "this renewal proof was used already (its key has a certificate): make a new key and CSR, or renew with the certificate of that key",
    { reason: "renew-proof-replayed" },
  );
}

function renewedRevoked(): ZtError {
  return new ZtError("ZT_PKI_REVOKED", "the SVID being renewed has been revoked", {
    reason: "cert-revoked",
  });
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
 *
 * A renewal by proof also consumes the proof in that transaction: an insert into
 * `pki_renew_proofs`, whose primary key lets exactly one copy of a request through,
 * whichever process or replica the copies reach (the others: `renew-proof-replayed`).
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

  /**
   * Resolves once `row` is durable; rejects with ZT_PKI_REVOKED if `renews` was revoked
   * first, or ZT_AUTH_FAILED (`renew-proof-replayed`) if the proof was consumed first.
   */
  record(row: Insertable<PkiCertsTable>, conditions: RecordConditions = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({
        row,
        ...conditions,
        done: (e) => (e === undefined ? resolve() : reject(e)),
      });
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
          for (const b of batch) b.done(refused.get(b));
        } catch (e) {
          for (const b of batch) b.done(e ?? new Error("insert failed"));
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  /** Writes a batch; returns the rows refused, each with why. */
  async #write(batch: PendingRow[]): Promise<Map<PendingRow, ZtError>> {
    const parents = [...new Set(batch.flatMap((b) => (b.renews === undefined ? [] : [b.renews])))];
    if (parents.length === 0 && !batch.some((b) => b.consumesProof)) {
      await this.#store.db
        .insertInto("pki_certs")
        .values(batch.map((b) => b.row))
        .execute();
      return new Map();
    }
    return this.#store.db.transaction().execute(async (trx) => {
      const refused = new Map<PendingRow, ZtError>();
      if (parents.length > 0) {
        const live = await trx
          .updateTable("pki_certs")
          .set((eb) => ({ revoked_at: eb.ref("revoked_at") }))
          .where("serial", "in", parents)
          .where("revoked_at", "is", null)
          .returning("serial")
          .execute();
        const liveSet = new Set(live.map((r) => r.serial));
        for (const b of batch)
          if (b.renews !== undefined && !liveSet.has(b.renews)) refused.set(b, renewedRevoked());
      }
      // Copies in this batch: the first is the one that consumes the proof.
      const proofKey = (b: PendingRow) => `${b.row.spiffe_id}\0${b.row.key_sha256}`;
      const claims = new Map<string, PendingRow>();
      for (const b of batch) {
        if (!b.consumesProof || refused.has(b)) continue;
        if (claims.has(proofKey(b))) refused.set(b, renewProofReplayed());
        else claims.set(proofKey(b), b);
      }
      if (claims.size > 0) {
        const consumed = await trx
          .insertInto("pki_renew_proofs")
          .values(
            [...claims.values()].map((b) => ({
              spiffe_id: b.row.spiffe_id,
              key_sha256: b.row.key_sha256,
              serial: b.row.serial,
              used_at: b.row.created_at,
              signer_not_after: b.consumesProof!.signerNotAfterMs,
            })),
          )
          // Another transaction's copy got there first (or waits to commit: PostgreSQL
          // makes this insert wait for it and then skips the row).
          .onConflict((oc) => oc.columns(["spiffe_id", "key_sha256"]).doNothing())
          .returning(["spiffe_id", "key_sha256"])
          .execute();
        const won = new Set(consumed.map((r) => `${r.spiffe_id}\0${r.key_sha256}`));
        for (const [key, b] of claims) if (!won.has(key)) refused.set(b, renewProofReplayed());
      }
      const rows = batch.filter((b) => !refused.has(b)).map((b) => b.row);
      if (rows.length > 0) await trx.insertInto("pki_certs").values(rows).execute();
      return refused;
    });
  }
}
