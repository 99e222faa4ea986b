/**
 * Two zt replicas on one PostgreSQL database: they share the CAs (keys sealed in the
 * store), and a revocation on one reaches the other's instant deny list through the
 * event bus (LISTEN/NOTIFY), and its CRL.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig } from "../src/config/index.js";
import { initPki, pkiService, verifyClientCertificate } from "../src/pki/index.js";
import { x509 } from "../src/pki/x509-lib.js";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "./store-fixture.js";

const available = await postgresAvailable();
let db: TestDatabase;
let dir: string;
let a: AppContext;
let b: AppContext;

async function replica(name: string, url: string, masterKey: string): Promise<AppContext> {
  const config = validateConfig(
    { data_dir: join(dir, name), database_url: url, trust_domain: "example.test" },
    join(dir, `${name}.yaml`),
  );
  const ctx = await openAppContext(config, { env: { ZT_MASTER_KEY: masterKey } });
  await ctx.events.start();
  return ctx;
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  if (!available) return;
  db = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), "zt-pki-pg-"));
  const key = randomBytes(32).toString("base64");
  a = await replica("a", db.url, key);
  b = await replica("b", db.url, key);
}, 120_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)("PKI across replicas on PostgreSQL", () => {
  it("concurrent init on both replicas ends with one active root and intermediate", async () => {
    await Promise.all([initPki(a), initPki(b)]);
    const rows = await a.store.db
      .selectFrom("pki_cas")
      .selectAll()
      .where("status", "=", "active")
      .execute();
    expect(rows.filter((r) => r.kind === "root")).toHaveLength(1);
    expect(rows.filter((r) => r.kind === "intermediate")).toHaveLength(1);
    expect(rows.filter((r) => r.kind === "ssh-user")).toHaveLength(1);
    const sa = await pkiService(a);
    const sb = await pkiService(b);
    // Replicas that raced may each hold the loser briefly; a reload converges on the store.
    await sa.reloadCas();
    await sb.reloadCas();
    expect(sa.bundlePem()).toBe(sb.bundlePem());
    expect(sa.cas.roots).toHaveLength(1);
    expect(sa.cas.activeIntermediate.id).toBe(sb.cas.activeIntermediate.id);
  });

  it("an SVID issued by A is accepted by B; revoked on A, B refuses it at once and lists it in its CRL", async () => {
    const sa = await pkiService(a);
    const sb = await pkiService(b);
    const svid = await sa.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/shared",
      actor: "test",
    });
    const der = new x509.X509Certificate(svid.certPem).rawData;
    const now = Date.now();
    expect(verifyClientCertificate(b, new Uint8Array(der), now)).toMatchObject({
      ok: true,
      spiffeId: "spiffe://example.test/ns/shared",
    });
    await sa.revoke({ serial: svid.serial, actor: "test" });
    await until(
      () => !verifyClientCertificate(b, new Uint8Array(der), Date.now()).ok,
      "B to hear the revocation",
    );
    expect(verifyClientCertificate(b, new Uint8Array(der), Date.now())).toEqual({
      ok: false,
      reason: "cert-revoked",
    });
    const crl = new x509.X509Crl(await sb.crlDer());
    expect(crl.entries.map((e) => e.serialNumber.toLowerCase().replace(/^(00)+/, ""))).toContain(
      svid.serial,
    );
  });
});
