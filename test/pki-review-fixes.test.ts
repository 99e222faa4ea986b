/**
 * Regression tests for the PKI / key-handling review: revocation that sticks against
 * renewal (across processes, and against a renewal in flight, on SQLite and PostgreSQL),
 * IP SANs, intermediate rotation and expiry, the deny list at start-up, private files,
 * the master key's encoding, and the signing-key race.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import { writePrivateFile } from "../src/core/secure-files.js";
import type { EventHandler, ZtEvent } from "../src/events/index.js";
import { KeyStore } from "../src/keys/key-store.js";
import { loadMasterKey } from "../src/keys/master-key.js";
import {
  buildRenewalRequest,
  initPki,
  PkiService,
  pkiService,
  type IssuedSvid,
} from "../src/pki/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";
import {
  ADMIN_URL,
  createTestDatabase,
  postgresAvailable,
  waitFor,
  type TestDatabase,
} from "./store-fixture.js";
import { opensslRequest } from "./helpers/tls.js";

const TD = "example.test";
const pgAvailable = await postgresAvailable();

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Two processes' worth of AppContext (say the server and the CLI) on one store. */
async function twoContexts(
  options: { databaseUrl?: string; pki?: Record<string, unknown>; clock?: ManualClock } = {},
): Promise<{ a: AppContext; b: AppContext }> {
  const dir = mkdtempSync(join(tmpdir(), "zt-pki-fix-"));
  const key = randomBytes(32).toString("base64");
  const open = () =>
    openAppContext(
      validateConfig(
        {
          data_dir: join(dir, "data"),
          trust_domain: TD,
          pki: options.pki ?? {},
          ...(options.databaseUrl ? { database_url: options.databaseUrl } : {}),
        },
        join(dir, "zt.yaml"),
      ),
      { env: { ZT_MASTER_KEY: key }, ...(options.clock ? { clock: options.clock } : {}) },
    );
  const a = await open();
  const b = await open();
  cleanups.push(async () => {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { a, b };
}

async function renewalOf(svid: IssuedSvid & { keyPem: string }) {
  const req = await buildRenewalRequest(svid.chainPem, svid.keyPem);
  return {
    req,
    auth: { kind: "svid" as const, certDer: req.currentCertDer, proof: req.proof },
  };
}

const derOf = (pem: string) => new X509Certificate(pem).raw;

async function validSerials(svc: PkiService, spiffeId: string): Promise<string[]> {
  return (await svc.listCerts())
    .filter((c) => c.spiffe_id === spiffeId && c.status === "valid")
    .map((c) => c.serial);
}

describe("revocation sticks: a revoked SVID cannot renew itself", () => {
  it("stops a revoked SVID from renewing itself when the revocation came from another process whose event this one has not heard", async () => {
    const { a, b } = await twoContexts();
    await initPki(a);
    const server = await pkiService(a);
    const cli = await pkiService(b);
    const id = `spiffe://${TD}/ns/stolen`;
    const current = await server.issueSvidWithNewKey({ spiffeId: id, actor: "t" });
    const { req, auth } = await renewalOf(current);
    await cli.revoke({ spiffeId: id, reason: "key-compromise", actor: "operator" });
    // Neither event bus runs: the server's deny list has not heard of the revocation…
    expect(server.verifyClientCertificate(req.currentCertDer, a.clock.now()).ok).toBe(true);
    // …but the store has, and the store decides.
    await expect(server.issueSvid({ csr: req.csrPem, auth })).rejects.toMatchObject({
      code: "ZT_PKI_REVOKED",
      context: { reason: "cert-revoked" },
    });
    await expect(
      server.issueSvid({
        csr: req.csrPem,
        auth: { kind: "svid", certDer: req.currentCertDer, possessionProven: true },
      }),
    ).rejects.toMatchObject({ code: "ZT_PKI_REVOKED" });
    expect(await validSerials(server, id)).toEqual([]);
    // What the store said is now on this process's deny list too.
    expect(server.verifyClientCertificate(req.currentCertDer, a.clock.now())).toEqual({
      ok: false,
      reason: "cert-revoked",
    });
  });

  it("stops a renewal racing `revoke --spiffe-id` from leaving the identity a valid SVID (SQLite)", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    const id = `spiffe://${TD}/ns/compromised`;
    // Start the revocation at every point of the renewal's progress.
    for (let ticks = 0; ticks < 12; ticks++) {
      const current = await svc.issueSvidWithNewKey({ spiffeId: id, actor: "t" });
      const { req, auth } = await renewalOf(current);
      const renewal = svc.issueSvid({ csr: req.csrPem, auth }).then(
        (r) => r,
        (e: unknown) => e,
      );
      for (let i = 0; i < ticks; i++) await new Promise((r) => setImmediate(r));
      const revoked = await svc.revoke({ spiffeId: id, reason: "key-compromise", actor: "op" });
      const outcome = await renewal;
      if (outcome instanceof ZtError) {
        expect(outcome.code).toBe("ZT_PKI_REVOKED");
      } else {
        const issued = outcome as IssuedSvid;
        expect(revoked).toContain(issued.serial);
        expect(svc.verifyClientCertificate(derOf(issued.certPem), env.ctx.clock.now())).toEqual({
          ok: false,
          reason: "cert-revoked",
        });
      }
      expect(await validSerials(svc, id), `revocation started after ${ticks} ticks`).toEqual([]);
    }
  });
});

describe.skipIf(!pgAvailable)("revocation sticks on PostgreSQL (two replicas)", () => {
  let db: TestDatabase;
  let a: AppContext;
  let b: AppContext;
  let client: pg.Client;
  const id = `spiffe://${TD}/ns/pg`;

  beforeAll(async () => {
    db = await createTestDatabase();
    const dir = mkdtempSync(join(tmpdir(), "zt-pki-fix-pg-"));
    const key = randomBytes(32).toString("base64");
    const open = (name: string) =>
      openAppContext(
        validateConfig(
          { data_dir: join(dir, name), database_url: db.url, trust_domain: TD },
          join(dir, `${name}.yaml`),
        ),
        { env: { ZT_MASTER_KEY: key } },
      );
    a = await open("a");
    b = await open("b");
    await initPki(a);
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
  }, 120_000);

  afterAll(async () => {
    await client?.end().catch(() => undefined);
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  /** Waits until some statement on the test database is blocked on a lock. */
  async function someoneWaitsForALock(): Promise<void> {
    const admin = new pg.Client({ connectionString: ADMIN_URL });
    await admin.connect();
    try {
      await waitFor(async () => {
        const r = await admin.query<{ n: string }>(
          `SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
            WHERE NOT l.granted AND s.datname = $1`,
          [db.name],
        );
        return Number(r.rows[0]!.n) > 0;
      }, "a statement waiting for a row lock");
    } finally {
      await admin.end();
    }
  }

  it("stops `revoke --spiffe-id` from missing the new SVID of a renewal committing while it runs", async () => {
    const sa = await pkiService(a);
    const sb = await pkiService(b);
    const current = await sa.issueSvidWithNewKey({ spiffeId: id, actor: "t" });
    const row = await a.store.db
      .selectFrom("pki_certs")
      .selectAll()
      .where("serial", "=", current.serial)
      .executeTakeFirstOrThrow();
    // A renewal in flight, as CertRecorder writes it: lock the old row, insert the new one.
    const renewed = randomBytes(16).toString("hex").replace(/^0/, "1");
    await client.query("BEGIN");
    await client.query(
      "UPDATE pki_certs SET revoked_at = revoked_at WHERE serial = $1 AND revoked_at IS NULL",
      [current.serial],
    );
    await client.query(
      `INSERT INTO pki_certs (serial, issuer_id, spiffe_id, dns_names, not_before, not_after,
         created_at, key_sha256, requested_by, revoked_at, revoke_reason)
       VALUES ($1, $2, $3, '[]', $4, $5, $6, 'x', $7, NULL, NULL)`,
      [renewed, row.issuer_id, id, row.not_before, row.not_after, row.created_at, `svid:${id}`],
    );
    const revoking = sb.revoke({ spiffeId: id, reason: "key-compromise", actor: "op" });
    await someoneWaitsForALock();
    await client.query("COMMIT");
    const serials = await revoking;
    expect(serials).toEqual(expect.arrayContaining([current.serial, renewed]));
    expect(await validSerials(sb, id)).toEqual([]);
  });

  it("stops a renewal from committing after a concurrent revocation of the SVID it renews", async () => {
    const sa = await pkiService(a);
    const current = await sa.issueSvidWithNewKey({ spiffeId: id, actor: "t" });
    const { req, auth } = await renewalOf(current);
    // A revocation in flight (another replica's transaction, not yet committed).
    await client.query("BEGIN");
    await client.query(
      "UPDATE pki_certs SET revoked_at = $1, revoke_reason = 'key-compromise' WHERE spiffe_id = $2 AND revoked_at IS NULL",
      [Date.now(), id],
    );
    const renewal = sa.issueSvid({ csr: req.csrPem, auth }).then(
      (r) => r,
      (e: unknown) => e,
    );
    await someoneWaitsForALock();
    await client.query("COMMIT");
    expect(await renewal).toMatchObject({ code: "ZT_PKI_REVOKED" });
    expect(await validSerials(sa, id)).toEqual([]);
  });

  it("stops renewals on one replica racing revocations on the other from leaving a valid SVID", async () => {
    const sa = await pkiService(a);
    const sb = await pkiService(b);
    const raceId = `spiffe://${TD}/ns/pg-race`;
    for (let round = 0; round < 6; round++) {
      const current = await sa.issueSvidWithNewKey({ spiffeId: raceId, actor: "t" });
      const { req, auth } = await renewalOf(current);
      const [outcome] = await Promise.all([
        sa.issueSvid({ csr: req.csrPem, auth }).then(
          (r) => r,
          (e: unknown) => e,
        ),
        sb.revoke({ spiffeId: raceId, reason: "key-compromise", actor: "op" }),
      ]);
      if (outcome instanceof ZtError) expect(outcome.code).toBe("ZT_PKI_REVOKED");
      expect(await validSerials(sb, raceId), `round ${round}`).toEqual([]);
    }
  });
});

describe("IP SANs are checked and signed as the same address", () => {
  const openssl = (pem: string) =>
    execFileSync("openssl", ["x509", "-noout", "-ext", "subjectAltName"], {
      input: pem,
    }).toString();

  it("stops an IPv6 SAN with an embedded IPv4 part from being signed as another address (openssl reads back the requested one)", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    const cases: [string, string, string][] = [
      ["::ffff:10.0.0.1", "::ffff:a00:1", "IP Address:0:0:0:0:0:FFFF:A00:1"],
      ["::1.2.3.4", "::102:304", "IP Address:0:0:0:0:0:0:102:304"],
      ["64:ff9b::192.0.2.33", "64:ff9b::c000:221", "IP Address:64:FF9B:0:0:0:0:C000:221"],
    ];
    for (const [asked, canonical, printed] of cases) {
      const r = await svc.issueSvidWithNewKey({
        spiffeId: `spiffe://${TD}/web`,
        dnsNames: [asked],
        actor: "t",
      });
      expect(r.dnsNames).toEqual([canonical]);
      expect(openssl(r.certPem)).toContain(printed);
    }
    await expect(
      svc.issueSvidWithNewKey({
        spiffeId: `spiffe://${TD}/web`,
        dnsNames: ["fe80::1%eth0"],
        actor: "t",
      }),
    ).rejects.toMatchObject({ code: "ZT_BAD_REQUEST", context: { reason: "ip-invalid" } });
  });

  it("stops the registration allow-list from approving one address while the certificate names another; renewal keeps the address", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    const id = `spiffe://${TD}/db`;
    await svc.addRegistration({ spiffeId: id, dnsNames: ["::FFFF:10.0.0.5"] }, "t");
    expect((await svc.listRegistrations())[0]!.dns_names).toEqual(["::ffff:a00:5"]);
    const dir = mkdtempSync(join(tmpdir(), "zt-pki-fix-csr-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const csrFor = (san: string) => {
      return opensslRequest({
        keyOut: join(dir, "k.pem"),
        out: join(dir, "r.csr"),
        subj: "/O=zt SVID",
        san: `URI:${id},${san}`,
        csr: true,
      });
    };
    // The allowed address, however written in the request, lands in the certificate as itself.
    const { token } = await svc.createJoinToken(id, "t");
    const issued = await svc.issueSvid({
      csr: csrFor("IP:::ffff:10.0.0.5"),
      dnsNames: ["::ffff:10.0.0.5"],
      auth: { kind: "join-token", token },
    });
    const key = readFileSync(join(dir, "k.pem"), "utf8");
    expect(openssl(issued.certPem)).toContain("IP Address:0:0:0:0:0:FFFF:A00:5");
    // Another address is refused.
    const { token: t2 } = await svc.createJoinToken(id, "t");
    await expect(
      svc.issueSvid({ csr: csrFor("IP:::ffff:10.0.0.6"), auth: { kind: "join-token", token: t2 } }),
    ).rejects.toMatchObject({ code: "ZT_PKI_SAN_NOT_ALLOWED" });
    // Renewal (the CSR copies the certificate's SANs) keeps the address.
    const { req, auth } = await renewalOf({ ...issued, keyPem: key });
    const renewed = await svc.issueSvid({ csr: req.csrPem, auth });
    expect(openssl(renewed.certPem)).toContain("IP Address:0:0:0:0:0:FFFF:A00:5");
  });
});

describe("intermediate rotation and expiry", () => {
  it("stops a running server from signing with, and trusting only, the intermediate another process retired", async () => {
    const { a, b } = await twoContexts();
    await initPki(a);
    const server = await pkiService(a);
    const cli = await pkiService(b);
    await a.events.start();
    await b.events.start();
    const fresh = await cli.rotateIntermediate("operator");
    await waitFor(() => server.cas.activeIntermediate.id === fresh, "the server to reload its CAs");
    const newInt = cli.cas.activeIntermediate.node;
    const fromServer = await server.issueSvidWithNewKey({
      spiffeId: `spiffe://${TD}/b`,
      actor: "t",
    });
    expect(new X509Certificate(fromServer.certPem).verify(newInt.publicKey)).toBe(true);
    const fromCli = await cli.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/a`, actor: "t" });
    expect(server.verifyClientCertificate(derOf(fromCli.certPem), Date.now())).toMatchObject({
      ok: true,
    });
  });

  it("stops issuing a dead-on-arrival SVID once the intermediate has expired (or has under a minute left)", async () => {
    const env = await openPkiTestContext({ trustDomain: TD, pki: { intermediate_ttl: "2h" } });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const svc = await pkiService(env.ctx);
    const expiresAt = svc.cas.activeIntermediate.notAfterMs;
    for (const at of [expiresAt - 30_000, expiresAt + 3_600_000]) {
      env.clock.set(at);
      await expect(
        svc.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "t" }),
      ).rejects.toMatchObject({
        code: "ZT_PKI_NOT_INITIALISED",
        context: { reason: "ca-expired" },
      });
    }
    // What the error tells the operator to do, `zt init` (another process), heals it.
    const init = await PkiService.open(env.ctx, { create: true });
    init.close();
    const r = await svc.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "t" });
    expect(r.notAfterMs).toBeGreaterThan(env.clock.now());
    expect(svc.verifyClientCertificate(derOf(r.certPem), env.clock.now())).toMatchObject({
      ok: true,
    });
  });

  it("reloads an intermediate rotated elsewhere before refusing: issues a valid SVID from it", async () => {
    const clock = new ManualClock(Date.now());
    const { a, b } = await twoContexts({ clock, pki: { intermediate_ttl: "2h" } });
    await initPki(a);
    const server = await pkiService(a);
    clock.advance(3_600_000);
    await (await pkiService(b)).rotateIntermediate("operator"); // no event bus: the server never hears
    clock.advance(5_400_000); // the server's intermediate has expired, the new one has not
    const r = await server.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "t" });
    expect(r.notAfterMs).toBeGreaterThan(clock.now());
    expect(server.verifyClientCertificate(derOf(r.certPem), clock.now())).toMatchObject({
      ok: true,
    });
  });
});

describe("the deny list at start-up", () => {
  it("stops a revocation heard while the deny list loads from being lost", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    await initPki(env.ctx);
    const { ctx } = env;
    // Capture subscribers; deliver a revocation the moment the deny list is being read.
    const handlers: EventHandler[] = [];
    const subscribe = ctx.events.subscribe.bind(ctx.events);
    ctx.events.subscribe = (h) => {
      handlers.push(h);
      const off = subscribe(h);
      return () => {
        handlers.splice(handlers.indexOf(h), 1);
        off();
      };
    };
    const db = ctx.store.db;
    const selectFrom = db.selectFrom.bind(db) as (t: string) => unknown;
    let delivered = false;
    (db as unknown as { selectFrom: (t: string) => unknown }).selectFrom = (t: string) => {
      if (t === "pki_certs" && !delivered) {
        delivered = true;
        const e: ZtEvent = {
          seq: 1,
          ts: ctx.clock.now(),
          kind: "cert.revoked",
          data: { kind: "x509", serials: ["abc123"], not_after: [ctx.clock.now() + 3_600_000] },
        };
        for (const h of [...handlers]) h(e);
      }
      return selectFrom(t);
    };
    const svc = await PkiService.open(ctx);
    cleanups.push(() => svc.close());
    expect(delivered).toBe(true);
    expect(svc.isRevoked("abc123")).toBe(true);
  });
});

describe("private files", () => {
  const root = process.getuid?.() === 0;

  it("stops a file or symlink planted at the old predictable temp name from receiving the secret", () => {
    const dir = mkdtempSync(join(tmpdir(), "zt-priv-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "svid.key");
    const victim = join(dir, "victim");
    symlinkSync(victim, `${path}.tmp-${process.pid}`);
    writePrivateFile(path, "SECRET");
    expect(existsSync(victim)).toBe(false);
    expect(readFileSync(path, "utf8")).toBe("SECRET");
    const st = lstatSync(path);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    // No temp file is left behind.
    expect(readdirSync(dir).sort()).toEqual(["svid.key", "svid.key.tmp-" + process.pid].sort());
  });

  it("refuses a key directory writable by group or others", () => {
    const dir = mkdtempSync(join(tmpdir(), "zt-priv-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    chmodSync(dir, 0o777);
    expect(() => writePrivateFile(join(dir, "k"), "SECRET")).toThrow(
      expect.objectContaining({ code: "ZT_FILE_PERMISSIONS" }),
    );
    expect(readdirSync(dir)).toEqual([]);
  });

  it.skipIf(!root)(
    "stops a key being written into a directory another user owns (and could swap files in)",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "zt-priv-"));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const out = join(dir, "out");
      mkdirSync(out, { mode: 0o755 });
      const nobody = Number(execFileSync("id", ["-u", "nobody"]).toString());
      chownSync(out, nobody, nobody);
      // What the reviewer's attacker did: a world-writable file at the predictable name.
      writeFileSync(join(out, `svid.key.tmp-${process.pid}`), "", { mode: 0o666 });
      expect(() => writePrivateFile(join(out, "svid.key"), "SECRET")).toThrow(
        expect.objectContaining({ code: "ZT_FILE_PERMISSIONS" }),
      );
      expect(existsSync(join(out, "svid.key"))).toBe(false);
      expect(readFileSync(join(out, `svid.key.tmp-${process.pid}`), "utf8")).toBe("");
      expect(statSync(out).uid).toBe(nobody);
    },
  );
});

describe("the master key", () => {
  it("stops a passphrase of base64 length from being taken as the 32-byte master key", () => {
    const dataDir = mkdtempSync(join(tmpdir(), "zt-mk-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const key = randomBytes(32);
    const b64 = key.toString("base64");
    // The 43rd character carries 2 padding bits: Node ignores them, a canonical encoding has them 0.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const sloppy = `${b64.slice(0, 42)}${alphabet[alphabet.indexOf(b64[42]!) | 1]}=`;
    const refused = [
      "correcthorsebatterystaplecorrecthorsebatter",
      "a".repeat(43),
      "my-zt-master-key_for_prod-cluster-2024-xyz!",
      b64.slice(0, 43), // unpadded
      `${Buffer.alloc(32, 0xff).toString("base64url")}=`, // URL-safe alphabet
      sloppy,
      "0".repeat(63),
    ];
    expect(Buffer.from(sloppy, "base64").equals(key)).toBe(true); // what made it dangerous
    for (const v of refused) {
      expect(() => loadMasterKey({ dataDir, envValue: v }), v).toThrow(
        expect.objectContaining({
          code: "ZT_CONFIG_INVALID",
          message: expect.stringMatching(/^ZT_MASTER_KEY: /),
        }),
      );
    }
    for (const v of [b64, ` ${b64}\n`, key.toString("hex")]) {
      expect(() => loadMasterKey({ dataDir, envValue: v })).not.toThrow();
    }
    // The key file zt writes itself is accepted when read back.
    loadMasterKey({ dataDir, create: true });
    expect(() => loadMasterKey({ dataDir })).not.toThrow();
  });
});

describe("signing keys", () => {
  it("stops replicas that raced to create the first key, and processes started later, from signing with different keys", async () => {
    const env = await openPkiTestContext({ trustDomain: TD });
    cleanups.push(env.cleanup);
    const { ctx } = env;
    const a = new KeyStore(ctx.store, ctx.box, ctx.clock);
    const b = new KeyStore(ctx.store, ctx.box, { now: () => ctx.clock.now() + 5 });
    const [ka, kb] = await Promise.all([
      a.activeKey("assertion-test", "ES256"),
      b.activeKey("assertion-test", "ES256"),
    ]);
    const later = await new KeyStore(ctx.store, ctx.box, ctx.clock).activeKey(
      "assertion-test",
      "ES256",
    );
    // Both raced (the precondition): two keys were created.
    expect(
      await ctx.store.db
        .selectFrom("keys")
        .select("id")
        .where("purpose", "=", "assertion-test")
        .execute(),
    ).toHaveLength(2);
    expect(kb.kid).toBe(ka.kid);
    expect(later.kid).toBe(ka.kid);
    const rows = await ctx.store.db
      .selectFrom("keys")
      .select(["id", "status"])
      .where("purpose", "=", "assertion-test")
      .execute();
    expect(rows.filter((r) => r.status === "active").map((r) => r.id)).toEqual([ka.kid]);
    // The loser is never picked again but stays published for anything it signed.
    expect(rows.filter((r) => r.status === "superseded")).toHaveLength(rows.length - 1);
    expect(await a.publicJwks("assertion-test")).toHaveLength(rows.length);
  });
});
