/**
 * Forward-auth with the real nginx (auth_request), the real Caddy (forward_auth) and the
 * real HAProxy (zt's Lua action, examples/haproxy/zt-authz.lua) in front of a real upstream: an allowed user reaches it with zt's headers (and not the
 * ones the client forged), a denied user gets 403 with a decision id, an anonymous user
 * is sent to zt's login — which works through the proxy — and a revoked session is out.
 * The configs are what `zt forward-auth config` writes (bench/front-proxies.ts wraps them in
 * a minimal main file), the same text docs/forward-auth.md shows.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import * as OTPAuth from "otpauth";
import {
  caddyMain,
  generated,
  haproxyMain,
  nginxMain,
  writeHaproxySpoe,
  type LoopbackFront,
} from "../bench/front-proxies.js";
import type { FrontRoute } from "../src/proxy/front-proxy-config.js";
import { queryAudit } from "../src/audit/index.js";
import { request } from "./helpers/http-client.js";
import { makePrivateCa } from "./helpers/tls.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";
import {
  freePort,
  startPep,
  startUpstream,
  tempDir,
  type PepFixture,
  type PepFixtureOptions,
} from "./pep-fixture.js";

const POLICY = `
@id("eng-app")
@reason("eng-may-use-app")
permit (principal in Group::"eng", action in [Action::"GET", Action::"POST"], resource == App::"app")
when { context.mfa_age_seconds < 3600 };

@id("no-admin")
@reason("admin-area-closed")
forbid (principal, action, resource == App::"app") when { context.path like "/admin*" };
`;

function findBinary(names: string[]): string {
  for (const n of names) if (existsSync(n)) return n;
  throw new Error(
    `none of ${names.join(", ")} is installed (CI installs the Debian packages nginx, caddy and haproxy)`,
  );
}

function totp(secret: string): string {
  return new OTPAuth.TOTP({
    secret: OTPAuth.Secret.fromBase32(secret),
    digits: 6,
    period: 30,
    algorithm: "SHA1",
  }).generate();
}

/** Sends raw bytes and returns the response head (status line and headers) as text. */
function rawHead(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(bytes));
    let got = "";
    const done = () => {
      s.destroy();
      resolve(got.split("\r\n\r\n")[0]!);
    };
    s.setTimeout(10_000, () => reject(new Error(`no answer: ${got}`)));
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (got.includes("\r\n\r\n")) done();
    });
    s.on("end", done);
    s.on("error", reject);
  });
}

/** Waits until something accepts connections on the port (the peer finished starting). */
async function waitForPort(port: number, child: ChildProcess, output: () => string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}:\n${output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened:\n${output()}`);
}

/** nginx in the foreground with `dir` as its prefix and `dir/nginx.conf`. */
function nginxArgs(dir: string): string[] {
  const g = `daemon off; pid ${dir}/nginx.pid; error_log stderr;`;
  return ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", "stderr", "-g", g];
}

function startPeer(
  bin: string,
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; output: () => string; stop(): Promise<void> } {
  const child = spawn(bin, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return {
    child,
    output: () => out,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

type Peer = ReturnType<typeof startPeer>;

/** The real nginx with `conf` as `dir/nginx.conf`. */
function startNginx(dir: string, conf: string): Peer {
  const bin = findBinary(["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]);
  mkdirSync(join(dir, "tmp"), { recursive: true });
  writeFileSync(join(dir, "nginx.conf"), conf);
  return startPeer(bin, nginxArgs(dir));
}

/** The real Caddy with `caddyfile` as `dir/Caddyfile` and its own home under `dir`. */
function startCaddy(dir: string, caddyfile: string): Peer {
  const bin = findBinary(["/usr/bin/caddy", "/usr/local/bin/caddy"]);
  writeFileSync(join(dir, "Caddyfile"), caddyfile);
  const home = join(dir, "home");
  mkdirSync(home, { recursive: true });
  return startPeer(bin, ["run", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"], {
    HOME: home,
    XDG_DATA_HOME: join(home, "data"),
    XDG_CONFIG_HOME: join(home, "config"),
  });
}

const RUN_AS_ROOT = process.getuid?.() === 0;

/** zt's single route "app" on app.localhost:listen, for a proxy started without a zt fixture. */
function appRoute(listen: number, upstream: number): FrontRoute {
  return {
    name: "app",
    from: `http://app.localhost:${listen}`,
    to: `http://127.0.0.1:${upstream}`,
    host: "app.localhost",
    port: listen,
    pathPrefix: "/",
    preserve_host: false,
    websockets: true,
  };
}

/** `text` without the lines matching `line` (there must be some: the config has not drifted). */
function withoutLines(text: string, line: RegExp): string {
  const kept = text.split("\n").filter((l) => !line.test(l));
  if (kept.length === text.split("\n").length) throw new Error(`no line matches ${String(line)}`);
  return kept.join("\n");
}

/** nginx.conf: `zt forward-auth config nginx` for these routes, in a minimal main file. */
function nginxConf(dir: string, front: LoopbackFront, edit = (t: string) => t): string {
  return nginxMain({ dir, runAsRoot: RUN_AS_ROOT, http: edit(generated("nginx", front)) });
}

/** Caddyfile: `zt forward-auth config caddy` for these routes, with loopback-only globals. */
function caddyConf(front: LoopbackFront, edit = (t: string) => t): string {
  return caddyMain(edit(generated("caddy", front)));
}

/** haproxy.cfg: `zt forward-auth config haproxy-lua` for these routes (the shipped Lua action). */
function haproxyLuaConf(front: LoopbackFront): string {
  const lua = join(import.meta.dirname, "..", "examples", "haproxy", "zt-authz.lua");
  return haproxyMain(generated("haproxy-lua", front, { luaFile: lua }));
}

interface ProxyUnderTest {
  name: string;
  /**
   * The proxy itself answers 400 to a request with two Authorization headers, never
   * asking zt (nginx: "client sent duplicate header line").
   */
  refusesDuplicateAuthorization?: boolean;
  /** nginx's `error_page 401` redirects every anonymous client, an API client's too. */
  redirectsEveryAnonymous?: boolean;
  start(
    dir: string,
    ports: { listen: number; zt: number; upstream: number },
    zt: PepFixture,
  ): Promise<() => Promise<void>>;
}

/**
 * zt with one route, "app" on app.localhost:<listen> to a fresh upstream, and the free
 * port the front proxy is to listen on.
 */
async function appBehindProxy(extra: Partial<PepFixtureOptions> = {}) {
  const upstream = await startUpstream();
  const listen = await freePort();
  const host = `app.localhost:${listen}`;
  const zt = await startPep({
    policies: POLICY,
    routes: [{ name: "app", from: `http://${host}`, to: `http://127.0.0.1:${upstream.port}` }],
    ...extra,
  });
  return { upstream, listen, host, zt };
}

/** What the front proxy serves: zt's routes, on the proxy's port. */
function front(ports: { listen: number; zt: number }, zt: PepFixture): LoopbackFront {
  return { routes: zt.config.routes, listen: ports.listen, zt: ports.zt };
}

const PROXIES: ProxyUnderTest[] = [
  {
    name: "nginx auth_request",
    refusesDuplicateAuthorization: true,
    redirectsEveryAnonymous: true,
    async start(dir, ports, zt) {
      const peer = startNginx(dir, nginxConf(dir, front(ports, zt)));
      await waitForPort(ports.listen, peer.child, peer.output);
      return peer.stop;
    },
  },
  {
    name: "Caddy forward_auth",
    async start(dir, ports, zt) {
      const peer = startCaddy(dir, caddyConf(front(ports, zt)));
      await waitForPort(ports.listen, peer.child, peer.output);
      return peer.stop;
    },
  },
  {
    name: "HAProxy (zt's Lua action)",
    async start(dir, ports, zt) {
      const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
      writeFileSync(join(dir, "haproxy.cfg"), haproxyLuaConf(front(ports, zt)));
      const peer = startPeer(bin, ["-db", "-f", join(dir, "haproxy.cfg")]);
      await waitForPort(ports.listen, peer.child, peer.output);
      return peer.stop;
    },
  },
  {
    name: "HAProxy (SPOE agent, no Lua)",
    async start(dir, ports, zt) {
      const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
      const spoa = (await zt.pep.listenSpoa("127.0.0.1", 0)).port;
      const cfg = writeHaproxySpoe(dir, { ...front(ports, zt), spoa });
      const peer = startPeer(bin, ["-db", "-f", cfg]);
      await waitForPort(ports.listen, peer.child, peer.output);
      return peer.stop;
    },
  },
];

for (const proxy of PROXIES) {
  describe(`forward-auth behind ${proxy.name}`, () => {
    let zt: PepFixture;
    let upstream: Awaited<ReturnType<typeof startUpstream>>;
    let stopProxy: (() => Promise<void>) | undefined;
    let port: number;
    let host: string;
    const users: Record<string, { password: string; totpSecret: string }> = {};

    beforeAll(async () => {
      upstream = await startUpstream();
      port = await freePort();
      host = `app.localhost:${port}`;
      zt = await startPep({
        policies: POLICY,
        routes: [
          {
            name: "app",
            from: `http://app.localhost:${port}`,
            to: `http://127.0.0.1:${upstream.port}`,
          },
        ],
      });
      users["alice"] = await zt.addUser("alice", ["eng"]);
      users["bob"] = await zt.addUser("bob", ["ops"]);
      const dir = tempDir("zt-proxy-");
      if (process.getuid?.() === 0) (await import("node:fs")).chmodSync(dir, 0o755);
      stopProxy = await proxy.start(
        dir,
        { listen: port, zt: zt.port, upstream: upstream.port },
        zt,
      );
    }, 60_000);

    afterAll(async () => {
      await stopProxy?.();
      await zt?.close();
      await upstream?.close();
    });

    async function loginThroughProxy(name: string): Promise<string> {
      const u = users[name]!;
      const r = await request(port, {
        host,
        path: "/.zt/login",
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: name, password: u.password, totp: totp(u.totpSecret) }),
      });
      expect(r.status, r.body).toBe(200);
      return r.headers["set-cookie"]![0]!.split(";")[0]!;
    }

    it("sends an anonymous browser to zt's login, on the proxy's own host", async () => {
      const r = await request(port, {
        host,
        path: "/private/page?x=1",
        headers: { accept: "text/html" },
      });
      expect(r.status).toBe(302);
      expect(r.headers.location).toBe(
        `http://${host}/.zt/login?rd=${encodeURIComponent("/private/page?x=1")}`,
      );
      // A shared cache must not keep the redirect (it would send the next user to log in).
      expect(r.headers["cache-control"]).toBe("no-store");
      expect(upstream.seen).toHaveLength(0);
      const page = await request(port, { host, path: "/.zt/login?rd=%2Fprivate%2Fpage" });
      expect(page.status).toBe(200);
      expect(page.body).toContain('name="totp"');
    });

    it("refuses an anonymous API client with a 401 JSON body that is neither sniffed nor cached", async () => {
      const r = await request(port, {
        host,
        path: "/private/data",
        headers: { accept: "application/json" },
      });
      if (proxy.redirectsEveryAnonymous) {
        expect(r.status).toBe(302);
        expect(r.headers["cache-control"]).toBe("no-store");
        return;
      }
      expect(r.status).toBe(401);
      expect(r.headers["content-type"]).toContain("application/json");
      expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_AUTH_REQUIRED");
      expect(r.headers["x-content-type-options"]).toBe("nosniff");
      expect(r.headers["cache-control"]).toBe("no-store");
      expect(upstream.seen).toHaveLength(0);
    });

    it("lets an allowed user through with zt's signed assertion, never the client's forged headers", async () => {
      const cookie = await loginThroughProxy("alice");
      const r = await request(port, {
        host,
        path: "/hello/world?y=1",
        headers: {
          cookie: `theme=dark; ${cookie}; lang=en`,
          accept: "application/json",
          "x-zt-user": "mallory",
          "x-zt-groups": "admins",
          "x-zt-assertion": "forged",
          // Other X-Zt-* names, and underscore spellings that CGI/WSGI apps read as X-Zt-*.
          "x-zt-breakglass": "active",
          "x-zt-reason": "forged",
          x_zt_user: "root",
          x_zt_groups: "admins",
        },
      });
      expect(r.status, r.body).toBe(200);
      const seen = upstream.seen.at(-1)!;
      expect(seen.headers["x-zt-user"]).toBe("alice");
      // No X-Zt-* header the client sent reaches the app, in any spelling.
      for (const name of ["x-zt-breakglass", "x-zt-reason", "x_zt_user", "x_zt_groups"])
        expect(seen.headers[name], name).toBeUndefined();
      // The session token is a credential: the app never sees it, other cookies pass.
      expect(seen.headers.cookie).not.toContain("zt_session");
      expect(seen.headers.cookie).toContain("theme=dark");
      expect(seen.headers.cookie).toContain("lang=en");
      expect(seen.headers["x-zt-groups"]).toBe("eng");
      expect(String(seen.headers["x-zt-decision-id"])).toMatch(/^dec_/);
      const jwks = createLocalJWKSet(await zt.services.assertions.jwks());
      const { payload } = await jwtVerify(String(seen.headers["x-zt-assertion"]), jwks, {
        audience: "app",
      });
      expect(payload.sub).toBe("alice");
      expect(payload["decision_id"]).toBe(seen.headers["x-zt-decision-id"]);
    });

    it("denies a user outside the policy with 403, the decision id and the reason", async () => {
      const cookie = await loginThroughProxy("bob");
      const before = upstream.seen.length;
      const r = await request(port, {
        host,
        path: "/",
        headers: { cookie, accept: "application/json" },
      });
      expect(r.status).toBe(403);
      const body = r.json<{ error: { decision_id: string; reason: string; hint: string } }>();
      expect(body.error.decision_id).toMatch(/^dec_/);
      expect(body.error.reason).toBe("no-matching-permit");
      expect(body.error.hint).toContain("request access");
      expect(r.headers["x-zt-decision-id"]).toBe(body.error.decision_id);
      expect(r.body).not.toContain("permit (");
      expect(upstream.seen.length).toBe(before);
      expect(r.headers["x-content-type-options"]).toBe("nosniff");
      expect(r.headers["cache-control"]).toBe("no-store");
      await zt.ctx.audit.flush();
      const rows = await zt.ctx.store.db
        .selectFrom("audit_events")
        .selectAll()
        .where("decision_id", "=", body.error.decision_id)
        .execute();
      expect(rows[0]?.outcome).toBe("deny");
      expect(JSON.parse(rows[0]!.data)).toMatchObject({
        host: "app.localhost",
        path: "/",
        method: "GET",
        // HAProxy's SPOE agent decides through the same code under its own PEP id.
        pep: proxy.name.includes("SPOE") ? "pep-1/spoa" : "pep-1/forward-auth",
      });
    });

    it("serves the denied page and the sign-in page with zt's page security headers (no framing, no sniffing, no caching)", async () => {
      const { cookie } = await zt.session("bob");
      const before = upstream.seen.length;
      const denied = await request(port, {
        host,
        path: "/",
        headers: { cookie, accept: "text/html" },
      });
      expect(denied.status).toBe(403);
      expect(denied.headers["content-type"]).toContain("text/html");
      expect(denied.body).toContain("no-matching-permit");
      expect(upstream.seen.length).toBe(before);
      const login = await request(port, { host, path: "/.zt/login?rd=%2F" });
      expect(login.status).toBe(200);
      expect(login.body).toContain('name="totp"');
      for (const [page, r] of [
        ["denied", denied],
        ["login", login],
      ] as const) {
        expect(r.headers["x-frame-options"], page).toBe("DENY");
        expect(String(r.headers["content-security-policy"]), page).toContain(
          "frame-ancestors 'none'",
        );
        expect(String(r.headers["content-security-policy"]), page).toContain("default-src 'none'");
        expect(r.headers["x-content-type-options"], page).toBe("nosniff");
        expect(r.headers["cache-control"], page).toBe("no-store");
        expect(r.headers["referrer-policy"], page).toBe("same-origin");
      }
    });

    it("keeps a zt Bearer session token away from the app", async () => {
      const { token } = await zt.session("alice");
      const r = await request(port, {
        host,
        path: "/api/items",
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
      });
      expect(r.status, r.body).toBe(200);
      const seen = upstream.seen.at(-1)!;
      expect(seen.url).toBe("/api/items");
      expect(seen.headers["x-zt-user"]).toBe("alice");
      expect(seen.headers.authorization).toBeUndefined();
    });

    it("stops a client's X-Original-* or X-Forwarded-Uri/-Method/-Host from choosing the URL decided on", async () => {
      const { cookie } = await zt.session("alice");
      const forged = {
        "x-original-url": `http://${host}/public`,
        "x-original-method": "GET",
        "x-forwarded-uri": "/public",
        "x-forwarded-method": "GET",
        "x-forwarded-host": host,
      };
      const before = upstream.seen.length;
      const r = await request(port, {
        host,
        path: "/admin/keys",
        headers: { cookie, accept: "application/json", ...forged },
      });
      expect(r.status).toBe(403);
      expect(upstream.seen.length).toBe(before);
      // The proxy sets (or clears) those headers itself: the forged copies change nothing.
      const ok = await request(port, {
        host,
        path: "/public",
        headers: {
          cookie,
          ...forged,
          "x-original-url": `http://${host}/admin/keys`,
          "x-forwarded-uri": "/admin/keys",
        },
      });
      expect(ok.status, ok.body).toBe(200);
      expect(upstream.seen.at(-1)!.url).toBe("/public");
    });

    it("stops a path the proxy forwards as sent but zt would resolve differently (/admin/../public)", async () => {
      const { cookie } = await zt.session("alice");
      for (const path of [
        "/admin/../public",
        "/admin/%2e%2e/public",
        "/admin/%2E%2E/public",
        "/admin/./../public",
        "//admin/..//public",
        "/public/..%2fadmin",
        "/%61dmin/keys",
      ]) {
        const before = upstream.seen.length;
        const r = await request(port, { host, path, headers: { cookie } });
        // nginx turns zt's 400 into a 500 (it accepts only 2xx, 401 and 403 from the check).
        expect([400, 500], `${path}: ${r.status}`).toContain(r.status);
        expect(upstream.seen.length, path).toBe(before);
      }
      // The same bytes in a form the proxy forwards unchanged pass.
      const ok = await request(port, { host, path: "/caf%c3%a9/x", headers: { cookie } });
      expect(ok.status).toBe(200);
      expect(upstream.seen.at(-1)!.url).toBe("/caf%c3%a9/x");
    });

    it("stops clients from asking /.zt/authz for an assertion through the proxy's pass-through", async () => {
      const { cookie } = await zt.session("alice");
      const r = await request(port, {
        host,
        path: "/.zt/authz",
        headers: {
          cookie,
          "x-forwarded-method": "GET",
          "x-forwarded-uri": "/public",
          "x-forwarded-host": host,
          "x-forwarded-proto": "http",
        },
      });
      // Either refused by the proxy or decided on as a path of the app: never zt's answer.
      expect(r.headers["x-zt-assertion"]).toBeUndefined();
      expect(r.body).not.toMatch(/ey[\w-]+\.ey/);
    });

    it("decides a WebSocket handshake like any request: a denied user's never reaches the app", async () => {
      const handshake = (cookie: string, path: string) =>
        rawHead(
          port,
          `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
            `Cookie: ${cookie}\r\nX-Zt-User: mallory\r\n\r\n`,
        );
      const before = upstream.seen.length;
      // bob's groups have no permit; alice's policy forbids /admin*.
      for (const [who, path] of [
        ["bob", "/ws"],
        ["alice", "/admin/ws"],
      ] as const) {
        const { cookie } = await zt.session(who);
        const head = await handshake(cookie, path);
        expect(head, `${who} ${path}`).not.toMatch(/^HTTP\/1\.1 (101|2\d\d)/);
      }
      expect(upstream.seen.length).toBe(before);
      const { cookie } = await zt.session("alice");
      const ok = await handshake(cookie, "/ws");
      // Allowed: the handshake reaches the app, with zt's headers, not the forged one.
      expect(ok, ok).toMatch(/^HTTP\/1\.1 101/);
      const seen = upstream.seen.at(-1)!;
      expect(seen.url).toBe("/ws");
      expect(seen.headers["x-zt-user"]).toBe("alice");
    });

    it("refuses a request carrying two session cookies, so neither can reach the app", async () => {
      const a = await zt.session("alice");
      const b = await zt.session("alice");
      const before = upstream.seen.length;
      const r = await request(port, {
        host,
        path: "/",
        headers: { cookie: `${a.cookie}; x=1; ${b.cookie}`, accept: "application/json" },
      });
      expect(r.status, r.body).toBe(403);
      expect(r.headers["x-zt-reason"] ?? r.body).toContain("session-cookie-duplicate");
      expect(upstream.seen.length).toBe(before);
    });

    // HTTP/1.1 clients may split cookies over several Cookie headers (Node's and curl's -H
    // do); HTTP/2 clients send one per cookie, which HAProxy merges. The session cookie
    // counts in whichever header it is, and the app keeps the other cookies of each.
    it("finds the session cookie in any of several Cookie headers, and strips it from that one only", async () => {
      const { cookie } = await zt.session("alice");
      for (const lines of [
        [`theme=dark; ${cookie}`, "lang=en"],
        ["theme=dark", cookie, "lang=en"],
        ["theme=dark", `lang=en; ${cookie}`],
      ]) {
        const head = await rawHead(
          port,
          `GET /split HTTP/1.1\r\nHost: ${host}\r\n` +
            lines.map((l) => `Cookie: ${l}\r\n`).join("") +
            "Accept: application/json\r\nConnection: close\r\n\r\n",
        );
        expect(head, lines.join(" | ")).toMatch(/^HTTP\/1\.1 200/);
        const seen = upstream.seen.at(-1)!;
        expect(seen.url).toBe("/split");
        expect(seen.headers["x-zt-user"]).toBe("alice");
        const cookies = String(seen.headers.cookie)
          .split(/;\s*/)
          .filter((c) => c !== "");
        expect(cookies.sort(), lines.join(" | ")).toEqual(["lang=en", "theme=dark"]);
      }
    });

    it("refuses two session cookies in two Cookie headers, even when one is not a session's", async () => {
      const a = await zt.session("alice");
      const before = upstream.seen.length;
      for (const [first, second] of [
        ["zt_session=forged", a.cookie],
        [a.cookie, "zt_session=forged"],
        [a.cookie, a.cookie],
      ]) {
        const head = await rawHead(
          port,
          `GET / HTTP/1.1\r\nHost: ${host}\r\nCookie: x=1; ${first}\r\nCookie: ${second}\r\n` +
            "Accept: application/json\r\nConnection: close\r\n\r\n",
        );
        expect(head, `${first} | ${second}`).toMatch(/^HTTP\/1\.1 403/);
        expect(head).toMatch(/x-zt-reason: session-cookie-duplicate/i);
      }
      expect(upstream.seen.length).toBe(before);
    });

    // zt decides on one Authorization header (Node's first, HAProxy's last): a proxy or app
    // could read another, so a request with several is refused whichever is zt's token.
    it("refuses a request carrying two Authorization headers: 403 with a decision id, audited (nginx: its own 400), app not reached", async () => {
      const { token, cookie } = await zt.session("alice");
      const before = upstream.seen.length;
      for (const [first, second, withCookie] of [
        [`Bearer ${token}`, "Basic eDp5", false],
        ["Basic eDp5", `Bearer ${token}`, false],
        [`Bearer ${token}`, `Bearer ${token}`, false],
        ["Basic eDp5", "Basic eDp6", true],
      ] as const) {
        const head = await rawHead(
          port,
          `GET /two-authz HTTP/1.1\r\nHost: ${host}\r\n${withCookie ? `Cookie: ${cookie}\r\n` : ""}` +
            `Authorization: ${first}\r\nAuthorization: ${second}\r\n` +
            "Accept: application/json\r\nConnection: close\r\n\r\n",
        );
        if (proxy.refusesDuplicateAuthorization) {
          expect(head, `${first} | ${second}`).toMatch(/^HTTP\/1\.1 400/);
          continue;
        }
        expect(head, `${first} | ${second}`).toMatch(/^HTTP\/1\.1 403/);
        expect(head).toMatch(/\r\nx-zt-reason: authorization-duplicate\r\n/i);
        const id = /\r\nx-zt-decision-id: (dec_[0-9A-Za-z_-]+)\r\n/i.exec(head)?.[1];
        expect(id, head).toBeDefined();
        await zt.ctx.audit.flush();
        const rows = await queryAudit(zt.ctx.store, { decisionId: id!, limit: 5 });
        expect(rows).toHaveLength(1);
        expect(rows[0]).toMatchObject({
          kind: "request.refused",
          outcome: "deny",
          reason: "authorization-duplicate",
        });
      }
      expect(upstream.seen.length).toBe(before);
    });

    it("counts Authorization headers, not the commas inside one (Digest)", async () => {
      const { cookie } = await zt.session("alice");
      const head = await rawHead(
        port,
        `GET /one-authz HTTP/1.1\r\nHost: ${host}\r\nCookie: ${cookie}\r\n` +
          'Authorization: Digest username="a", realm="b", nonce="c"\r\n' +
          "Accept: application/json\r\nConnection: close\r\n\r\n",
      );
      expect(head).toMatch(/^HTTP\/1\.1 200/);
      expect(upstream.seen.at(-1)!.url).toBe("/one-authz");
      expect(upstream.seen.at(-1)!.headers["x-zt-user"]).toBe("alice");
    });

    it("refuses a revoked session at the next request", async () => {
      // A second session for alice (a TOTP code may be used once: not through login again).
      const { cookie, sessionId } = await zt.session("alice");
      expect((await request(port, { host, path: "/", headers: { cookie } })).status).toBe(200);
      await zt.services.sessions.revoke([sessionId], "test");
      const r = await request(port, { host, path: "/", headers: { cookie, accept: "text/html" } });
      expect(r.status).toBe(302);
      expect(r.headers.location).toContain("/.zt/login?rd=");
    });
  });
}

describe("forward-auth behind HAProxy when zt cannot be asked", () => {
  it("fails closed: 503, and the upstream is never reached", async () => {
    const upstream = await startUpstream();
    const dead = await freePort();
    const listen = await freePort();
    const dir = tempDir("zt-proxy-");
    const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
    writeFileSync(
      join(dir, "haproxy.cfg"),
      haproxyLuaConf({ routes: [appRoute(listen, upstream.port)], listen, zt: dead }),
    );
    const peer = startPeer(bin, ["-db", "-f", join(dir, "haproxy.cfg")]);
    try {
      await waitForPort(listen, peer.child, peer.output);
      const r = await request(listen, {
        host: `app.localhost:${listen}`,
        path: "/",
        headers: { cookie: "zt_session=whatever", "x-zt-user": "mallory" },
      });
      expect(r.status).toBe(503);
      expect(upstream.seen).toHaveLength(0);
    } finally {
      await peer.stop();
      await upstream.close();
    }
  });
});

describe("forward-auth behind Caddy that passes the client's X-Original-* on", () => {
  // The documented Caddyfile removes them; zt must refuse them anyway.
  it("stops a client-sent X-Original-URL from choosing the URL decided on (400, app not reached)", async () => {
    const { upstream, listen, host, zt } = await appBehindProxy();
    const peer = startCaddy(
      tempDir("zt-proxy-"),
      caddyConf({ routes: zt.config.routes, listen, zt: zt.port }, (t) =>
        withoutLines(t, /header_up -X-Original-/),
      ),
    );
    try {
      await waitForPort(listen, peer.child, peer.output);
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      const allowed = await request(listen, { host, path: "/admin/keys", headers: { cookie } });
      expect(allowed.status).toBe(403);
      for (const forged of [
        { "x-original-url": `http://${host}/public`, "x-original-method": "GET" },
        { "x-original-url": `http://${host}/public` },
      ]) {
        const r = await request(listen, {
          host,
          path: "/admin/keys",
          headers: { cookie, accept: "application/json", ...forged },
        });
        expect(r.status).toBe(400);
        expect(r.body).toContain("forwarded-conflict");
      }
      expect(upstream.seen).toHaveLength(0);
    } finally {
      await peer.stop();
      await zt.close();
      await upstream.close();
    }
  }, 60_000);
});

describe("forward-auth behind nginx with two protected hosts", () => {
  it("stops an absolute-form request line naming another host from being decided as the Host header's app", async () => {
    const app = await startUpstream();
    const admin = await startUpstream();
    const listen = await freePort();
    const zt = await startPep({
      policies: `
permit (principal in Group::"eng", action, resource == App::"app");
permit (principal in Group::"ops", action, resource == App::"admin");
`,
      routes: [
        { name: "app", from: `http://app.localhost:${listen}`, to: `http://127.0.0.1:${app.port}` },
        {
          name: "admin",
          from: `http://admin.localhost:${listen}`,
          to: `http://127.0.0.1:${admin.port}`,
        },
      ],
    });
    const dir = tempDir("zt-proxy-");
    if (process.getuid?.() === 0) (await import("node:fs")).chmodSync(dir, 0o755);
    const peer = startNginx(dir, nginxConf(dir, { routes: zt.config.routes, listen, zt: zt.port }));
    try {
      await waitForPort(listen, peer.child, peer.output);
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      const own = await request(listen, {
        host: `app.localhost:${listen}`,
        path: "/x",
        headers: { cookie },
      });
      expect(own.status).toBe(200);
      expect(app.seen).toHaveLength(1);
      // nginx picks the server block (and upstream) by the request line's host.
      const r = await request(listen, {
        host: `app.localhost:${listen}`,
        path: `http://admin.localhost:${listen}/secret`,
        headers: { cookie, accept: "application/json" },
      });
      expect(r.status).toBe(403);
      expect(admin.seen).toHaveLength(0);
      expect(app.seen).toHaveLength(1);
    } finally {
      await peer.stop();
      await zt.close();
      await app.close();
      await admin.close();
    }
  }, 60_000);
});

// forward_auth.headers pinned to the front proxy's convention: a client's headers of the
// other convention are never read, so they decide nothing even where the proxy's config
// does not remove them (the documented configs do).
describe("forward-auth with forward_auth.headers pinned to the front proxy's convention", () => {
  async function pinnedCase(
    proxy: "nginx" | "caddy",
    forged: Record<string, string>,
  ): Promise<void> {
    const { upstream, listen, host, zt } = await appBehindProxy({
      extra: { forward_auth: { headers: proxy === "nginx" ? "x-original" : "x-forwarded" } },
    });
    const dir = tempDir("zt-proxy-");
    if (process.getuid?.() === 0) (await import("node:fs")).chmodSync(dir, 0o755);
    const peer =
      proxy === "nginx"
        ? startNginx(
            dir,
            nginxConf(dir, { routes: zt.config.routes, listen, zt: zt.port }, (t) =>
              withoutLines(t, /proxy_set_header X-Forwarded-(Uri|Method|Host) "";/),
            ),
          )
        : startCaddy(
            dir,
            caddyConf({ routes: zt.config.routes, listen, zt: zt.port }, (t) =>
              withoutLines(t, /header_up -X-Original-/),
            ),
          );
    try {
      await waitForPort(listen, peer.child, peer.output);
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      // Decided on the URL the proxy forwards, whatever the client added: denied …
      const admin = await request(listen, {
        host,
        path: "/admin/keys",
        headers: { cookie, accept: "application/json", ...forged },
      });
      expect(admin.status, admin.body).toBe(403);
      expect(admin.headers["x-zt-reason"] ?? admin.body).toContain("admin-area-closed");
      expect(upstream.seen).toHaveLength(0);
      // … and allowed, not refused as ambiguous (as under "auto").
      const page = await request(listen, {
        host,
        path: "/public",
        headers: { cookie, accept: "application/json", ...forged },
      });
      expect(page.status, page.body).toBe(200);
      expect(upstream.seen.map((r) => r.url)).toEqual(["/public"]);
      await zt.ctx.audit.flush();
      const decided = (
        await zt.ctx.store.db
          .selectFrom("audit_events")
          .select(["outcome", "data"])
          .where("kind", "=", "decision")
          .orderBy("seq")
          .execute()
      ).map((r) => [r.outcome, (JSON.parse(r.data) as { path: string }).path]);
      expect(decided).toEqual([
        ["deny", "/admin/keys"],
        ["allow", "/public"],
      ]);
    } finally {
      await peer.stop();
      await zt.close();
      await upstream.close();
    }
  }

  it("x-original behind nginx: a client's X-Forwarded-Uri/-Method/-Host choose nothing", async () => {
    await pinnedCase("nginx", {
      "x-forwarded-uri": "/public",
      "x-forwarded-method": "GET",
      "x-forwarded-host": "other.localhost",
    });
  }, 60_000);

  it("x-forwarded behind Caddy: a client's X-Original-URL/-Method choose nothing", async () => {
    await pinnedCase("caddy", {
      "x-original-url": "http://app.localhost/public",
      "x-original-method": "GET",
    });
  }, 60_000);
});

describe("forward-auth behind HAProxy's SPOE when zt cannot answer", () => {
  async function spoeCase(o: {
    trusted?: string[];
    agentUp: boolean;
    /** Puts zt in the state under test once the user exists, before the request. */
    prepare?: (zt: PepFixture) => void | Promise<void>;
    expect?: { status: number; reason: string; code?: string };
  }): Promise<void> {
    const { upstream, listen, host, zt } = await appBehindProxy({
      ...(o.trusted ? { trusted_proxies: o.trusted } : {}),
    });
    const spoa = o.agentUp ? (await zt.pep.listenSpoa("127.0.0.1", 0)).port : await freePort();
    const dir = tempDir("zt-proxy-");
    const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
    const cfg = writeHaproxySpoe(dir, { routes: zt.config.routes, listen, zt: zt.port, spoa });
    const peer = startPeer(bin, ["-db", "-f", cfg]);
    try {
      await waitForPort(listen, peer.child, peer.output);
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      await o.prepare?.(zt);
      const r = await request(listen, {
        host,
        path: "/",
        headers: { cookie, "x-zt-user": "mallory", "x-zt-assertion": "forged" },
      });
      const want = o.expect ?? { status: 503, reason: "authz-unavailable" };
      expect(r.status, r.body).toBe(want.status);
      const error = r.json<{ error: { reason: string; code: string } }>().error;
      expect(error.reason).toBe(want.reason);
      if (want.code) expect(error.code).toBe(want.code);
      expect(upstream.seen).toHaveLength(0);
    } finally {
      setBansForTest({});
      await peer.stop();
      await zt.close();
      await upstream.close();
    }
  }

  it("fails closed when the agent is down: 503, the upstream never reached", async () => {
    await spoeCase({ agentUp: false });
  }, 60_000);

  it("fails closed when HAProxy's address is not in trusted_proxies: the agent hangs up", async () => {
    await spoeCase({ agentUp: true, trusted: ["192.0.2.0/24"] });
  }, 60_000);

  it("fails closed while the audit log cannot keep up: 503 audit-backlog, as over HTTP", async () => {
    await spoeCase({
      agentUp: true,
      prepare(zt) {
        // Half of the writer's buffer queued at once: more than it commits before the request.
        for (let i = 0; i < 150_000; i++)
          zt.ctx.audit.record({ kind: "test.load", outcome: "info", data: { i } });
        expect(zt.ctx.audit.backlogged).toBe(true);
      },
      expect: { status: 503, reason: "audit-backlog" },
    });
  }, 60_000);

  // The policy decision denies a banned source too (reason source-banned): refused
  // before it, as over HTTP, a banned source costs no decision and no audit record.
  it("refuses a banned client address (HAProxy's src) before any decision, as over HTTP", async () => {
    await spoeCase({
      agentUp: true,
      prepare: (zt) => setBansForTest({ "127.0.0.1": zt.ctx.clock.now() + 3_600_000 }),
      expect: { status: 403, reason: "source-banned", code: "ZT_BANNED" },
    });
  }, 60_000);
});

// SPOP fragmentation (doc/SPOE.txt §3.2): HAProxy 2.x fragments a NOTIFY only for an agent
// that announces the "fragmentation" capability, and HAProxy 3.1 dropped it altogether.
// zt's agent never announces it and takes frames as large as HAProxy's buffers (up to
// 1 MiB), so a request HAProxy accepts fits in one frame. Past that, HAProxy refuses to
// send the message (SPOE error 3, or 256 + SPOP status 3): zt is not asked, and the
// generated rules refuse the request at once.
describe("forward-auth behind HAProxy's SPOE with requests larger than HAProxy's default frame", () => {
  it("decides a request far over 16 KB in one frame; refuses one over the agent's 1 MiB (431, never in pieces, app not reached)", async () => {
    const { upstream, listen, host, zt } = await appBehindProxy();
    const spoa = (await zt.pep.listenSpoa("127.0.0.1", 0)).port;
    const dir = tempDir("zt-proxy-");
    const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
    const cfg = writeHaproxySpoe(dir, { routes: zt.config.routes, listen, zt: zt.port, spoa });
    // Buffers of 2 MiB: HAProxy proposes max-frame-size 2 MiB - 4, zt answers 1 MiB - 4.
    const main = readFileSync(cfg, "utf8");
    expect(main.startsWith("global\n")).toBe(true);
    writeFileSync(cfg, main.replace("global\n", "global\n    tune.bufsize 2097152\n"));
    const peer = startPeer(bin, ["-db", "-f", cfg]);
    try {
      await waitForPort(listen, peer.child, peer.output);
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      // 40 KB of app token: more than HAProxy's default frame, decided in one.
      const fits = await request(listen, {
        host,
        path: "/fits",
        headers: { cookie, authorization: `Basic ${"a".repeat(40_000)}` },
      });
      expect(fits.status, fits.body).toBe(200);
      expect(upstream.seen.map((x) => x.url)).toEqual(["/fits"]);
      // HAProxy takes no header value over 1 MiB: two fields of 600 KB each.
      const big = "a".repeat(600_000);
      for (const [what, path, headers] of [
        ["Authorization and Accept", "/", { authorization: `Basic ${big}`, accept: big }],
        [
          "the request target and the session cookie",
          `/?q=${big}`,
          { cookie: `zt_session=${big}` },
        ],
        ["Authorization and Accept, again", "/", { authorization: `Basic ${big}`, accept: big }],
      ] as const) {
        const r = await request(listen, {
          host,
          path,
          headers: { cookie, ...headers },
        });
        expect(r.status, `${what}: ${r.body}`).toBe(431);
        expect(r.json<{ error: { reason: string } }>().error.reason).toBe(
          "authz-request-too-large",
        );
      }
      // The agent's connection is intact: the next request is decided and let through.
      const ok = await request(listen, { host, path: "/after", headers: { cookie } });
      expect(ok.status, ok.body).toBe(200);
      expect(upstream.seen.map((x) => x.url)).toEqual(["/fits", "/after"]);
      expect(upstream.seen[1]!.headers["x-zt-user"]).toBe("alice");
    } finally {
      await peer.stop();
      await zt.close();
      await upstream.close();
    }
  }, 60_000);
});

/** Each front proxy, started on `zt forward-auth config` output for these routes. */
const FRONT_KINDS: {
  name: string;
  start(dir: string, f: LoopbackFront, zt: PepFixture): Promise<Peer>;
}[] = [
  {
    name: "nginx",
    async start(dir, f) {
      return startNginx(dir, nginxConf(dir, f));
    },
  },
  {
    name: "Caddy",
    async start(dir, f) {
      return startCaddy(dir, caddyConf(f));
    },
  },
  {
    name: "HAProxy (SPOE)",
    async start(dir, f, zt) {
      const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
      const spoa = (await zt.pep.listenSpoa("127.0.0.1", 0)).port;
      return startPeer(bin, ["-db", "-f", writeHaproxySpoe(dir, { ...f, spoa })]);
    },
  },
  {
    name: "HAProxy (Lua)",
    async start(dir, f) {
      const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
      writeFileSync(join(dir, "haproxy.cfg"), haproxyLuaConf(f));
      return startPeer(bin, ["-db", "-f", join(dir, "haproxy.cfg")]);
    },
  },
];

// `zt forward-auth config` for more than one route: a path-prefix route next to a root
// route on one host, a host whose only route is a prefix, preserve_host, and a renamed
// session cookie — through each real proxy.
describe("forward-auth configurations written for several routes", () => {
  for (const kind of FRONT_KINDS)
    it(`${kind.name}: each path reaches its route's app, and only that`, async () => {
      const [app, api, admin] = [
        await startUpstream(),
        await startUpstream(),
        await startUpstream(),
      ];
      const listen = await freePort();
      const zt = await startPep({
        policies: `permit (principal in Group::"eng", action, resource);`,
        routes: [
          {
            name: "app",
            from: `http://app.localhost:${listen}`,
            to: `http://127.0.0.1:${app.port}`,
          },
          {
            name: "api",
            from: `http://app.localhost:${listen}/api`,
            to: `http://127.0.0.1:${api.port}`,
            preserve_host: true,
          },
          // Nested in /api: the longer prefix wins, as in zt's own route table.
          {
            name: "v2",
            from: `http://app.localhost:${listen}/api/v2`,
            to: `http://127.0.0.1:${admin.port}`,
          },
          {
            name: "admin",
            from: `http://other.localhost:${listen}/admin`,
            to: `http://127.0.0.1:${admin.port}`,
          },
        ],
        extra: { session: { cookie_name: "corp_zt" } },
      });
      const dir = tempDir("zt-proxy-");
      if (RUN_AS_ROOT) (await import("node:fs")).chmodSync(dir, 0o755);
      const f: LoopbackFront = {
        routes: zt.config.routes,
        listen,
        zt: zt.port,
        cookieName: zt.config.session.cookie_name,
      };
      const peer = await kind.start(dir, f, zt);
      try {
        await waitForPort(listen, peer.child, peer.output);
        await zt.addUser("alice", ["eng"]);
        const { cookie } = await zt.session("alice");
        expect(cookie.startsWith("corp_zt=")).toBe(true);
        const get = (host: string, path: string) =>
          request(listen, {
            host: `${host}:${listen}`,
            path,
            headers: { cookie: `a=1; ${cookie}`, accept: "application/json" },
          });
        for (const [host, path, upstream] of [
          ["app.localhost", "/x", app],
          ["app.localhost", "/apix", app], // not under the /api prefix
          ["app.localhost", "/api", api],
          ["app.localhost", "/api/v1/items", api],
          ["app.localhost", "/api/v2", admin],
          ["app.localhost", "/api/v2/items", admin],
          ["app.localhost", "/api/v20", api],
          // zt matches prefixes case-sensitively (as the apps behind it may not): a proxy
          // that routed /API/v2 to v2's app would send it there under the decision for app.
          ["app.localhost", "/API/v2/items", app],
          ["app.localhost", "/Api", app],
          ["other.localhost", "/admin/users", admin],
        ] as const) {
          const before = [app.seen.length, api.seen.length, admin.seen.length];
          const r = await get(host, path);
          expect(r.status, `${host}${path}: ${r.body}`).toBe(200);
          expect(upstream.seen.at(-1)!.url).toBe(path);
          const after = [app.seen.length, api.seen.length, admin.seen.length];
          expect(after.reduce((a, b) => a + b) - before.reduce((a, b) => a + b)).toBe(1);
          const seen = upstream.seen.at(-1)!;
          // The renamed session cookie is zt's credential: never the app's.
          const cookies = String(seen.headers.cookie)
            .split(";")
            .map((c) => c.trim());
          expect(cookies.filter((c) => c !== "")).toEqual(["a=1"]);
          expect(seen.headers["x-zt-user"]).toBe("alice");
          // preserve_host: the api gets the client's Host, the others their own.
          expect(seen.headers.host).toBe(
            upstream === api ? `app.localhost:${listen}` : `127.0.0.1:${upstream.port}`,
          );
        }
        // A host whose only route is a prefix: nothing else of it reaches any app.
        const total = app.seen.length + api.seen.length + admin.seen.length;
        const rest = await get("other.localhost", "/x");
        expect([403, 404], rest.body).toContain(rest.status);
        expect(app.seen.length + api.seen.length + admin.seen.length).toBe(total);
      } finally {
        await peer.stop();
        await zt.close();
        for (const u of [app, api, admin]) await u.close();
      }
    }, 60_000);
});

// routes[].upstream_ca: the front proxy verifies an https app against the route's private
// CA (made by the real openssl), as zt's own proxy does; with the system's CAs it refuses.
describe("forward-auth configurations for an https app signed by a private CA", () => {
  for (const kind of FRONT_KINDS)
    it(`${kind.name}: verifies the app against upstream_ca, and refuses it without`, async () => {
      const dir = tempDir("zt-proxy-");
      if (RUN_AS_ROOT) (await import("node:fs")).chmodSync(dir, 0o755);
      // Root → two intermediates → the app: the app sends its chain, the proxy trusts the
      // root (nginx's default verify depth allows one intermediate).
      const ca = makePrivateCa(dir, "localhost", { intermediates: 2 });
      const app = await startUpstream({ tls: { key: ca.serverKey, cert: ca.serverCert } });
      const listen = await freePort();
      const to = `https://localhost:${app.port}`;
      const zt = await startPep({
        policies: `permit (principal in Group::"eng", action, resource);`,
        routes: [
          { name: "app", from: `http://app.localhost:${listen}`, to, upstream_ca: ca.caFile },
          // The same app, verified against the system's CAs: it must not be reached.
          { name: "sys", from: `http://app.localhost:${listen}/sys`, to },
        ],
      });
      const f: LoopbackFront = { routes: zt.config.routes, listen, zt: zt.port };
      const peer = await kind.start(dir, f, zt);
      try {
        await waitForPort(listen, peer.child, peer.output);
        await zt.addUser("alice", ["eng"]);
        const { cookie } = await zt.session("alice");
        const get = (path: string) =>
          request(listen, {
            host: `app.localhost:${listen}`,
            path,
            headers: { cookie, accept: "application/json" },
          });
        const ok = await get("/items");
        expect(ok.status, ok.body).toBe(200);
        expect(app.seen.at(-1)!.url).toBe("/items");
        expect(app.seen.at(-1)!.headers["x-zt-user"]).toBe("alice");
        const before = app.seen.length;
        const refused = await get("/sys/items");
        expect([502, 503], refused.body).toContain(refused.status);
        expect(app.seen.length).toBe(before);
      } finally {
        await peer.stop();
        await zt.close();
        await app.close();
      }
    }, 60_000);
});

describe("a forward-auth check that arrives as an upgrade", () => {
  it("is decided like any check, never passed to a route as a WebSocket", async () => {
    const { upstream, host, zt } = await appBehindProxy();
    try {
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      const check = (uri: string) =>
        rawHead(
          zt.port,
          `GET /.zt/authz HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
            `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ${host}\r\n` +
            `X-Forwarded-Uri: ${uri}\r\nCookie: ${cookie}\r\n\r\n`,
        );
      // The policy forbids /admin*: denied, and the app is not asked.
      expect(await check("/admin/ws")).toMatch(/^HTTP\/1\.1 403 /);
      // Allowed: zt's 200 with the assertion, still not a switch of protocols.
      const allowed = await check("/ws");
      expect(allowed).toMatch(/^HTTP\/1\.1 200 /);
      expect(allowed.toLowerCase()).toContain("x-zt-assertion:");
      expect(upstream.seen).toHaveLength(0);
    } finally {
      await zt.close();
      await upstream.close();
    }
  });
});

describe("signing out with session.cookie_domain", () => {
  it("expires both the domain cookie and the host's own (the pair forward-auth refuses)", async () => {
    const zt = await startPep({
      policies: POLICY,
      routes: [{ name: "app", from: "http://app.example.test", to: "http://127.0.0.1:9" }],
      extra: { session: { cookie_domain: ".example.test" } },
    });
    try {
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      const r = await request(zt.port, {
        host: "app.example.test",
        path: "/.zt/logout",
        method: "POST",
        headers: { cookie, "content-type": "application/json" },
        body: "{}",
      });
      expect(r.status, r.body).toBe(200);
      const set = [r.headers["set-cookie"] ?? []].flat();
      expect(set).toHaveLength(2);
      expect(set.every((c) => c.startsWith("zt_session=;") && c.includes("Max-Age=0"))).toBe(true);
      expect(set.filter((c) => c.includes("Domain=.example.test"))).toHaveLength(1);
    } finally {
      await zt.close();
    }
  });
});
