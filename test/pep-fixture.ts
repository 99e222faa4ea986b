/**
 * An in-process zt PEP (real store, real policy engine, real sockets) for the PEP and
 * forward-auth tests: config in a temp dir, users created through the identity service,
 * sessions through the session service.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig, type ZtConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { createServices, type Services } from "../src/app/services.js";
import { createPep, type Pep } from "../src/proxy/index.js";
import { afterAll, beforeAll } from "vitest";
import { testSession } from "./helpers/test-session.js";

export interface PepFixture {
  dir: string;
  config: ZtConfig;
  ctx: AppContext;
  services: Services;
  pep: Pep;
  port: number;
  /** Creates a user; returns its TOTP secret and password. */
  addUser(
    name: string,
    groups: string[],
  ): Promise<{ password: string; totpSecret: string; id: string }>;
  /** A session for a user without going through login (login has its own tests). */
  session(name: string): Promise<{ cookie: string; token: string; sessionId: string }>;
  close(): Promise<void>;
}

export interface PepFixtureOptions {
  policies: string;
  routes: {
    name: string;
    from: string;
    to: string;
    websockets?: boolean;
    timeout?: string;
    preserve_host?: boolean;
    upstream_ca?: string;
  }[];
  limits?: Record<string, unknown>;
  trusted_proxies?: string[];
  extra?: Record<string, unknown>;
}

export function tempDir(prefix = "zt-pep-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startPep(o: PepFixtureOptions): Promise<PepFixture> {
  const dir = tempDir();
  mkdirSync(join(dir, "policies"));
  writeFileSync(join(dir, "policies", "main.cedar"), o.policies);
  const raw = {
    data_dir: join(dir, "data"),
    trust_domain: "pep.test",
    routes: o.routes,
    policies: join(dir, "policies"),
    mfa: { max_failures: 50 },
    ...(o.limits ? { limits: o.limits } : {}),
    ...(o.trusted_proxies ? { trusted_proxies: o.trusted_proxies } : {}),
    ...(o.extra ?? {}),
  };
  // JSON is YAML: the same config on disk, for the real `zt` CLI.
  writeFileSync(join(dir, "zt.yaml"), JSON.stringify(raw, null, 2));
  const config = validateConfig(raw, join(dir, "zt.yaml"));
  const ctx = await openAppContext(config, { create: true });
  const services = await createServices(ctx);
  const pep = createPep(services);
  const addr = await pep.listen("127.0.0.1", 0);
  const ids = new Map<string, string>();
  return {
    dir,
    config,
    ctx,
    services,
    pep,
    port: addr.port,
    async addUser(name, groups) {
      const password = `pw-${name}-correct-horse-battery`;
      const r = await services.identity.addUser({ name, groups, password });
      await services.snapshot.refreshUser(r.user.id);
      ids.set(name, r.user.id);
      return { password, totpSecret: r.totpSecret, id: r.user.id };
    },
    async session(name) {
      const userId = ids.get(name);
      if (!userId) throw new Error(`no user ${name}`);
      const { session, token } = await testSession(services.sessions, userId);
      return { cookie: `${config.session.cookie_name}=${token}`, token, sessionId: session.id };
    },
    async close() {
      await pep.close();
      services.close();
      await ctx.close();
    },
  };
}

/**
 * A real upstream that records what reached it and answers WebSocket-ish upgrades; over
 * https with `tls` (its key and certificate chain, PEM).
 */
export async function startUpstream(o: { tls?: { key: string; cert: string } } = {}): Promise<{
  port: number;
  /** Upgraded connections still open at the upstream. */
  upgraded: Set<net.Socket>;
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}> {
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[] =
    [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (body += d));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, url: req.url }));
    });
  };
  const server = o.tls ? https.createServer(o.tls, handler) : http.createServer(handler);
  const upgraded = new Set<net.Socket>();
  server.on("upgrade", (req, socket: net.Socket) => {
    upgraded.add(socket);
    socket.on("close", () => upgraded.delete(socket));
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: "" });
    socket.write(
      // The protocol asked for, and for WebSocket the RFC 6455 accept value: proxies
      // check that the answer switches to what the client asked for.
      upgradeAnswer(req),
    );
    socket.on("data", (d: Buffer) => socket.write(d));
    socket.on("end", () => socket.end()); // http.Server sockets allow half-open
    socket.on("error", () => socket.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    upgraded,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
        for (const s of upgraded) s.destroy();
      }),
  };
}

export type Upstream = Awaited<ReturnType<typeof startUpstream>>;

/**
 * For a describe block: a real upstream behind an in-process PEP, one route `app` from
 * `http://<host>`, a permit-all policy and `extra` config; started before the block's
 * tests, closed after them.
 */
export function appBehindPepForSuite(
  host: string,
  extra?: PepFixtureOptions["extra"],
): { readonly zt: PepFixture; readonly upstream: Upstream } {
  let zt: PepFixture | undefined;
  let upstream: Upstream | undefined;
  beforeAll(async () => {
    upstream = await startUpstream();
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${host}`, to: `http://127.0.0.1:${upstream.port}` }],
      ...(extra ? { extra } : {}),
    });
  }, 60_000);
  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });
  return {
    get zt() {
      if (!zt) throw new Error("the PEP is not started yet (use it inside a test)");
      return zt;
    },
    get upstream() {
      if (!upstream) throw new Error("the upstream is not started yet (use it inside a test)");
      return upstream;
    },
  };
}

export interface RawResult {
  /** Everything the server sent before it closed (or until the deadline). */
  text: string;
  /** The server closed the connection. */
  closed: boolean;
  status: number | undefined;
}

/**
 * Sends raw bytes on a fresh TCP connection and collects the answer until the server
 * closes, `until` matches, or `waitMs` passes (a generous safety net, not a timing check).
 */
export function raw(
  port: number,
  chunks: (string | Buffer)[],
  o: { waitMs?: number; until?: (text: string) => boolean } = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    let settled = false;
    const done = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ text, closed, status: m ? Number(m[1]) : undefined });
    };
    const timer = setTimeout(() => done(false), o.waitMs ?? 15_000);
    socket.on("connect", () => {
      for (const c of chunks) socket.write(c);
    });
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (o.until?.(text)) done(false);
    });
    socket.on("close", () => done(true));
    socket.on("error", () => done(true));
  });
}

export { freePort } from "./helpers/free-port.js";

/** A 101 answer to `req`: its own protocol, and Sec-WebSocket-Accept for a WebSocket key. */
function upgradeAnswer(req: http.IncomingMessage): string {
  const asked = String(req.headers.upgrade ?? "");
  const protocol = /^[A-Za-z0-9./-]+$/.test(asked) ? asked : "test";
  const key = req.headers["sec-websocket-key"];
  const accept =
    typeof key === "string"
      ? `Sec-WebSocket-Accept: ${createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")}\r\n`
      : "";
  return `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${protocol}\r\nConnection: Upgrade\r\n${accept}\r\n`;
}
