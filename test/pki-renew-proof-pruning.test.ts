/**
 * A consumed renewal proof (`pki_renew_proofs`) matters only while the SVID whose key
 * signed it can still be presented: after that SVID's notAfter a renewal with it is
 * refused anyway. The table grew by one row per key-changing renewal for ever; now each
 * row holds that SVID's notAfter and the PKI's periodic pass (the one that checks the
 * intermediate's rotation, which `zt up` runs) deletes the rows past it plus a clock-skew
 * margin. A replay while the old SVID is valid is still refused.
 *
 * Real store on SQLite and on PostgreSQL at 127.0.0.1:5432; time is a ManualClock.
 */
import { describe, expect, it } from "vitest";
import { X509Certificate } from "node:crypto";
import type { Kysely } from "kysely";
import {
  buildRenewalRequest,
  initPki,
  pkiService,
  RENEW_PROOF_SKEW_MS,
  startIntermediateRotation,
} from "../src/pki/index.js";
import { migrateStore } from "../src/store/index.js";
import { engines, openStoreMigratedUpTo, perTestTargets, type Engine } from "./store-fixture.js";
import { pkiProcessesOn } from "./helpers/pki-processes.js";

const ENGINES = await engines();

describe.each(ENGINES)("consumed renewal proofs are pruned on $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);

  async function setup() {
    const { clock, open } = pkiProcessesOn(await target(), cleanups);
    const ctx = await open();
    await initPki(ctx);
    const svc = await pkiService(ctx);
    const id = "spiffe://example.test/ns/prod/sa/pruned";
    const current = await svc.issueSvidWithNewKey({ spiffeId: id, actor: "test" });
    const request = await buildRenewalRequest(current.chainPem, current.keyPem);
    const renew = () =>
      svc.issueSvid({
        csr: request.csrPem,
        auth: {
          kind: "svid",
          certDer: new X509Certificate(current.certPem).raw,
          proof: request.proof,
        },
      });
    /** One pass of the PKI's periodic work, as `zt up` runs it. */
    const periodicPass = async () => {
      const runner = startIntermediateRotation(ctx);
      await runner.checkNow();
      await runner.stop();
    };
    const proofs = () =>
      ctx.store.db.selectFrom("pki_renew_proofs").select(["spiffe_id"]).execute();
    return { ctx, clock, current, renew, periodicPass, proofs };
  }

  it("keeps the row while the old SVID can be presented (a replay is refused) and deletes it after its notAfter plus the margin", async () => {
    const { clock, current, renew, periodicPass, proofs } = await setup();
    await renew();
    expect(await proofs()).toHaveLength(1);

    // The old SVID is still valid: the pass keeps the row, and the same request is a replay.
    clock.set(current.notAfterMs - 60_000);
    await periodicPass();
    expect(await proofs()).toHaveLength(1);
    await expect(renew()).rejects.toMatchObject({
      code: "ZT_AUTH_FAILED",
      context: { reason: "renew-proof-replayed" },
    });

    // Past notAfter but within the margin (a replica whose clock lags may still accept it).
    clock.set(current.notAfterMs + RENEW_PROOF_SKEW_MS - 1000);
    await periodicPass();
    expect(await proofs()).toHaveLength(1);

    clock.set(current.notAfterMs + RENEW_PROOF_SKEW_MS + 1000);
    await periodicPass();
    expect(await proofs()).toHaveLength(0);
    // And the old SVID renews nothing now.
    await expect(renew()).rejects.toMatchObject({
      code: "ZT_AUTH_FAILED",
      context: { reason: "cert-expired" },
    });
  });

  it("gives a row consumed before the column existed the longest SVID lifetime after its use", async () => {
    const t = await target();
    // A store as the previous version left it: migrations up to 0010, one consumed proof.
    const store = await openStoreMigratedUpTo(t, "0010-renew-proofs");
    cleanups.push(() => store.close());
    const usedAt = Date.UTC(2026, 0, 1);
    await (store.db as unknown as Kysely<Record<string, Record<string, unknown>>>)
      .insertInto("pki_renew_proofs")
      .values({
        spiffe_id: "spiffe://example.test/a",
        key_sha256: "ab",
        serial: "01",
        used_at: usedAt,
      })
      .execute();

    await migrateStore(store);
    const row = await store.db
      .selectFrom("pki_renew_proofs")
      .select(["used_at", "signer_not_after"])
      .executeTakeFirstOrThrow();
    // pki.svid_max_ttl is at most 24h: the SVID that signed it ended by then.
    expect(Number(row.signer_not_after)).toBe(usedAt + 24 * 3_600_000);
  });
});
