/**
 * Forward-auth with the real nginx (auth_request), the real Caddy (forward_auth) and the
 * real HAProxy (zt's Lua action, examples/haproxy/zt-authz.lua) in front of a real upstream: an allowed user reaches it with zt's headers (and not the
 * ones the client forged), a denied user gets 403 with a decision id, an anonymous user
 * is sent to zt's login — which works through the proxy — and a revoked session is out.
 * The configs here are the ones in docs/forward-auth.md.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import * as OTPAuth from "otpauth";
import { request } from "./helpers/http-client.js";
import { freePort, startPep, startUpstream, tempDir, type PepFixture } from "./pep-fixture.js";

const POLICY = `
@id("eng-app")
@reason("eng-may-use-app")
permit (principal in Group::"eng", action in [Action::"GET", Action::"POST"], resource == App::"app")
when { context.mfa_age_seconds < 3600 };
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

/** nginx auth_request in front of the upstream (docs/forward-auth.md, "nginx"). */
export function nginxConfig(o: {
  dir: string;
  listen: number;
  zt: number;
  upstream: number;
  runAsRoot: boolean;
}): string {
  return `
${o.runAsRoot ? "user nobody nogroup;" : ""}
worker_processes 1;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${o.dir}/tmp/body;
  proxy_temp_path ${o.dir}/tmp/proxy;
  fastcgi_temp_path ${o.dir}/tmp/fastcgi;
  uwsgi_temp_path ${o.dir}/tmp/uwsgi;
  scgi_temp_path ${o.dir}/tmp/scgi;

  # The app never needs zt's session cookie: strip it (first match wins).
  map $http_cookie $cookie_without_zt {
    default $http_cookie;
    "~^zt_session=[^;]*(?:;\\s*)?(?<rest>.*)$" "$rest";
    "~^(?<a>.*?);\\s*zt_session=[^;]*(?<b>.*)$" "$a$b";
  }

  upstream zt  { server 127.0.0.1:${o.zt}; keepalive 32; }
  upstream app { server 127.0.0.1:${o.upstream}; keepalive 32; }

  server {
    listen 127.0.0.1:${o.listen};
    server_name app.localhost;

    # zt's own pages (login, logout, denial page, JWKS) go to zt, without auth.
    location /.zt/ {
      proxy_pass http://zt;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }

    # The forward-auth check: internal only, no body.
    location = /.zt/authz {
      internal;
      proxy_pass http://zt;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $remote_addr;
    }

    location / {
      auth_request /.zt/authz;
      auth_request_set $zt_assertion $upstream_http_x_zt_assertion;
      auth_request_set $zt_user      $upstream_http_x_zt_user;
      auth_request_set $zt_groups    $upstream_http_x_zt_groups;
      auth_request_set $zt_decision  $upstream_http_x_zt_decision_id;
      auth_request_set $zt_login     $upstream_http_x_zt_login_url;
      # 401: send the user to zt's login; 403: show zt's explained denial page.
      error_page 401 =302 $zt_login;
      error_page 403 /.zt/denied?decision=$zt_decision;

      # Always set (so a client can never smuggle its own): empty means "not sent".
      proxy_set_header X-Zt-Assertion   $zt_assertion;
      proxy_set_header X-Zt-User        $zt_user;
      proxy_set_header X-Zt-Groups      $zt_groups;
      proxy_set_header X-Zt-Decision-Id $zt_decision;
      proxy_set_header Cookie $cookie_without_zt;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://app;
    }
  }
}
`;
}

/** Caddy forward_auth in front of the upstream (docs/forward-auth.md, "Caddy"). */
export function caddyConfig(o: { listen: number; zt: number; upstream: number }): string {
  return `{
  admin off
  auto_https off
}

http://app.localhost:${o.listen} {
  bind 127.0.0.1
  handle /.zt/* {
    reverse_proxy 127.0.0.1:${o.zt}
  }
  handle {
    forward_auth 127.0.0.1:${o.zt} {
      uri /.zt/authz
      copy_headers X-Zt-Assertion X-Zt-User X-Zt-Groups X-Zt-Decision-Id
    }
    reverse_proxy 127.0.0.1:${o.upstream} {
      # the app never needs zt's session cookie
      header_up Cookie "(^|;\\s*)zt_session=[^;]*(;\\s*|$)" "$1"
    }
  }
}
`;
}

/** HAProxy with zt's Lua forward-auth action (docs/forward-auth.md, "HAProxy"). */
export function haproxyConfig(o: {
  listen: number;
  zt: number;
  upstream: number;
  lua: string;
}): string {
  return `
global
    setenv ZT_AUTHZ_URL http://127.0.0.1:${o.zt}/.zt/authz
    lua-load ${o.lua}

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend app
    bind 127.0.0.1:${o.listen}
    acl zt_pages path_beg /.zt/
    http-request lua.zt_authz unless zt_pages
    use_backend zt if zt_pages
    default_backend app

backend zt
    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Forwarded-Proto http
    server zt 127.0.0.1:${o.zt}

backend app
    server app 127.0.0.1:${o.upstream}
`;
}

interface ProxyUnderTest {
  name: string;
  start(
    dir: string,
    ports: { listen: number; zt: number; upstream: number },
  ): Promise<() => Promise<void>>;
}

const PROXIES: ProxyUnderTest[] = [
  {
    name: "nginx auth_request",
    async start(dir, ports) {
      const bin = findBinary(["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]);
      mkdirSync(join(dir, "tmp"), { recursive: true });
      const runAsRoot = process.getuid?.() === 0;
      writeFileSync(join(dir, "nginx.conf"), nginxConfig({ dir, ...ports, runAsRoot }));
      const peer = startPeer(bin, [
        "-p",
        dir,
        "-c",
        join(dir, "nginx.conf"),
        "-e",
        "stderr",
        "-g",
        `daemon off; pid ${dir}/nginx.pid; error_log stderr;`,
      ]);
      await waitForPort(ports.listen, peer.child, peer.output);
      return peer.stop;
    },
  },
  {
    name: "Caddy forward_auth",
    async start(dir, ports) {
      const bin = findBinary(["/usr/bin/caddy", "/usr/local/bin/caddy"]);
      writeFileSync(join(dir, "Caddyfile"), caddyConfig(ports));
      const home = join(dir, "home");
      mkdirSync(home, { recursive: true });
      const peer = startPeer(
        bin,
        ["run", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"],
        {
          HOME: home,
          XDG_DATA_HOME: join(home, "data"),
          XDG_CONFIG_HOME: join(home, "config"),
        },
      );
      await waitForPort(ports.listen, peer.child, peer.output);
      return peer.stop;
    },
  },
  {
    name: "HAProxy (zt's Lua action)",
    async start(dir, ports) {
      const bin = findBinary(["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]);
      const lua = join(import.meta.dirname, "..", "examples", "haproxy", "zt-authz.lua");
      writeFileSync(join(dir, "haproxy.cfg"), haproxyConfig({ ...ports, lua }));
      const peer = startPeer(bin, ["-db", "-f", join(dir, "haproxy.cfg")]);
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
      stopProxy = await proxy.start(dir, { listen: port, zt: zt.port, upstream: upstream.port });
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
      expect(upstream.seen).toHaveLength(0);
      const page = await request(port, { host, path: "/.zt/login?rd=%2Fprivate%2Fpage" });
      expect(page.status).toBe(200);
      expect(page.body).toContain('name="totp"');
    });

    it("lets an allowed user through with zt's signed assertion, never the client's forged headers", async () => {
      const cookie = await loginThroughProxy("alice");
      const r = await request(port, {
        host,
        path: "/hello/./world?y=1",
        headers: {
          cookie: `theme=dark; ${cookie}; lang=en`,
          accept: "application/json",
          "x-zt-user": "mallory",
          "x-zt-groups": "admins",
          "x-zt-assertion": "forged",
        },
      });
      expect(r.status, r.body).toBe(200);
      const seen = upstream.seen.at(-1)!;
      expect(seen.headers["x-zt-user"]).toBe("alice");
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
        pep: "pep-1/forward-auth",
      });
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
    const lua = join(import.meta.dirname, "..", "examples", "haproxy", "zt-authz.lua");
    writeFileSync(
      join(dir, "haproxy.cfg"),
      haproxyConfig({ listen, zt: dead, upstream: upstream.port, lua }),
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
