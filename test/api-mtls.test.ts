/**
 * The API listener with client certificates: `zt up` with a `tls:` block serves the API
 * over https from zt's CA and asks for client SVIDs, verified as the PEP verifies them.
 * Real sockets throughout: Node's https client as the workload, the real `zt cert renew
 * --daemon` CLI in a child process, openssl to check what it wrote.
 */
import { nextServedSerial, servedSerial } from "./helpers/tls.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createPrivateKey, webcrypto, X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { apiListenerTls, createApiServer } from "../src/api/index.js";
import { pkiService, type PkiService } from "../src/pki/index.js";
import { x509 } from "../src/pki/x509-lib.js";
import { EC_P256_KEYGEN, EC_P256_SHA256 } from "../src/pki/x509-build.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";
import { ROOT, ZT_BIN, tempDir, writeConfig } from "./helpers/zt-process.js";

const TD = "example.test";
/** System time plus an offset the expiry test moves (the daemon needs time to pass). */
let offsetMs = 0;
const clock = { now: () => Date.now() + offsetMs };
let zt: RunningZt;
let svc: PkiService;
let dir: string;
let apiPort: number;
let bundle: string;
let foreign: Awaited<ReturnType<typeof openPkiTestContext>>;

interface Svid {
  keyPem: string;
  chainPem: string;
  serial: string;
}

/** POSTs JSON to the API over a fresh TLS connection, optionally as an SVID (mTLS). */
function post(
  path: string,
  body: unknown,
  client?: { key: string; cert: string },
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: apiPort,
        path,
        method: "POST",
        servername: "localhost",
        ca: bundle,
        agent: false,
        headers: { "content-type": "application/json" },
        ...(client ?? {}),
      },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (data += d));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(data || "{}") as never }),
        );
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/** A new P-256 key and a CSR for `spiffeId` (no proof of anything else). */
async function newCsr(spiffeId: string): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256_KEYGEN, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "O=test",
    keys,
    signingAlgorithm: EC_P256_SHA256,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])],
  });
  return csr.toString("pem");
}

async function issue(path: string, ttlMs?: number): Promise<Svid> {
  const s = await svc.issueSvidWithNewKey({
    spiffeId: `spiffe://${TD}${path}`,
    ttlMs,
    actor: "test",
  });
  return { keyPem: s.keyPem, chainPem: s.chainPem, serial: s.serial };
}

async function auditRows(
  kind: string,
): Promise<{ outcome: string; subject: string | null; reason: string | null; data: unknown }[]> {
  await zt.ctx.audit.flush();
  return zt.ctx.store.db
    .selectFrom("audit_events")
    .select(["outcome", "subject", "reason", "data"])
    .where("kind", "=", kind)
    .execute();
}

beforeAll(async () => {
  dir = tempDir("zt-api-mtls-");
  const config = writeConfig(
    dir,
    `data_dir: ./data
trust_domain: ${TD}
tls: { from_ca: true, client_certs: optional }
policies: ./policies
`,
    { "main.cedar": "" },
  );
  zt = await runUp({
    configPath: config,
    env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
    clock,
    out: () => undefined,
  });
  apiPort = zt.apiAddress.port;
  svc = await pkiService(zt.ctx);
  bundle = svc.bundlePem();
  // Another CA for the same trust domain: its SVIDs look right but do not chain to zt.
  foreign = await openPkiTestContext({ trustDomain: TD });
  await pkiService(foreign.ctx, { create: true });
}, 60_000);

afterAll(async () => {
  await zt?.close();
  await foreign?.cleanup();
});

describe("API listener: client SVIDs (mTLS)", () => {
  it("serves https with a certificate from zt's CA for localhost", async () => {
    const r = await post("/api/v1/svid", { csr: await newCsr(`spiffe://${TD}/x`) });
    // No credentials at all: 401 with a stable code (and the TLS handshake verified).
    expect(r.status).toBe(401);
    expect((r.body["error"] as { code: string }).code).toBe("ZT_AUTH_REQUIRED");
  });

  it("renews with the SVID as client certificate alone: a new key, no proof in the body", async () => {
    const cur = await issue("/ns/web");
    const r = await post(
      "/api/v1/svid",
      { csr: await newCsr(`spiffe://${TD}/ns/web`) },
      { key: cur.keyPem, cert: cur.chainPem },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body["spiffe_id"]).toBe(`spiffe://${TD}/ns/web`);
    expect(r.body["serial"]).not.toBe(cur.serial);
    const rows = await auditRows("svid.issue");
    expect(rows.some((x) => x.outcome === "success" && x.subject === "svid:mtls")).toBe(true);
  });

  it("an SVID renews only its own identity", async () => {
    const cur = await issue("/ns/web");
    const r = await post(
      "/api/v1/svid",
      { csr: await newCsr(`spiffe://${TD}/ns/db`) },
      { key: cur.keyPem, cert: cur.chainPem },
    );
    expect(r.status).toBe(403);
    expect((r.body["error"] as { code: string }).code).toBe("ZT_PKI_SAN_NOT_ALLOWED");
  });

  it("refuses a revoked client SVID at once (instant deny list), audited; it does not fall back to a join token", async () => {
    const cur = await issue("/ns/revoked");
    await svc.revoke({ serial: cur.serial, actor: "test" });
    const r = await post(
      "/api/v1/svid",
      { csr: await newCsr(`spiffe://${TD}/ns/revoked`), token: "ztjoin_whatever" },
      { key: cur.keyPem, cert: cur.chainPem },
    );
    expect(r.status).toBe(401);
    const err = r.body["error"] as { code: string; reason: string };
    expect(err).toMatchObject({ code: "ZT_CLIENT_CERT_REFUSED", reason: "cert-revoked" });
    const rows = await auditRows("authn.mtls");
    expect(rows.some((x) => x.outcome === "deny" && x.reason === "cert-revoked")).toBe(true);
  });

  it("refuses an expired client SVID and one from another CA", async () => {
    const old = await issue("/ns/old", 60_000);
    offsetMs = 5 * 60_000;
    try {
      const r = await post(
        "/api/v1/svid",
        { csr: await newCsr(`spiffe://${TD}/ns/old`) },
        { key: old.keyPem, cert: old.chainPem },
      );
      expect(r.status).toBe(401);
      expect(r.body["error"]).toMatchObject({ reason: "cert-expired" });
    } finally {
      offsetMs = 0;
    }
    const other = await (
      await pkiService(foreign.ctx)
    ).issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/ns/web`, actor: "test" });
    const r = await post(
      "/api/v1/svid",
      { csr: await newCsr(`spiffe://${TD}/ns/web`) },
      { key: other.keyPem, cert: other.chainPem },
    );
    expect(r.status).toBe(401);
    expect(r.body["error"]).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-untrusted",
    });
  });
});

describe("zt cert renew --daemon against the running API", () => {
  let daemon: ChildProcess | undefined;
  afterAll(() => {
    if (daemon && daemon.exitCode === null) daemon.kill("SIGTERM");
  });

  it("replaces the chain and key (0600) with a new serial that openssl verifies, then runs --exec", async () => {
    if (!existsSync(join(ROOT, "dist", "src", "cli", "commands", "cert.js")))
      throw new Error("run `npm run build` first: the CLI runs from dist/");
    // A 1-minute SVID: with the 60 s backdate its half-life is now (± 12 s of jitter).
    const cur = await issue("/ns/daemon", 60_000);
    const certFile = join(dir, "chain.pem");
    const keyFile = join(dir, "svid.key");
    const bundleFile = join(dir, "bundle.pem");
    const marker = join(dir, "reloaded");
    writeFileSync(certFile, cur.chainPem);
    writeFileSync(keyFile, cur.keyPem, { mode: 0o600 });
    writeFileSync(bundleFile, bundle);
    let out = "";
    daemon = spawn(
      process.execPath,
      [
        ZT_BIN,
        "cert",
        "renew",
        "--daemon",
        "--cert",
        certFile,
        "--key",
        keyFile,
        "--bundle",
        bundleFile,
        "--server",
        `https://localhost:${apiPort}`,
        "--ca-file",
        bundleFile,
        // The renewed SVID lives 2m: its own renewal is at least 12 s away.
        "--ttl",
        "2m",
        "--exec",
        `echo reloaded >> ${marker}`,
        "--json",
      ],
      { cwd: dir, stdio: ["ignore", "pipe", "pipe"] },
    );
    daemon.stdout!.on("data", (d) => (out += String(d)));
    daemon.stderr!.on("data", (d) => (out += String(d)));
    // Wait on the observable event (the reload hook ran), not on time.
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        if (existsSync(marker)) {
          clearInterval(timer);
          resolve();
        } else if (daemon!.exitCode !== null) {
          clearInterval(timer);
          reject(new Error(`daemon exited ${daemon!.exitCode}: ${out}`));
        }
      }, 100);
    });
    // Stop it while it sleeps until the next renewal, so the files hold still.
    await new Promise<void>((resolve) => {
      daemon!.once("exit", () => resolve());
      daemon!.kill("SIGTERM");
    });
    const chain = readFileSync(certFile, "utf8");
    const leaf = new X509Certificate(chain);
    const serial = leaf.serialNumber.toLowerCase().replace(/^(00)+/, "");
    expect(serial).not.toBe(cur.serial);
    expect(leaf.subjectAltName).toBe(`URI:spiffe://${TD}/ns/daemon`);
    expect(out).toContain(`"serial": "${serial}"`);
    // The key was rotated, is private, and matches the new certificate.
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const key = readFileSync(keyFile, "utf8");
    expect(key).not.toBe(cur.keyPem);
    expect(leaf.checkPrivateKey(createPrivateKey(key))).toBe(true);
    // A valid chain to zt's root, as a client certificate.
    const [leafPem, intPem] = chain.split(/(?<=-----END CERTIFICATE-----\n)/);
    writeFileSync(join(dir, "d-leaf.pem"), leafPem!);
    writeFileSync(join(dir, "d-int.pem"), intPem!);
    const v = spawnSync(
      "openssl",
      [
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        bundleFile,
        "-untrusted",
        join(dir, "d-int.pem"),
        join(dir, "d-leaf.pem"),
      ],
      { encoding: "utf8" },
    );
    expect(v.status, `${v.stdout}${v.stderr}`).toBe(0);
    // It authenticated with its SVID over mTLS (the https client certificate).
    const rows = await auditRows("svid.issue");
    const mine = rows.filter((x) => String(x.data).includes(serial));
    expect(mine.map((x) => [x.outcome, x.subject])).toEqual([["success", "svid:mtls"]]);
  }, 90_000);
});

describe("API listener certificate from zt's CA", () => {
  it("is swapped for a new one at half its lifetime, without a restart", async () => {
    const base = await apiListenerTls(zt.ctx, "127.0.0.1");
    const api = await createApiServer(zt.ctx, { tls: { ...base!, refreshEveryMs: 100 } });
    await api.listen({ host: "127.0.0.1", port: 0 });
    const port = (api.server.address() as AddressInfo).port;
    try {
      const first = await servedSerial(port);
      // Past half of pki.svid_ttl (1h): the next refresh re-issues.
      offsetMs = 45 * 60_000;
      expect(await nextServedSerial(port, first)).not.toBe(first);
    } finally {
      offsetMs = 0;
      await api.close();
    }
  }, 60_000);
});
