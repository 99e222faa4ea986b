import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, createServer, type Server, type TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import {
  initPki,
  pkiServerTlsOptions,
  pkiService,
  verifyClientCertificate,
  type PkiService,
} from "../src/pki/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";

type Env = Awaited<ReturnType<typeof openPkiTestContext>>;
let home: Env;
let foreign: Env;
let svc: PkiService;
let server: Server;
let port: number;

/** A TLS server that asks for a client SVID and answers with zt's verdict on it. */
async function startServer(): Promise<void> {
  const tls = await pkiServerTlsOptions(home.ctx, { hostnames: ["localhost", "127.0.0.1"] });
  server = createServer(
    { ...tls, requestCert: true, rejectUnauthorized: false },
    (sock: TLSSocket) => {
      const verdict = verifyClientCertificate(
        home.ctx,
        sock.getPeerCertificate(),
        home.clock.now(),
      );
      if (verdict.ok) sock.end(`ok ${verdict.spiffeId}\n`);
      else sock.end(`refused ${verdict.reason}\n`);
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
}

/** Connects as a client with the given SVID, verifying the server against zt's bundle. */
function talk(client: { key: string; cert: string } | undefined, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(
      { host: "127.0.0.1", port, servername: "localhost", ca, ...(client ?? {}) },
      () => {
        let data = "";
        sock.setEncoding("utf8");
        sock.on("data", (d) => (data += d));
        sock.on("end", () => resolve(data.trim()));
      },
    );
    sock.on("error", reject);
  });
}

beforeAll(async () => {
  home = await openPkiTestContext({ trustDomain: "example.test" });
  foreign = await openPkiTestContext({ trustDomain: "other.test" });
  await initPki(home.ctx);
  await initPki(foreign.ctx);
  svc = await pkiService(home.ctx);
  await startServer();
});

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await home?.cleanup();
  await foreign?.cleanup();
});

describe("mTLS with issued SVIDs (Node TLS server and client)", () => {
  it("completes mTLS with a valid SVID; the server certificate verifies against zt's bundle for its hostname", async () => {
    const c = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/client",
      actor: "test",
    });
    expect(await talk({ key: c.keyPem, cert: c.chainPem }, svc.bundlePem())).toBe(
      "ok spiffe://example.test/ns/client",
    );
  });

  it("refuses a client without a certificate", async () => {
    expect(await talk(undefined, svc.bundlePem())).toBe("refused cert-untrusted");
  });

  it("refuses an SVID from another trust domain's CA", async () => {
    const other = await (
      await pkiService(foreign.ctx)
    ).issueSvidWithNewKey({ spiffeId: "spiffe://other.test/ns/client", actor: "test" });
    expect(await talk({ key: other.keyPem, cert: other.chainPem }, svc.bundlePem())).toBe(
      "refused cert-untrusted",
    );
  });

  it("refuses an expired SVID (injected clock), and a not-yet-valid one", async () => {
    const c = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/short",
      ttlMs: 5 * 60_000,
      actor: "test",
    });
    expect(await talk({ key: c.keyPem, cert: c.chainPem }, svc.bundlePem())).toBe(
      "ok spiffe://example.test/ns/short",
    );
    const t = home.clock.now();
    home.clock.advance(6 * 60_000);
    try {
      expect(await talk({ key: c.keyPem, cert: c.chainPem }, svc.bundlePem())).toBe(
        "refused cert-expired",
      );
    } finally {
      home.clock.set(t);
    }
    home.clock.advance(10 * 60_000);
    const future = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/future",
      actor: "test",
    });
    home.clock.set(t);
    expect(await talk({ key: future.keyPem, cert: future.chainPem }, svc.bundlePem())).toBe(
      "refused cert-expired",
    );
  });

  it("refuses a revoked SVID at once, not at expiry, including via a cert.revoked event from another process", async () => {
    const a = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/revoked",
      actor: "test",
    });
    const b = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ns/revoked2",
      actor: "test",
    });
    expect(await talk({ key: a.keyPem, cert: a.chainPem }, svc.bundlePem())).toBe(
      "ok spiffe://example.test/ns/revoked",
    );
    await svc.revoke({ spiffeId: "spiffe://example.test/ns/revoked", actor: "test" });
    expect(await talk({ key: a.keyPem, cert: a.chainPem }, svc.bundlePem())).toBe(
      "refused cert-revoked",
    );
    // Another replica revokes: only the event reaches this process.
    await home.ctx.events.publish("cert.revoked", {
      kind: "x509",
      serials: [b.serial],
      not_after: [b.notAfterMs],
      reason: "unspecified",
    });
    expect(await talk({ key: b.keyPem, cert: b.chainPem }, svc.bundlePem())).toBe(
      "refused cert-revoked",
    );
  });

  it("with rejectUnauthorized the TLS layer itself refuses a foreign SVID", async () => {
    const tls = await pkiServerTlsOptions(home.ctx, { hostnames: ["localhost"] });
    const strict = createServer({ ...tls, requestCert: true, rejectUnauthorized: true }, (s) =>
      s.end("ok\n"),
    );
    await new Promise<void>((r) => strict.listen(0, "127.0.0.1", r));
    const strictPort = (strict.address() as AddressInfo).port;
    const other = await (
      await pkiService(foreign.ctx)
    ).issueSvidWithNewKey({ spiffeId: "spiffe://other.test/ns/x", actor: "test" });
    const outcome = await new Promise<string>((resolve) => {
      const sock = connect({
        host: "127.0.0.1",
        port: strictPort,
        servername: "localhost",
        ca: tls.ca,
        key: other.keyPem,
        cert: other.chainPem,
      });
      let data = "";
      sock.on("data", (d) => (data += String(d)));
      sock.on("error", () => resolve("refused"));
      sock.on("close", () => resolve(data.includes("ok") ? "ok" : "refused"));
    });
    await new Promise((r) => strict.close(r));
    expect(outcome).toBe("refused");
  });

  it("verifyClientCertificate: SPIFFE ID and trust-domain checks on certificates from zt's own CA", async () => {
    const { buildSvid, randomSerialHex } = await import("../src/pki/x509-build.js");
    const { generateKeyPairSync } = await import("node:crypto");
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      format: "der",
      type: "spki",
    });
    const now = home.clock.now();
    const make = (spiffeId: string) =>
      buildSvid(svc.cas.activeIntermediate, {
        serial: randomSerialHex(),
        spiffeId,
        dnsNames: [],
        ips: [],
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 3_600_000),
        spki,
      });
    expect(verifyClientCertificate(home.ctx, await make("spiffe://other.test/ns/x"), now)).toEqual({
      ok: false,
      reason: "wrong-trust-domain",
    });
    expect(
      verifyClientCertificate(home.ctx, await make("spiffe://example.test/a/../b"), now),
    ).toEqual({ ok: false, reason: "spiffe-id-invalid" });
    expect(verifyClientCertificate(home.ctx, await make("https://example.test/x"), now)).toEqual({
      ok: false,
      reason: "spiffe-id-invalid",
    });
    expect(verifyClientCertificate(home.ctx, Buffer.from("garbage"), now)).toEqual({
      ok: false,
      reason: "cert-untrusted",
    });
    const good = verifyClientCertificate(home.ctx, await make("spiffe://example.test/ns/x"), now);
    expect(good.ok).toBe(true);
  });
});
