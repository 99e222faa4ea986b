/**
 * A renewal proof (the current SVID's key signing the new CSR) is good for one
 * certificate: sent again it is refused as `renew-proof-replayed`. The check was a read
 * ("has this key a certificate already?") followed, later, by the insert of the new
 * certificate, so copies of one request arriving together all passed the read and were
 * all certified. Now the proof is consumed by an insert keyed on (SPIFFE ID, new key) in
 * the transaction that records the certificate: one copy wins, the others are refused.
 *
 * Real peers: two control-plane replicas (two AppContexts, each with its own store handle
 * and its own API server on a loopback port) on one store, on SQLite and on PostgreSQL at
 * 127.0.0.1:5432; the request is what `zt cert renew` builds (buildRenewalRequest), sent
 * over HTTP with fetch.
 */
import { describe, expect, it } from "vitest";
import { createHash, createPublicKey } from "node:crypto";
import { buildRenewalRequest, initPki, pkiService } from "../src/pki/index.js";
import { createApiServer } from "../src/api/index.js";
import { AfterFirstRead } from "./helpers/after-first-read.js";
import { auditRows } from "./helpers/audit-rows.js";
import { engines, perTestTargets, type Engine } from "./store-fixture.js";
import { pkiProcessesOn } from "./helpers/pki-processes.js";

const ENGINES = await engines();
/** Copies of the one renewal request, sent at once. */
const COPIES = 8;

describe.each(ENGINES)("a renewal proof replayed concurrently on $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);

  /** Two replicas on one store, each with its API on a loopback port, and one SVID to renew. */
  async function setup() {
    const { open } = pkiProcessesOn(await target(), cleanups);
    const first = await open();
    await initPki(first);
    const replicas = [first, await open()] as const;
    const bases: string[] = [];
    for (const ctx of replicas) {
      await pkiService(ctx);
      const api = await createApiServer(ctx);
      cleanups.push(() => api.close());
      await api.listen({ host: "127.0.0.1", port: 0 });
      const addr = api.server.address();
      bases.push(`http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`);
    }
    const id = "spiffe://example.test/ns/prod/sa/replayed";
    const current = await (
      await pkiService(first)
    ).issueSvidWithNewKey({ spiffeId: id, actor: "test" });
    // What `zt cert renew` sends: a new key's CSR and the current key's proof over it.
    const request = await buildRenewalRequest(current.chainPem, current.keyPem);
    const body = JSON.stringify({
      csr: request.csrPem,
      renew: { cert: current.chainPem, proof: request.proof.toString("base64") },
    });
    const send = async (base: string) => {
      const res = await fetch(`${base}/api/v1/svid`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const json = (await res.json()) as { error?: { code: string; reason?: string } };
      return { status: res.status, error: json.error };
    };
    /** Certificates zt holds for the renewal's new key. */
    const certified = () =>
      first.store.db
        .selectFrom("pki_certs")
        .select("serial")
        .where("spiffe_id", "=", id)
        .where("key_sha256", "=", keySha256(request.keyPem))
        .execute();
    return { replicas, bases, send, certified };
  }

  it("certifies the new key once: of copies sent at once, one succeeds and every other is refused as a replay", async () => {
    const { bases, send, certified } = await setup();
    const answers = await Promise.all(
      Array.from({ length: COPIES }, (_, i) => send(bases[i % bases.length]!)),
    );
    const won = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status !== 201);
    expect(won).toHaveLength(1);
    expect(refused).toHaveLength(COPIES - 1);
    for (const r of refused) {
      expect(r).toMatchObject({
        status: 401,
        error: { code: "ZT_AUTH_FAILED", reason: "renew-proof-replayed" },
      });
    }
    expect(await certified()).toHaveLength(1);
  });

  it("refuses a copy that was checked before another replica certified the key", async () => {
    const { replicas, bases, send, certified } = await setup();
    // Replica A's store handle: right after A has looked for a certificate of the new key
    // (and found none), the same request goes to replica B and is answered in full.
    let meanwhile: Awaited<ReturnType<typeof send>> | undefined;
    const hook = new AfterFirstRead("pki_certs", async () => {
      meanwhile = await send(bases[1]!);
    });
    const store = replicas[0].store as { db: (typeof replicas)[0]["store"]["db"] };
    store.db = replicas[0].store.db.withPlugin(hook);

    const late = await send(bases[0]!);
    expect(meanwhile).toMatchObject({ status: 201 });
    expect(late).toMatchObject({
      status: 401,
      error: { code: "ZT_AUTH_FAILED", reason: "renew-proof-replayed" },
    });
    expect(await certified()).toHaveLength(1);
    // The refusal is audited as other refusals of a renewal are.
    const audited = await auditRows(replicas[0], "svid.issue", ["outcome", "reason"], {
      outcome: "failure",
    });
    expect(audited).toEqual([{ outcome: "failure", reason: "renew-proof-replayed" }]);
  });
});

/** SHA-256 (hex) of the new key's SubjectPublicKeyInfo DER, as pki_certs.key_sha256 holds it. */
function keySha256(keyPem: string): string {
  const spki = createPublicKey(keyPem).export({ format: "der", type: "spki" });
  return createHash("sha256").update(spki).digest("hex");
}
