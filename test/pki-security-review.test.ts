/**
 * Regression tests for the second PKI security review (X.509 side): a revocation is in
 * the CRL served once revoke() has returned, however a CRL build in flight interleaves
 * with it (here and in another process); join tokens are bounded like
 * `pki.join_token_ttl`, and revoking an identity burns its unused join tokens.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AppContext } from "../src/app/index.js";
import { initPki, PkiService, pkiService } from "../src/pki/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";
import { x509 } from "../src/pki/x509-lib.js";
import { opensslRequest } from "./helpers/tls.js";
import { runZt, tempDir, writeConfig } from "./helpers/zt-process.js";

const TD = "example.test";
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const crlSerials = (der: Buffer): string[] =>
  new x509.X509Crl(der).entries.map((e) => e.serialNumber.toLowerCase().replace(/^(00)+/, ""));

/**
 * Holds the rows of the first CRL query (the SELECT of revoked certificates #buildCrl
 * runs) until `release()`: the query has run — before a revocation commits — and its
 * connection is free, but the build has not finished. Counts CRL queries started (at the
 * `execute()` call, synchronously).
 */
function holdFirstCrlQuery(ctx: AppContext) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let ran!: () => void;
  const selected = new Promise<void>((r) => (ran = r));
  const state = { started: 0 };
  type Builder = { compile(): { sql: string }; execute(): Promise<unknown[]> };
  const wrap = (b: Builder): Builder =>
    new Proxy(b, {
      get(target, key) {
        const v = Reflect.get(target, key) as unknown;
        if (typeof v !== "function") return v;
        if (key === "execute") {
          return async () => {
            const sql = target.compile().sql;
            const isCrl = sql.includes("revoke_reason") && sql.includes("issuer_id");
            const first = isCrl && ++state.started === 1;
            const rows = await target.execute();
            if (first) {
              ran();
              await gate;
            }
            return rows;
          };
        }
        // Kysely builders keep their state in private fields: call on the real one.
        return (...args: unknown[]) => {
          const r = (v as (...a: unknown[]) => unknown).apply(target, args);
          return r !== null && typeof r === "object" && "compile" in r ? wrap(r as Builder) : r;
        };
      },
    });
  const db = ctx.store.db as unknown as { selectFrom: (t: string) => unknown };
  const selectFrom = db.selectFrom.bind(db);
  db.selectFrom = (t: string) => {
    const b = selectFrom(t);
    return t === "pki_certs" ? wrap(b as Builder) : b;
  };
  cleanups.push(() => {
    db.selectFrom = selectFrom;
  });
  return { state, selected, release };
}

/**
 * Watches svc.crlDer (revoke() and the event handler call it through the instance): a call
 * that starts no CRL query while the held one is still the only one is waiting for the
 * held build, so let that build go (the test would hang otherwise).
 */
function releaseWhenSharingHeldBuild(
  svc: PkiService,
  h: ReturnType<typeof holdFirstCrlQuery>,
): void {
  const original = svc.crlDer.bind(svc);
  svc.crlDer = (issuerId?: string) => {
    const before = h.state.started;
    const p = original(issuerId);
    if (before === 1 && h.state.started === 1) h.release();
    return p;
  };
}

describe("the CRL after a revocation", () => {
  it("stops a CRL build that read the store before revoke() committed from being served after revoke() returns", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    // The one service of this process (a second one would build its own CRLs too).
    const svc = await pkiService(env.ctx);
    const victim = await svc.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "t" });

    const h = holdFirstCrlQuery(env.ctx);
    releaseWhenSharingHeldBuild(svc, h);
    // GET /pki/crl: its query runs (no revocation yet) and its build is held.
    const inFlight = svc.crlDer();
    await h.selected;
    await svc.revoke({ serial: victim.serial, actor: "t" });
    expect(crlSerials(await svc.crlDer())).toContain(victim.serial);
    h.release();
    // The GET finishing now neither serves nor caches the CRL it read before the revocation.
    expect(crlSerials(await inFlight)).toContain(victim.serial);
    expect(crlSerials(await svc.crlDer())).toContain(victim.serial);
    expect(h.state.started).toBeGreaterThanOrEqual(2);
  });

  it("stops a CRL build in flight when another process's revocation is heard from being cached", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    // Two services on one store: `server` hears the revocation `cli` makes as an event only
    // (`cli` does not listen, as the CLI's does not).
    const server = await pkiService(env.ctx);
    const cli = await PkiService.open(env.ctx);
    cli.close();
    const victim = await cli.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/db`, actor: "t" });

    const h = holdFirstCrlQuery(env.ctx);
    releaseWhenSharingHeldBuild(server, h);
    const inFlight = server.crlDer();
    await h.selected;
    await cli.revoke({ serial: victim.serial, actor: "t" });
    h.release();
    await inFlight;
    expect(crlSerials(await server.crlDer())).toContain(victim.serial);
  });
});

describe("join tokens", () => {
  it("stops a join token from outliving the cap pki.join_token_ttl has (30d), naming the limit", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    await svc.addRegistration({ spiffeId: `spiffe://${TD}/web` }, "t");
    const DAY = 86_400_000;
    for (const ttl of [36_500 * DAY, 30 * DAY + 1_000, 0, -1_000, Number.NaN, Infinity]) {
      await expect(
        svc.createJoinToken(`spiffe://${TD}/web`, "t", ttl),
        String(ttl),
      ).rejects.toThrow(/join token lifetime .*at most 30d/);
    }
    const ok = await svc.createJoinToken(`spiffe://${TD}/web`, "t", 30 * DAY);
    expect(ok.expiresAtMs).toBe(env.clock.now() + 30 * DAY);
    const rows = await env.ctx.store.db
      .selectFrom("pki_join_tokens")
      .select("expires_at")
      .execute();
    expect(rows.map((r) => Number(r.expires_at))).toEqual([ok.expiresAtMs]);
  });

  it("zt cert token --ttl 36500d is refused with the limit (exit 65), no token made", async () => {
    const dir = tempDir();
    const config = writeConfig(dir, `data_dir: ./data\ntrust_domain: ${TD}\n`, {});
    const env = { ZT_MASTER_KEY: Buffer.alloc(32, 7).toString("base64") };
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    const reg = await runZt(
      ["--config", config, "cert", "registration", "add", "--spiffe-id", `spiffe://${TD}/web`],
      { env },
    );
    expect(reg.code, reg.stderr).toBe(0);
    const r = await runZt(
      ["--config", config, "cert", "token", `spiffe://${TD}/web`, "--ttl", "36500d"],
      { env },
    );
    expect(r.code).toBe(65);
    expect(r.stderr).toMatch(/^zt: error ZT_PKI_TTL_INVALID: join token lifetime .*at most 30d/);
    expect(r.stdout).not.toContain("ztjoin_");
  }, 60_000);

  it("stops an unused join token from issuing an SVID after `revoke --spiffe-id` of its identity", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    const id = `spiffe://${TD}/web`;
    const other = `spiffe://${TD}/other`;
    await svc.addRegistration({ spiffeId: id }, "t");
    await svc.addRegistration({ spiffeId: other }, "t");
    const dir = mkdtempSync(join(tmpdir(), "zt-pki-review-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const csrFor = (spiffeId: string) => {
      return opensslRequest({
        keyOut: join(dir, "k.pem"),
        out: join(dir, "r.csr"),
        subj: "/O=zt SVID",
        san: `URI:${spiffeId}`,
        csr: true,
      });
    };
    // The identity has an SVID and an unused token (say, leaked with it).
    const first = await svc.createJoinToken(id, "t");
    await svc.issueSvid({ csr: csrFor(id), auth: { kind: "join-token", token: first.token } });
    const spare = await svc.createJoinToken(id, "t");
    const unrelated = await svc.createJoinToken(other, "t");
    await svc.revoke({ spiffeId: id, actor: "t" });
    await expect(
      svc.issueSvid({ csr: csrFor(id), auth: { kind: "join-token", token: spare.token } }),
    ).rejects.toMatchObject({ code: "ZT_PKI_TOKEN_INVALID" });
    // Another registration's token is untouched.
    const ok = await svc.issueSvid({
      csr: csrFor(other),
      auth: { kind: "join-token", token: unrelated.token },
    });
    expect(ok.spiffeId).toBe(other);
    // A token made after the revocation (the operator re-enrolling the workload) works.
    const fresh = await svc.createJoinToken(id, "t");
    const again = await svc.issueSvid({
      csr: csrFor(id),
      auth: { kind: "join-token", token: fresh.token },
    });
    expect(again.spiffeId).toBe(id);
    await env.ctx.audit.flush();
    const audit = await env.ctx.store.db
      .selectFrom("audit_events")
      .select("data")
      .where("kind", "=", "svid.revoke")
      .where("outcome", "=", "success")
      .execute();
    expect(JSON.parse(String(audit[0]!.data))).toMatchObject({ join_tokens_invalidated: 1 });
  });
});
