import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate, generateKeyPairSync, sign } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { createApiServer } from "../src/api/index.js";
import { initPki, pkiService, renewProofInput, type PkiService } from "../src/pki/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";
import type { AppContext } from "../src/app/index.js";
import type { ManualClock } from "../src/core/clock.js";

function openssl(args: string[], input?: string): { status: number; out: string } {
  const r = spawnSync("openssl", args, { encoding: "utf8", input });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

let env: Awaited<ReturnType<typeof openPkiTestContext>>;
let ctx: AppContext;
let clock: ManualClock;
let svc: PkiService;
let api: FastifyInstance;
let base: string;
let rootPem: string;
let intPem: string;

/** An openssl-made key and CSR (a real, independent client). */
function makeCsr(
  name: string,
  san: string,
  keyAlg: string[] = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
) {
  const key = join(env.dir, `${name}.key`);
  const csr = join(env.dir, `${name}.csr`);
  execFileSync("openssl", ["genpkey", ...keyAlg, "-out", key]);
  const args = ["req", "-new", "-key", key, "-subj", "/O=ignored/CN=ignored", "-out", csr];
  if (san) args.push("-addext", `subjectAltName=${san}`);
  // Extensions the CA must ignore.
  args.push("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign");
  execFileSync("openssl", args);
  return { key, csr, csrPem: readFileSync(csr, "utf8") };
}

async function postSvid(body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}/api/v1/svid`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function auditRows(kind: string) {
  await ctx.audit.flush();
  return ctx.store.db.selectFrom("audit_events").selectAll().where("kind", "=", kind).execute();
}

function writeChain(name: string, chainPem: string): string {
  const leaf = chainPem.slice(0, chainPem.indexOf("-----END CERTIFICATE-----") + 26);
  const file = join(env.dir, `${name}.pem`);
  writeFileSync(file, leaf);
  return file;
}

beforeAll(async () => {
  env = await openPkiTestContext({ trustDomain: "example.test" });
  ctx = env.ctx;
  clock = env.clock;
  await initPki(ctx);
  await initPki(ctx); // idempotent
  svc = await pkiService(ctx);
  api = await createApiServer(ctx);
  await api.listen({ host: "127.0.0.1", port: 0 });
  const addr = api.server.address();
  base = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  rootPem = svc.bundlePem();
  intPem = svc.cas.activeIntermediate.pem;
  writeFileSync(join(env.dir, "root.pem"), rootPem);
  writeFileSync(join(env.dir, "int.pem"), intPem);
});

afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

describe("X.509 CA and SVIDs checked by openssl", () => {
  it("creates one root and one intermediate, idempotently, with private keys sealed in the store", async () => {
    const rows = await ctx.store.db.selectFrom("pki_cas").selectAll().execute();
    expect(rows.filter((r) => r.kind === "root")).toHaveLength(1);
    expect(rows.filter((r) => r.kind === "intermediate")).toHaveLength(1);
    expect(rows.filter((r) => r.kind === "ssh-user")).toHaveLength(1);
    for (const r of rows) expect(r.private_sealed.startsWith("ztbox1.")).toBe(true);
    const v = openssl([
      "verify",
      "-x509_strict",
      "-CAfile",
      join(env.dir, "root.pem"),
      join(env.dir, "int.pem"),
    ]);
    expect(v.out).toContain("OK");
    expect(v.status).toBe(0);
  });

  it("issues an SVID that openssl verify -x509_strict -purpose sslclient accepts, with the SPIFFE fields", async () => {
    const issued = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/web",
      dnsNames: ["web.example.test"],
      actor: "test",
    });
    const leaf = writeChain("web", issued.chainPem);
    for (const purpose of ["sslclient", "sslserver"]) {
      const v = openssl([
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-CAfile",
        join(env.dir, "root.pem"),
        "-untrusted",
        join(env.dir, "int.pem"),
        leaf,
      ]);
      expect(v.out).toContain(": OK");
      expect(v.status).toBe(0);
    }
    const text = openssl(["x509", "-in", leaf, "-noout", "-text"]).out;
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toContain("URI:spiffe://example.test/ns/web");
    expect(text).toContain("DNS:web.example.test");
    expect(text).toContain("X509v3 Subject Key Identifier");
    expect(text).toContain("X509v3 Authority Key Identifier");
    const cert = new X509Certificate(readFileSync(leaf));
    expect(cert.serialNumber.replace(/^00/, "").length).toBe(32);
    // Default lifetime 1h, backdated 60 s.
    const life = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    expect(life).toBeGreaterThanOrEqual(3_660_000 - 1000);
    expect(life).toBeLessThanOrEqual(3_660_000);
    expect(Date.parse(cert.validFrom)).toBeLessThanOrEqual(clock.now() - 59_000);
  });

  it("issues from a CSR over the API with a single-use join token; CSR extensions are ignored", async () => {
    await svc.addRegistration(
      { spiffeId: "spiffe://example.test/ns/api", dnsNames: ["api.example.test"] },
      "test",
    );
    const { token } = await svc.createJoinToken("spiffe://example.test/ns/api", "test");
    const { csrPem } = makeCsr("api", "URI:spiffe://example.test/ns/api,DNS:api.example.test");
    const r = await postSvid({ csr: csrPem }, { authorization: `Bearer ${token}` });
    expect(r.status).toBe(201);
    const leaf = writeChain("api", String(r.json["cert_chain"]));
    const v = openssl([
      "verify",
      "-x509_strict",
      "-purpose",
      "sslclient",
      "-CAfile",
      join(env.dir, "root.pem"),
      "-untrusted",
      join(env.dir, "int.pem"),
      leaf,
    ]);
    expect(v.status).toBe(0);
    expect(openssl(["x509", "-in", leaf, "-noout", "-text"]).out).toMatch(/CA:FALSE/);
    // Single use.
    const again = await postSvid({ csr: csrPem }, { authorization: `Bearer ${token}` });
    expect(again.status).toBe(401);
    expect((again.json["error"] as { code: string }).code).toBe("ZT_PKI_TOKEN_INVALID");
  });

  it("refuses SANs the registration does not allow (ZT_PKI_SAN_NOT_ALLOWED), audited, token not burned", async () => {
    await svc.addRegistration({ spiffeId: "spiffe://example.test/ns/db" }, "test");
    const { token } = await svc.createJoinToken("spiffe://example.test/ns/db", "test");
    const other = makeCsr("dbx", "URI:spiffe://example.test/ns/admin");
    const r1 = await postSvid({ csr: other.csrPem, token });
    expect(r1.status).toBe(403);
    expect((r1.json["error"] as { code: string }).code).toBe("ZT_PKI_SAN_NOT_ALLOWED");
    const extraDns = makeCsr("dby", "URI:spiffe://example.test/ns/db,DNS:evil.example.test");
    const r2 = await postSvid({ csr: extraDns.csrPem, token });
    expect((r2.json["error"] as { code: string }).code).toBe("ZT_PKI_SAN_NOT_ALLOWED");
    const good = makeCsr("db", "URI:spiffe://example.test/ns/db");
    expect((await postSvid({ csr: good.csrPem, token })).status).toBe(201);
    await ctx.audit.flush();
    const refusals = await auditRows("svid.issue");
    expect(refusals.some((a) => a.outcome === "failure" && a.reason === "san-not-allowed")).toBe(
      true,
    );
  });

  it("refuses an expired join token", async () => {
    await svc.addRegistration({ spiffeId: "spiffe://example.test/ns/late" }, "test");
    const { token } = await svc.createJoinToken("spiffe://example.test/ns/late", "test", 120_000);
    clock.advance(121_000);
    const { csrPem } = makeCsr("late", "URI:spiffe://example.test/ns/late");
    const r = await postSvid({ csr: csrPem, token });
    clock.advance(-121_000);
    expect((r.json["error"] as { code: string }).code).toBe("ZT_PKI_TOKEN_INVALID");
  });

  it("refuses bad input with clear codes and issues nothing", async () => {
    await svc.addRegistration({ spiffeId: "spiffe://example.test/ns/bad" }, "test");
    const { token } = await svc.createJoinToken("spiffe://example.test/ns/bad", "test");
    const before = (await svc.listCerts({ all: true })).length;
    const good = makeCsr("bad", "URI:spiffe://example.test/ns/bad");
    const der = execFileSync("openssl", ["req", "-in", good.csr, "-outform", "DER"]);
    const flipped = Buffer.from(der);
    flipped[flipped.length - 5] = flipped[flipped.length - 5]! ^ 0xff;
    const flippedPem = `-----BEGIN CERTIFICATE REQUEST-----\n${flipped.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    const p521 = makeCsr("p521", "URI:spiffe://example.test/ns/bad", [
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-521",
    ]);
    const rsa1024 = makeCsr("rsa1024", "URI:spiffe://example.test/ns/bad", [
      "-algorithm",
      "RSA",
      "-pkeyopt",
      "rsa_keygen_bits:1024",
    ]);
    const cases: [unknown, string][] = [
      [{ csr: "not a csr", token }, "ZT_PKI_CSR_INVALID"],
      [
        {
          csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
          token,
        },
        "ZT_PKI_CSR_INVALID",
      ],
      [{ csr: flippedPem, token }, "ZT_PKI_CSR_INVALID"],
      [{ csr: p521.csrPem, token }, "ZT_PKI_KEY_INVALID"],
      [{ csr: rsa1024.csrPem, token }, "ZT_PKI_KEY_INVALID"],
      [{ csr: "x".repeat(20_000), token }, "ZT_PAYLOAD_TOO_LARGE"],
      [
        { csr: good.csrPem, token, spiffe_id: "spiffe://example.test/ns/../bad" },
        "ZT_PKI_SAN_NOT_ALLOWED",
      ],
      [{ csr: good.csrPem, token, ttl: "48h" }, "ZT_PKI_TTL_INVALID"],
      [{ csr: good.csrPem }, "ZT_AUTH_REQUIRED"],
      [{ csr: good.csrPem, token, extra: 1 }, "ZT_BAD_REQUEST"],
    ];
    for (const [body, code] of cases) {
      const r = await postSvid(body);
      expect((r.json["error"] as { code: string }).code, JSON.stringify(body).slice(0, 80)).toBe(
        code,
      );
      expect(r.status).toBeGreaterThanOrEqual(400);
    }
    const badIds = [
      "spiffe://Example.test/a",
      "spiffe://example.test/a//b",
      "spiffe://example.test/a/./b",
      "spiffe://example.test/a?x=1",
      "spiffe://example.test/a#f",
      "https://example.test/a",
      "spiffe://example.test",
      "spiffe://other.test/a",
      "spiffe://example.test/a/",
    ];
    for (const id of badIds) {
      await expect(
        svc.issueSvidWithNewKey({ spiffeId: id, actor: "test" }),
        id,
      ).rejects.toMatchObject({
        code: expect.stringMatching(/ZT_PKI_SPIFFE_ID_INVALID|ZT_PKI_SAN_NOT_ALLOWED/),
      });
    }
    expect((await svc.listCerts({ all: true })).length).toBe(before);
    await ctx.audit.flush();
    const audit = await auditRows("svid.issue");
    const failures = audit.filter((a) => a.outcome === "failure").map((a) => a.reason);
    for (const reason of [
      "bad-signature",
      "key-type",
      "key-size",
      "csr-too-large",
      "pem-missing",
      "path-segment-dot",
    ])
      expect(failures).toContain(reason);
  });

  it("renews with the current SVID: same key, or a new key with a proof from the old one", async () => {
    const first = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/renew",
      dnsNames: ["renew.example.test"],
      actor: "test",
    });
    const certPem = first.certPem;
    // New key with a proof.
    const next = makeCsr("renew2", "URI:spiffe://example.test/ns/renew,DNS:renew.example.test");
    const csrDer = execFileSync("openssl", ["req", "-in", next.csr, "-outform", "DER"]);
    const proof = sign("sha256", renewProofInput(csrDer), {
      key: first.keyPem,
      dsaEncoding: "der",
    });
    const ok = await postSvid({
      csr: next.csrPem,
      renew: { cert: certPem, proof: proof.toString("base64") },
    });
    expect(ok.status).toBe(201);
    // Without a proof, a new key is refused.
    const noProof = await postSvid({ csr: next.csrPem, renew: { cert: certPem } });
    expect((noProof.json["error"] as { code: string }).code).toBe("ZT_AUTH_FAILED");
    // Renewal cannot switch identity.
    const other = makeCsr("renew3", "URI:spiffe://example.test/ns/other");
    const otherDer = execFileSync("openssl", ["req", "-in", other.csr, "-outform", "DER"]);
    const proof3 = sign("sha256", renewProofInput(otherDer), {
      key: first.keyPem,
      dsaEncoding: "der",
    });
    const switched = await postSvid({
      csr: other.csrPem,
      renew: { cert: certPem, proof: proof3.toString("base64") },
    });
    expect((switched.json["error"] as { code: string }).code).toBe("ZT_PKI_SAN_NOT_ALLOWED");
    // A proof by some other key is refused.
    const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const bad = sign("sha256", renewProofInput(csrDer), {
      key: stranger.privateKey,
      dsaEncoding: "der",
    });
    const refused = await postSvid({
      csr: next.csrPem,
      renew: { cert: certPem, proof: bad.toString("base64") },
    });
    expect((refused.json["error"] as { code: string }).code).toBe("ZT_AUTH_FAILED");
  });

  it("revocation: openssl -crl_check against the CRL served at /pki/crl refuses the revoked SVID only", async () => {
    const keep = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/keep",
      actor: "test",
    });
    const gone = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/gone",
      actor: "test",
    });
    const keepFile = writeChain("keep", keep.chainPem);
    const goneFile = writeChain("gone", gone.chainPem);
    const fetchCrl = async () => {
      const res = await fetch(`${base}/pki/crl`);
      expect(res.headers.get("content-type")).toBe("application/pkix-crl");
      const der = Buffer.from(await res.arrayBuffer());
      const file = join(env.dir, "crl.der");
      writeFileSync(file, der);
      execFileSync("openssl", [
        "crl",
        "-inform",
        "DER",
        "-in",
        file,
        "-out",
        join(env.dir, "crl.pem"),
      ]);
      return join(env.dir, "crl.pem");
    };
    const verify = (leaf: string, crl: string) =>
      openssl([
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-crl_check",
        "-CRLfile",
        crl,
        "-CAfile",
        join(env.dir, "root.pem"),
        "-untrusted",
        join(env.dir, "int.pem"),
        leaf,
      ]);
    let crl = await fetchCrl();
    expect(verify(goneFile, crl).status).toBe(0);
    await svc.revoke({ serial: gone.serial, reason: "key-compromise", actor: "test" });
    expect(svc.isRevoked(gone.serial)).toBe(true);
    crl = await fetchCrl();
    const refused = verify(goneFile, crl);
    expect(refused.status).not.toBe(0);
    expect(refused.out).toContain("certificate revoked");
    expect(verify(keepFile, crl).status).toBe(0);
    const crlText = openssl(["crl", "-in", crl, "-noout", "-text"]).out;
    expect(crlText.toUpperCase()).toContain(gone.serial.toUpperCase());
    expect(crlText).toContain("Key Compromise");
    expect(crlText).toContain("X509v3 CRL Number");
    const rows = await svc.listCerts();
    expect(rows.find((r) => r.serial === gone.serial)?.status).toBe("revoked");
  });

  it("serves the SPIFFE bundle as a JWK set with use x509-svid", async () => {
    const res = await fetch(`${base}/pki/bundle?format=spiffe`);
    expect(res.status).toBe(200);
    const jwks = (await res.json()) as { keys: { use: string; kty: string; x5c: string[] }[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]!.use).toBe("x509-svid");
    expect(jwks.keys[0]!.kty).toBe("EC");
    expect(new X509Certificate(Buffer.from(jwks.keys[0]!.x5c[0]!, "base64")).ca).toBe(true);
    const pem = await (await fetch(`${base}/pki/bundle`)).text();
    expect(pem).toBe(rootPem);
  });

  it("rotates the intermediate: old SVIDs keep verifying until they expire, new ones chain to the new intermediate", async () => {
    const before = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/rotate",
      actor: "test",
    });
    const oldId = svc.cas.activeIntermediate.id;
    const newId = await svc.rotateIntermediate("test");
    expect(newId).not.toBe(oldId);
    expect(svc.cas.activeIntermediate.id).toBe(newId);
    const after = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/rotate",
      actor: "test",
    });
    const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    expect(svc.verifyClientCertificate(der(before.certPem), clock.now())).toMatchObject({
      ok: true,
    });
    expect(svc.verifyClientCertificate(der(after.certPem), clock.now())).toMatchObject({
      ok: true,
    });
    writeFileSync(join(env.dir, "int2.pem"), svc.cas.activeIntermediate.pem);
    const leaf = writeChain("rotated", after.chainPem);
    const v = openssl([
      "verify",
      "-x509_strict",
      "-purpose",
      "sslclient",
      "-CAfile",
      join(env.dir, "root.pem"),
      "-untrusted",
      join(env.dir, "int2.pem"),
      leaf,
    ]);
    expect(v.status, v.out).toBe(0);
    // The old intermediate no longer issues: its CRL is still served by id.
    const res = await fetch(`${base}/pki/crl/${oldId}`);
    expect(res.status).toBe(200);
    expect(svc.bundlePem()).toBe(rootPem);
  });
});
