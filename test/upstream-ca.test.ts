/**
 * `routes[].upstream_ca`: an https upstream whose certificate comes from a private CA
 * (made here by the real `openssl` CLI), served by a real Node https server on loopback.
 * zt's own proxy verifies it against that file, for requests and WebSocket upgrades,
 * always against the name in `to` (never the client's Host, with preserve_host); without
 * the file (the system's CAs) or with another CA's, nothing reaches the app. Config load
 * refuses the files and settings that could not work.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { validateConfig } from "../src/config/index.js";
import { DEMO_POLICY, demoConfigYaml } from "../src/app/demo.js";
import { runUp } from "../src/app/run-up.js";
import { isZtError } from "../src/core/errors.js";
import { UpstreamAgents } from "../src/proxy/forward.js";
import { request } from "./helpers/http-client.js";
import { makePrivateCa, type PrivateCa } from "./helpers/tls.js";
import { raw, startPep, startUpstream, tempDir, type PepFixture } from "./pep-fixture.js";

const POLICY = `permit (principal in Group::"eng", action, resource);`;

describe("an https upstream signed by a private CA (routes[].upstream_ca), through zt's proxy", () => {
  let ca: PrivateCa;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  /** An app whose certificate names only the public host, reached by IP address. */
  let publicNamed: Awaited<ReturnType<typeof startUpstream>>;
  let zt: PepFixture;
  let cookie: string;

  beforeAll(async () => {
    const dir = tempDir("zt-upstream-ca-");
    // Root → two intermediates → the app (which sends its chain); zt trusts the root only.
    ca = makePrivateCa(dir, "localhost", { other: true, intermediates: 2 });
    upstream = await startUpstream({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    const pub = makePrivateCa(tempDir("zt-upstream-ca-pub-"), "pub.localhost");
    publicNamed = await startUpstream({ tls: { key: pub.serverKey, cert: pub.serverCert } });
    const to = `https://localhost:${upstream.port}`;
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "trusted", from: "http://trusted.localhost", to, upstream_ca: ca.caFile },
        // The same upstream verified against the system's CAs, and against another CA.
        { name: "system", from: "http://system.localhost", to },
        {
          name: "other",
          from: "http://other.localhost",
          to,
          upstream_ca: join(dir, "other-ca.pem"),
        },
        // The client's Host goes upstream; the certificate is still checked against `to`.
        {
          name: "preserved",
          from: "http://preserved.localhost",
          to,
          upstream_ca: ca.caFile,
          preserve_host: true,
        },
        // `to` by IP address, the certificate naming only the public host the client
        // sends: it does not cover 127.0.0.1, so nothing may pass, upgrades included.
        {
          name: "byip",
          from: "http://pub.localhost",
          to: `https://127.0.0.1:${publicNamed.port}`,
          upstream_ca: pub.caFile,
          preserve_host: true,
        },
      ],
    });
    await zt.addUser("alice", ["eng"]);
    cookie = (await zt.session("alice")).cookie;
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
    await publicNamed?.close();
  });

  const get = (host: string) =>
    request(zt.port, { host, path: "/items", headers: { cookie, accept: "application/json" } });

  it("reaches the app over https verified against the route's CA file", async () => {
    const before = upstream.seen.length;
    const r = await get("trusted.localhost");
    expect(r.status, r.body).toBe(200);
    expect(r.json()).toEqual({ ok: true, url: "/items" });
    expect(upstream.seen.length).toBe(before + 1);
    // zt's signed assertion went along, over the verified connection.
    expect(String(upstream.seen.at(-1)!.headers["x-zt-assertion"])).toMatch(
      /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/,
    );
  });

  it("refuses the same upstream verified against the system's CAs or another CA: 502, the app never asked", async () => {
    for (const host of ["system.localhost", "other.localhost"]) {
      const before = upstream.seen.length;
      const r = await get(host);
      expect(r.status, `${host}: ${r.body}`).toBe(502);
      expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_UPSTREAM_UNAVAILABLE");
      expect(upstream.seen.length).toBe(before);
    }
  });

  const handshake = (host: string) =>
    raw(
      zt.port,
      [
        `GET /ws HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
          `Cookie: ${cookie}\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n") },
    );

  it("verifies a WebSocket upgrade's upstream with the same CA file", async () => {
    const before = upstream.seen.length;
    const ok = await handshake("trusted.localhost");
    expect(ok.status, ok.text).toBe(101);
    expect(upstream.seen.length).toBe(before + 1);
    expect(upstream.seen.at(-1)!.method).toBe("GET");
    const refused = await handshake("system.localhost");
    expect(refused.status, refused.text).toBe(502);
    expect(upstream.seen.length).toBe(before + 1);
  });

  it("checks the certificate against the name in `to`, not the client's Host (preserve_host), for requests and upgrades", async () => {
    // `to` is localhost, which the certificate names: both pass, with the client's Host.
    const before = upstream.seen.length;
    const r = await get("preserved.localhost");
    expect(r.status, r.body).toBe(200);
    const ws = await handshake("preserved.localhost");
    expect(ws.status, ws.text).toBe(101);
    expect(upstream.seen.length).toBe(before + 2);
    expect(upstream.seen.at(-1)!.headers.host).toBe("preserved.localhost");
    // `to` is 127.0.0.1, which the certificate does not cover (it names pub.localhost, the
    // Host the client sends): neither a request nor an upgrade may reach the app.
    const denied = await get("pub.localhost");
    expect(denied.status, denied.body).toBe(502);
    const deniedWs = await handshake("pub.localhost");
    expect(deniedWs.status, deniedWs.text).toBe(502);
    expect(publicNamed.seen).toHaveLength(0);
  });

  it("builds each route's TLS context once, not per connection", () => {
    const agents = new UpstreamAgents();
    const route = (name: string) => zt.config.routes.find((r) => r.name === name)!;
    const first = agents.tlsFor(route("trusted"))!.secureContext;
    expect(first).toBeDefined();
    expect(agents.tlsFor(route("trusted"))!.secureContext).toBe(first);
    // The same CA file on another route: the same context; another file: another one.
    expect(agents.tlsFor(route("preserved"))!.secureContext).toBe(first);
    expect(agents.tlsFor(route("other"))!.secureContext).not.toBe(first);
    // No CA file: Node's default context (the system's CAs).
    expect(agents.tlsFor(route("system"))).toEqual({});
  });
});

describe("routes[].upstream_ca at config load", () => {
  const dir = tempDir("zt-upstream-ca-config-");
  mkdirSync(join(dir, "pki"));
  const ca = makePrivateCa(join(dir, "pki"), "app.internal");
  const load = (route: Record<string, unknown>) =>
    validateConfig(
      {
        routes: [
          { name: "app", from: "http://app.localhost", to: "https://app.internal", ...route },
        ],
      },
      join(dir, "zt.yaml"),
    );
  const refusal = (route: Record<string, unknown>): string => {
    try {
      load(route);
    } catch (e) {
      if (!isZtError(e)) throw e;
      expect(e.code).toBe("ZT_CONFIG_INVALID");
      return e.message;
    }
    throw new Error("loaded");
  };

  it("resolves a relative path against the config's folder and keeps the certificates", () => {
    const c = load({ upstream_ca: "pki/ca.pem" });
    expect(c.routes[0]!.upstream_ca).toBe(ca.caFile);
    expect(c.routes[0]!.upstreamCaPem).toContain("-----BEGIN CERTIFICATE-----");
  });

  it("refuses a CA file for an http upstream, a missing file, a file without certificates, a private key, a broken certificate, a server's own certificate", () => {
    expect(refusal({ to: "http://127.0.0.1:9", upstream_ca: ca.caFile })).toMatch(
      /routes\[0\]\.upstream_ca: route "app" reaches its upstream over http/,
    );
    expect(refusal({ upstream_ca: "pki/missing.pem" })).toMatch(
      /routes\[0\]\.upstream_ca: cannot read .*missing\.pem \(ENOENT\)/,
    );
    writeFileSync(join(dir, "empty.pem"), "not a certificate\n");
    expect(refusal({ upstream_ca: "empty.pem" })).toMatch(/holds no PEM certificate/);
    expect(refusal({ upstream_ca: ca.serverKeyFile })).toMatch(/contains a private key/);
    // A key OpenSSL would still read, whose BEGIN line is not a clean PEM boundary.
    writeFileSync(
      join(dir, "sloppy.pem"),
      readFileSync(ca.caFile, "utf8") +
        readFileSync(ca.serverKeyFile, "utf8").replace("PRIVATE KEY-----\n", "PRIVATE KEY----- \n"),
    );
    expect(refusal({ upstream_ca: "sloppy.pem" })).toMatch(/contains a private key/);
    // The app's own certificate (issued by the CA, not a CA): it could never verify.
    expect(refusal({ upstream_ca: ca.serverCertFile })).toMatch(
      /certificate 1 in .*server\.pem \(CN=app\.internal\) is not a CA certificate; give the CA that issued it/,
    );
    writeFileSync(
      join(dir, "trusted.pem"),
      readFileSync(ca.caFile, "utf8").replaceAll("CERTIFICATE", "TRUSTED CERTIFICATE"),
    );
    expect(refusal({ upstream_ca: "trusted.pem" })).toMatch(
      /holds a TRUSTED CERTIFICATE block; expected CA certificates only/,
    );
    writeFileSync(
      join(dir, "broken.pem"),
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    expect(refusal({ upstream_ca: "broken.pem" })).toMatch(
      /certificate 1 in .*broken\.pem does not parse/,
    );
    expect(refusal({ upstream_ca: "" })).toMatch(/upstream_ca/);
  });
});

describe("zt up --demo with an https route added to the demo config", () => {
  it("points only the plain-http loopback routes at the demo app; an https route keeps its TLS and CA", async () => {
    const dir = tempDir("zt-upstream-ca-demo-");
    const ca = makePrivateCa(dir, "localhost");
    mkdirSync(join(dir, "policies"));
    writeFileSync(join(dir, "policies", "demo.cedar"), DEMO_POLICY);
    writeFileSync(
      join(dir, "zt.yaml"),
      demoConfigYaml(9000).replace(
        "policies:",
        `  - { name: secure, from: "http://secure.localhost:8443", to: "https://127.0.0.1:9443", upstream_ca: ${ca.caFile} }\npolicies:`,
      ),
    );
    const zt = await runUp({
      configPath: join(dir, "unused.yaml"),
      env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
      demoDir: dir,
      demoPort: 0,
      out: () => undefined,
    });
    try {
      const to = Object.fromEntries(zt.ctx.config.routes.map((r) => [r.name, r.to]));
      expect(to["whoami"]).toBe(`http://127.0.0.1:${zt.demo!.app.port}`);
      expect(to["secure"]).toBe("https://127.0.0.1:9443");
      const secure = zt.ctx.config.routes.find((r) => r.name === "secure")!;
      expect(secure.upstreamCaPem).toContain("-----BEGIN CERTIFICATE-----");
    } finally {
      await zt.close();
    }
  }, 60_000);
});
