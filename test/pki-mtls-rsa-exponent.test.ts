/**
 * RSA SVIDs with an unusable public exponent (e < 3, or even) that zt's CA signed before
 * issuance refused such keys are refused as client certificates too, not honoured until
 * they expire. With e = 1 every padded digest is its own signature: the TLS handshake's
 * CertificateVerify "proves" possession of a key anyone can compute, so whoever has the
 * certificate (it is public) is the workload.
 *
 * Real peers: `zt up` in process with TLS from zt's own CA on the PEP and the API
 * (`client_certs: optional`), and Node's TLS client (OpenSSL) presenting the certificate
 * with a private key of d = 1, which OpenSSL loads and signs with as it would any RSA key.
 * The certificate is made by zt's own issuance template and signed by zt's active
 * intermediate (the PKI service's CA), as such certificates were. An even exponent has no
 * private key at all, so no TLS client can present one: its certificate is shown to the
 * verifier as the listeners hand it over (DER).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { request } from "./helpers/http-client.js";
import { ManualClock } from "../src/core/clock.js";
import {
  buildRenewalRequest,
  pkiService,
  verifyClientCertificate,
  type PkiService,
} from "../src/pki/index.js";
import { buildSvidFast } from "../src/pki/svid-der.js";
import { toPem } from "../src/pki/der.js";
import { auditRows } from "./helpers/audit-rows.js";
import { startZtUpWithUpstream, type ZtUpWithUpstream } from "./helpers/zt-up-in-process.js";

const TD = "exponent.test";
const LEGACY = `spiffe://${TD}/legacy`;
const POLICY = `
@id("legacy-calls-api")
permit (principal == Service::"${LEGACY}", action, resource == App::"api");
`;

const clock = new ManualClock(Date.now());
let up: ZtUpWithUpstream;
let svc: PkiService;
let bundle: string;

/**
 * An RSA-2048 key with public exponent `e`: for e = 1 a private key with d = 1 (a TLS
 * client signs with it), otherwise the public key alone (an even e has no private key).
 */
function rsaKeyWithExponent(e: bigint): KeyObject {
  const jwk = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({
    format: "jwk",
  });
  if (e === 1n)
    return createPrivateKey({
      key: { ...jwk, e: "AQ", d: "AQ", dp: "AQ", dq: "AQ" },
      format: "jwk",
    });
  const hex = e.toString(16);
  const eB64 = Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex").toString("base64url");
  return createPublicKey({ key: { kty: "RSA", n: String(jwk.n), e: eB64 }, format: "jwk" });
}

/** An X.509-SVID for `spiffeId` certifying `key`, from zt's issuance template and CA. */
function svidFromZtCa(key: KeyObject, spiffeId: string): { der: Buffer; chainPem: string } {
  const pub = key.type === "public" ? key : createPublicKey(key);
  const spki = pub.export({ format: "der", type: "spki" });
  const issuer = svc.cas.activeIntermediate;
  const der = buildSvidFast(issuer.fast, {
    serial: "5eed" + Math.floor(Math.random() * 0xffffff).toString(16),
    spiffeId,
    dnsNames: [],
    ips: [],
    notBefore: new Date(clock.now() - 60_000),
    notAfter: new Date(clock.now() + 3_600_000),
    spki,
  });
  return { der, chainPem: toPem(der, "CERTIFICATE") + issuer.pem };
}

/** A request over a fresh TLS connection presenting `key` and `chainPem` as the client certificate. */
async function send(
  port: number,
  o: { host: string; path: string; method?: string; body?: unknown },
  client: { key: KeyObject; chainPem: string },
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await request(port, {
    host: o.host,
    path: o.path,
    method: o.method ?? "GET",
    headers: { accept: "application/json", "content-type": "application/json" },
    ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
    tls: {
      ca: bundle,
      servername: "localhost",
      key: client.key.export({ format: "pem", type: "pkcs8" }) as string,
      cert: client.chainPem,
    },
  });
  return { status: r.status, body: r.body ? r.json() : {} };
}

beforeAll(async () => {
  up = await startZtUpWithUpstream({
    yaml: (to) => `data_dir: ./data
trust_domain: ${TD}
tls: { from_ca: true, client_certs: optional }
routes:
  - { name: api, from: "https://api.localhost", to: "${to}" }
policies: ./policies
`,
    policies: { "main.cedar": POLICY },
    users: [],
    clock,
    dirPrefix: "zt-mtls-exponent-",
  });
  svc = await pkiService(up.zt.ctx);
  bundle = svc.bundlePem();
}, 60_000);

afterAll(async () => {
  await up?.close();
});

describe("RSA SVIDs with an unusable public exponent, presented over mTLS", () => {
  it("lets an RSA SVID with e = 65537 from the same CA and template through (the control)", async () => {
    const key = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const r = await send(
      up.port,
      { host: "api.localhost", path: "/hello" },
      {
        key,
        chainPem: svidFromZtCa(key, LEGACY).chainPem,
      },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  });

  it("refuses an RSA SVID with e = 1 at the PEP (401 cert-key-exponent, audited) and at the API", async () => {
    const key = rsaKeyWithExponent(1n);
    const svid = svidFromZtCa(key, LEGACY);
    const seen = up.upstream.seen.length;
    const r = await send(up.port, { host: "api.localhost", path: "/hello" }, { key, ...svid });
    expect(r.status).toBe(401);
    expect(r.body["error"]).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-key-exponent",
    });
    expect(up.upstream.seen.length).toBe(seen);

    // The API: renewing with it over mTLS is refused the same way.
    const renew = await send(
      up.zt.apiAddress.port,
      { host: "localhost", path: "/api/v1/svid", method: "POST", body: { csr: "x" } },
      { key, ...svid },
    );
    expect(renew.status).toBe(401);
    expect(renew.body["error"]).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-key-exponent",
    });

    // Nor can it renew by proof (what `zt cert renew` sends to a plain-HTTP API).
    const renewal = await buildRenewalRequest(
      svid.chainPem,
      key.export({ format: "pem", type: "pkcs8" }).toString(),
    );
    await expect(
      svc.issueSvid({
        csr: renewal.csrPem,
        auth: { kind: "svid", certDer: renewal.currentCertDer, proof: renewal.proof },
      }),
    ).rejects.toMatchObject({ code: "ZT_AUTH_FAILED", context: { reason: "cert-key-exponent" } });

    const audited = await auditRows(up.zt.ctx, "authn.mtls", ["outcome", "reason"], {
      reason: "cert-key-exponent",
    });
    expect(audited).toEqual([
      { outcome: "deny", reason: "cert-key-exponent" },
      { outcome: "deny", reason: "cert-key-exponent" },
    ]);
  });

  it("refuses RSA SVIDs with an even exponent (2, 4, 65536) as the listeners hand them to the verifier", () => {
    for (const e of [2n, 4n, 65536n]) {
      const { der } = svidFromZtCa(rsaKeyWithExponent(e), LEGACY);
      expect(verifyClientCertificate(up.zt.ctx, der, clock.now()), `e = ${e}`).toEqual({
        ok: false,
        reason: "cert-key-exponent",
      });
    }
  });
});
