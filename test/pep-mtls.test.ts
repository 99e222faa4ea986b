/**
 * mTLS principals in the PEP: `zt up` in process with a TLS listener from zt's own CA
 * (`client_certs: optional`), real Node TLS clients (and curl) presenting SVIDs the PKI
 * service issued. A verified SVID is the Cedar principal `Service::"spiffe://…"`;
 * refused certificates are explained and audited; a revoked SVID loses its live
 * WebSocket. Upstream mTLS: a route with `upstream_mtls: true` presents zt's SVID to a
 * real https upstream that verifies it against zt's CA.
 */
import { nextServedSerial, servedSerial } from "./helpers/tls.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { TLSSocket } from "node:tls";
import { createLocalJWKSet, jwtVerify } from "jose";
import WebSocket from "ws";
import { ManualClock } from "../src/core/clock.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { createPepNode } from "../src/app/pep-node.js";
import {
  pkiServerTlsOptions,
  pkiService,
  verifyClientCertificate,
  type PkiService,
} from "../src/pki/index.js";
import { AlertEngine, parseAlertsConfig, toAlertEvent } from "../src/audit/index.js";
import { createPep } from "../src/proxy/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";
import { auditRecords, auditRows } from "./helpers/audit-rows.js";

const TD = "mtls.test";
const POLICY = `
@id("web-calls-api")
permit (principal == Service::"spiffe://${TD}/web", action, resource == App::"api");

@id("web-calls-secure")
permit (principal == Service::"spiffe://${TD}/web", action, resource == App::"secure");
`;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

describe("mTLS principals in the PEP (TLS listener from zt's CA)", () => {
  let zt: RunningZt;
  let svc: PkiService;
  let port: number;
  let bundle: string;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let foreign: Awaited<ReturnType<typeof openPkiTestContext>>;
  /** The https upstream for upstream mTLS: records the client SVID zt presented. */
  let secureUpstream: https.Server;
  const presented: string[] = [];
  const clock = new ManualClock(Date.now());
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };

  type Svid = { keyPem: string; chainPem: string; serial: string };
  const issue = (path: string): Promise<Svid> =>
    svc.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}${path}`, actor: "test" });

  /** A WebSocket to api.localhost through the PEP, authenticated by `svid`; resolves once open. */
  async function openSvidWebSocket(svid: Svid, origin?: string): Promise<WebSocket> {
    const options = {
      headers: { host: "api.localhost" },
      ...(origin ? { origin } : {}),
      servername: "localhost",
      ca: bundle,
      key: svid.keyPem,
      cert: svid.chainPem,
    };
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, options);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_q, res) => reject(new Error(`refused ${res.statusCode}`)));
    });
    return ws;
  }

  function get(host: string, client?: { keyPem: string; chainPem: string }): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port,
          path: "/hello",
          servername: "localhost",
          ca: bundle,
          headers: { host, accept: "application/json" },
          agent: false,
          ...(client ? { key: client.keyPem, cert: client.chainPem } : {}),
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (text += d));
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
            }),
          );
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  beforeAll(async () => {
    const dir = tempDir();
    upstream = await startRecordingUpstream();
    // Certificate set once zt's CA exists (after runUp); the port is needed for the config.
    secureUpstream = https.createServer({ requestCert: true, rejectUnauthorized: false });
    secureUpstream.on("request", (req, res) => {
      const sock = req.socket as TLSSocket;
      const v = verifyClientCertificate(zt.ctx, sock.getPeerCertificate(), clock.now());
      presented.push(v.ok ? v.spiffeId : `refused:${v.reason}`);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true }));
    });
    await new Promise<void>((r) => secureUpstream.listen(0, "127.0.0.1", () => r()));
    const securePort = (secureUpstream.address() as AddressInfo).port;
    const config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: ${TD}
tls: { from_ca: true, client_certs: optional }
routes:
  - { name: api, from: "https://api.localhost", to: "http://127.0.0.1:${upstream.port}" }
  - { name: secure, from: "https://secure.localhost", to: "https://localhost:${securePort}", upstream_mtls: true }
policies: ./policies
`,
      { "main.cedar": POLICY },
    );
    zt = await runUp({ configPath: config, env, clock, out: () => undefined });
    port = zt.pepAddress.port;
    svc = await pkiService(zt.ctx);
    bundle = svc.bundlePem();
    const upCert = await svc.issueSvidWithNewKey({
      spiffeId: `spiffe://${TD}/upstream`,
      dnsNames: ["localhost"],
      actor: "test",
    });
    secureUpstream.setSecureContext({ key: upCert.keyPem, cert: upCert.chainPem, ca: bundle });
    // Another CA for the same trust domain: its SVIDs look right but do not chain to zt.
    foreign = await openPkiTestContext({ trustDomain: TD });
    await pkiService(foreign.ctx, { create: true });
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
    await new Promise<void>((r) => {
      secureUpstream?.close(() => r());
      secureUpstream?.closeAllConnections();
    });
    await foreign?.cleanup();
  });

  it('lets a permitted SVID through as Service::"spiffe://…" with an assertion naming the SPIFFE ID', async () => {
    const web = await issue("/web");
    const r = await get("api.localhost", web);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const seen = upstream.seen.at(-1)!;
    const token = String(seen.headers["x-zt-assertion"]);
    const keys = await zt.services.assertions.jwks();
    const { payload } = await jwtVerify(token, createLocalJWKSet(keys as never), {
      audience: "api",
    });
    expect(payload.sub).toBe(`spiffe://${TD}/web`);
    expect(payload["groups"]).toEqual([]);
    expect(payload["sid"]).toBeUndefined();
    expect(seen.headers["x-zt-decision-id"]).toMatch(/^dec_/);
  });

  it("denies another SVID by policy: 403 with a decision id, audited as the Service principal", async () => {
    const batch = await issue("/batch");
    const r = await get("api.localhost", batch);
    expect(r.status).toBe(403);
    const err = r.body["error"] as { code: string; decision_id: string; reason: string };
    expect(err.code).toBe("ZT_POLICY_DENIED");
    expect(err.decision_id).toMatch(/^dec_/);
    expect(r.headers["x-zt-decision-id"]).toBe(err.decision_id);
    await zt.ctx.audit.flush();
    const row = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("decision_id", "=", err.decision_id)
      .executeTakeFirstOrThrow();
    expect(row.subject).toBe(`spiffe://${TD}/batch`);
    expect(String(row.data)).toContain(`Service::\\"spiffe://${TD}/batch\\"`);
    expect(String(row.data)).toContain('"authenticated_by":"mtls"');
  });

  it("refuses a revoked SVID (cert-revoked) and cuts its live WebSocket", async () => {
    const web = await issue("/web");
    expect((await get("api.localhost", web)).status).toBe(200);
    const ws = await openSvidWebSocket(web);
    const closed = new Promise<void>((r) => ws.once("close", () => r()));
    await svc.revoke({ serial: web.serial, reason: "key-compromise", actor: "test" });
    await closed;
    const r = await get("api.localhost", web);
    expect(r.status).toBe(403);
    expect(r.body["error"]).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-revoked",
    });
    // Another SVID for the same workload still works: the serial was revoked, not the ID.
    expect((await get("api.localhost", await issue("/web"))).status).toBe(200);
  });

  it("audits the cut of a revoked SVID's live WebSocket: one session.cut naming the route, peer, serial and connection, linked to the svid.revoke record", async () => {
    const web = await issue("/web");
    const ws = await openSvidWebSocket(web);
    const closed = new Promise<void>((r) => ws.once("close", () => r()));
    await svc.revoke({ serial: web.serial, reason: "key-compromise", actor: "test" });
    await closed;
    const revoke = (await auditRows(zt.ctx, "svid.revoke", ["id", "data"])).filter((r) =>
      String(r.data).includes(web.serial),
    );
    expect(revoke).toHaveLength(1);
    const cuts = (
      await auditRecords(zt.ctx, "session.cut", ["subject", "route", "source_ip", "reason"])
    ).filter((r) => r.data["cert_serial"] === web.serial);
    expect(cuts).toEqual([
      {
        subject: `spiffe://${TD}/web`,
        route: "api",
        source_ip: "127.0.0.1",
        reason: "cert-revoked",
        data: expect.objectContaining({
          session_id: `svc:spiffe://${TD}/web`,
          cause: "svid-revoked",
          revoke_reason: "key-compromise",
          revoke_id: revoke[0]!.id,
          connection_id: expect.stringMatching(/^dec_/),
        }),
      },
    ]);
  });

  it("decides an SVID's WebSocket whatever its Origin: a workload, not a browser (no websocket-origin check)", async () => {
    const web = await issue("/web");
    const ws = await openSvidWebSocket(web, "https://evil.localhost");
    const closed = new Promise<void>((r) => ws.once("close", () => r()));
    ws.close();
    await closed;
  });

  it("refuses an SVID from another CA (cert-untrusted), audited; no certificate falls back to sessions", async () => {
    const other = await (
      await pkiService(foreign.ctx)
    ).issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "test" });
    const r = await get("api.localhost", other);
    expect(r.status).toBe(401);
    expect(r.body["error"]).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-untrusted",
    });
    await zt.ctx.audit.flush();
    const rows = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", "authn.mtls")
      .execute();
    expect(rows.map((x) => x.reason)).toEqual(
      expect.arrayContaining(["cert-revoked", "cert-untrusted"]),
    );
    // What the PEP records is what the mtls_failures alert counts.
    const engine = new AlertEngine(
      parseAlertsConfig({
        jails: [],
        denial_burst: null,
        fan_out: null,
        new_network: null,
        break_glass: false,
        mtls_failures: { threshold: rows.length, window: "1h" },
      }),
    );
    const fired = rows.flatMap((r) => engine.evaluate(toAlertEvent(r)).alerts);
    expect(fired.map((a) => [a.rule, a.key])).toEqual([["mtls-failures", "ip:127.0.0.1"]]);
    const anon = await get("api.localhost");
    expect(anon.status).toBe(401);
    expect(anon.body["error"]).toMatchObject({ code: "ZT_AUTH_REQUIRED" });
  });

  it("works with curl --cert (a client outside Node)", async () => {
    const dir = tempDir("zt-mtls-curl-");
    const web = await issue("/web");
    writeFileSync(join(dir, "ca.pem"), bundle);
    writeFileSync(join(dir, "cert.pem"), web.chainPem);
    writeFileSync(join(dir, "key.pem"), web.keyPem, { mode: 0o600 });
    const curl = (extra: string[]) =>
      promisify(execFile)("curl", [
        "-sS",
        "-o",
        "-",
        "-w",
        "\\n%{http_code}",
        "--cacert",
        join(dir, "ca.pem"),
        "--resolve",
        `api.localhost:${port}:127.0.0.1`,
        ...extra,
        `https://api.localhost:${port}/hello`,
      ]);
    // The listener certificate names the route hosts, so curl verifies it as-is.
    const ok = await curl(["--cert", join(dir, "cert.pem"), "--key", join(dir, "key.pem")]);
    expect(ok.stdout.trim().split("\n").at(-1)).toBe("200");
    const none = await curl([]);
    expect(none.stdout.trim().split("\n").at(-1)).toBe("401");
  });

  it("upstream_mtls: presents zt's own SVID to an https upstream that verifies it", async () => {
    const web = await issue("/web");
    const r = await get("secure.localhost", web);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(presented.at(-1)).toBe(`spiffe://${TD}/zt/pep`);
  });

  it("client_certs: require refuses a request without a certificate (401 client-cert-required)", async () => {
    const tls = await pkiServerTlsOptions(zt.ctx, { hostnames: ["localhost"] });
    const strict = createPep(zt.services, {
      tls: { key: tls.key, cert: tls.cert, ca: tls.ca, clientCerts: "require" },
      pepId: "strict",
    });
    const addr = await strict.listen("127.0.0.1", 0);
    const main = port;
    port = addr.port;
    try {
      const none = await get("api.localhost");
      expect(none.status).toBe(401);
      expect(none.body["error"]).toMatchObject({
        code: "ZT_CLIENT_CERT_REFUSED",
        reason: "client-cert-required",
      });
      expect((await get("api.localhost", await issue("/web"))).status).toBe(200);
    } finally {
      port = main;
      await strict.close();
    }
  });

  it("swaps its own listener certificate from zt's CA at half its lifetime, without a restart", async () => {
    const node = await createPepNode(zt.ctx, zt.services, {
      host: "127.0.0.1",
      tlsRefreshEveryMs: 100,
    });
    const addr = await node.pep.listen("127.0.0.1", 0);
    try {
      const first = await servedSerial(addr.port);
      clock.advance(45 * 60_000); // past half of pki.svid_ttl (1h)
      expect(await nextServedSerial(addr.port, first)).not.toBe(first);
    } finally {
      await node.close();
    }
  });

  // Last: it moves the shared clock forward.
  it("refuses an SVID past its validity (cert-expired), checked at every request", async () => {
    const web = await svc.issueSvidWithNewKey({
      spiffeId: `spiffe://${TD}/web`,
      ttlMs: 10 * 60_000,
      actor: "test",
    });
    expect((await get("api.localhost", web)).status).toBe(200);
    clock.advance(11 * 60_000);
    const r = await get("api.localhost", web);
    expect(r.status).toBe(401);
    expect(r.body["error"]).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-expired",
    });
  });
});
