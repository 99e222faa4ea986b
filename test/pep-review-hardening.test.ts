/**
 * Regression tests for the PEP defects found in review, each named after what it stops,
 * driven over real sockets (raw `net` clients, real upstreams): request smuggling through
 * a `Connection` header naming the framing, a reset during an upgrade ending the process,
 * the Bearer session token reaching upstreams, `context.authenticated_by` never saying
 * `bearer`, upgrade legs and live entries leaking, and headers that would let an upstream
 * act on something else than what the policy decided.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http, { type IncomingMessage } from "node:http";
import net, { type AddressInfo } from "node:net";
import { upstreamRequestHead, type ForwardOptions } from "../src/proxy/forward.js";
import type { ResolvedRoute } from "../src/config/index.js";
import { raw, startPep, startUpstream, type PepFixture } from "./pep-fixture.js";

const POLICY = `
@id("eng")
permit (principal in Group::"eng", action, resource);

@id("no-admin")
@reason("admin-area-closed")
forbid (principal, action, resource == App::"app") when { context.path like "/admin*" };

@id("no-bearer-console")
@reason("bearer-refused")
forbid (principal, action, resource == App::"console") when { context.authenticated_by == "bearer" };
`;

/**
 * An upstream for smuggling tests: it answers `/held` only once a later request arrived
 * on the same connection (so a smuggled request's answer waits for the next user of that
 * pooled connection, with no timer), everything else at once with the path it answered.
 */
async function startQueueUpstream(): Promise<{
  port: number;
  urls: string[];
  close(): void;
}> {
  const urls: string[] = [];
  const held = new Map<net.Socket, http.ServerResponse>();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      urls.push(req.url ?? "");
      const waiting = held.get(req.socket);
      if (waiting) {
        held.delete(req.socket);
        waiting.writeHead(200, { "content-type": "text/plain" });
        waiting.end("attacker-chosen answer");
      }
      if (req.url === "/held") return void held.set(req.socket, res);
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`answer for ${req.url}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    urls,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/**
 * An upstream that receives WebSocket handshakes and never answers them: it keeps count
 * of the TCP connections zt holds open to it.
 */
async function startSilentUpstream(): Promise<{
  port: number;
  /** TCP connections from zt still open. */
  open: Set<net.Socket>;
  /** The next handshake to arrive (its socket). */
  nextHandshake(): Promise<net.Socket>;
  /** Resolves true when `s` closes, false after a generous safety net. */
  closed(s: net.Socket): Promise<boolean>;
  close(): void;
}> {
  const open = new Set<net.Socket>();
  const closedOnce = new WeakMap<net.Socket, Promise<void>>();
  let waiter: ((s: net.Socket) => void) | undefined;
  const server = http.createServer((_req, res) => res.end());
  server.on("connection", (s: net.Socket) => {
    open.add(s);
    closedOnce.set(s, new Promise((r) => s.on("close", () => r(void open.delete(s)))));
  });
  server.on("upgrade", (_req, socket: net.Socket) => {
    socket.on("error", () => socket.destroy());
    socket.on("end", () => socket.end()); // http.Server sockets allow half-open
    waiter?.(socket);
    waiter = undefined;
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    open,
    nextHandshake: () => new Promise((r) => (waiter = r)),
    closed: (s) =>
      new Promise((resolve) => {
        const safety = setTimeout(() => resolve(false), 15_000);
        void closedOnce.get(s)!.then(() => {
          clearTimeout(safety);
          resolve(true);
        });
      }),
    close: () => {
      for (const s of open) s.destroy();
      server.close();
    },
  };
}

/** Errors nothing handled while `body` ran (an unhandled socket error ends a real PEP). */
async function uncaughtDuring(body: () => Promise<void>): Promise<Error[]> {
  const seen: Error[] = [];
  const record = (e: Error) => seen.push(e);
  process.on("uncaughtException", record);
  try {
    await body();
  } finally {
    process.off("uncaughtException", record);
  }
  return seen;
}

const UPGRADE = (host: string, path: string, auth: string, protocol = "websocket") =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${auth}\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

describe("PEP review hardening", () => {
  let zt: PepFixture;
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let queue: Awaited<ReturnType<typeof startQueueUpstream>>;
  let silent: Awaited<ReturnType<typeof startSilentUpstream>>;
  let alice: { cookie: string; token: string; sessionId: string };

  beforeAll(async () => {
    up = await startUpstream();
    queue = await startQueueUpstream();
    silent = await startSilentUpstream();
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "app", from: "http://app.localhost", to: `http://127.0.0.1:${up.port}` },
        { name: "console", from: "http://console.localhost", to: `http://127.0.0.1:${up.port}` },
        { name: "queue", from: "http://queue.localhost", to: `http://127.0.0.1:${queue.port}` },
        {
          name: "silent",
          from: "http://silent.localhost",
          to: `http://127.0.0.1:${silent.port}`,
          timeout: "400ms",
        },
      ],
    });
    await zt.addUser("alice", ["eng"]);
    alice = await zt.session("alice");
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await up?.close();
    queue?.close();
    silent?.close();
  });

  /** A WebSocket upgrade of `s` that the silent upstream holds before its 101. */
  const pendingUpgrade = async (s: { cookie: string; sessionId: string }) => {
    const handshake = silent.nextHandshake();
    const c = net.connect(zt.port, "127.0.0.1");
    c.on("error", () => {});
    await new Promise((r) => c.once("connect", r));
    c.write(UPGRADE("silent.localhost", "/ws", `Cookie: ${s.cookie}`));
    const upstreamSide = await handshake;
    expect(zt.pep.live.count(s.sessionId)).toBe(1);
    return { c, upstreamSide };
  };

  const get = (host: string, path: string, extra = "") =>
    raw(zt.port, [
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n${extra}\r\n`,
    ]);

  describe("request smuggling through Connection", () => {
    const smuggled = "GET /admin/delete-all HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    it("stops request smuggling via a Connection header naming content-length", async () => {
      for (const connection of [
        "keep-alive, content-length",
        "close, Content-Length",
        "transfer-encoding",
        "keep-alive,host",
      ]) {
        const r = await raw(zt.port, [
          `POST /public HTTP/1.1\r\nHost: app.localhost\r\nCookie: ${alice.cookie}\r\nConnection: ${connection}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
        ]);
        expect(r.status, connection).toBe(400);
        expect(r.text, connection).toContain("ZT_REQUEST_AMBIGUOUS");
        expect(r.text, connection).toContain("connection-names-framing");
      }
      expect(up.seen.some((s) => s.url.startsWith("/admin"))).toBe(false);
      // Other Connection options still work, and the body arrives framed by zt.
      const ok = await raw(zt.port, [
        `POST /public HTTP/1.1\r\nHost: app.localhost\r\nCookie: ${alice.cookie}\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      ]);
      expect(ok.status).toBe(200);
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe("/public");
      expect(seen.headers["content-length"]).toBe(String(smuggled.length));
      expect(seen.headers["x-hop"]).toBeUndefined();
      expect(seen.body).toBe(smuggled);
    });

    it("stops response poisoning: a smuggled request's answer never reaches the next user of the upstream connection", async () => {
      const held = "GET /held HTTP/1.1\r\nHost: x\r\n\r\n";
      const mallory = await raw(zt.port, [
        `POST /x HTTP/1.1\r\nHost: queue.localhost\r\nCookie: ${alice.cookie}\r\nConnection: close, content-length\r\nContent-Length: ${held.length}\r\n\r\n${held}`,
      ]);
      expect(mallory.status).toBe(400);
      const victim = await get("queue.localhost", "/victim/inbox");
      expect(victim.status).toBe(200);
      expect(victim.text).toContain("answer for /victim/inbox");
      expect(victim.text).not.toContain("attacker-chosen");
      expect(queue.urls).not.toContain("/held");
    });

    it("writes the body's framing itself: a client Content-Length listed in Connection cannot remove it", async () => {
      // The head builder on its own, in case a request ever reached it past the PEP's refusal.
      const req = {
        method: "POST",
        rawHeaders: [
          "Host",
          "app.localhost",
          "Connection",
          "keep-alive, content-length, transfer-encoding",
          "Content-Length",
          "44",
        ],
        headers: {
          host: "app.localhost",
          connection: "keep-alive, content-length, transfer-encoding",
          "content-length": "44",
        },
      } as unknown as IncomingMessage;
      const o: ForwardOptions = {
        route: { name: "app", to: "http://127.0.0.1:1", preserve_host: false } as ResolvedRoute,
        pathAndQuery: "/public",
        clientIp: "127.0.0.1",
        originalHost: "app.localhost",
        secure: false,
        add: { "x-zt-decision-id": "dec_1" },
        sessionCookieName: "zt_session",
        dropAuthorization: false,
      };
      const head = upstreamRequestHead(req, o, false);
      expect(head.match(/^content-length: 44$/gim)).toHaveLength(1);
      expect(head).not.toMatch(/transfer-encoding/i);
      const chunked = upstreamRequestHead(req, o, true);
      expect(chunked).not.toMatch(/content-length/i);
      expect(chunked.match(/^transfer-encoding: chunked$/gim)).toHaveLength(1);
    });
  });

  describe("connection resets during an upgrade", () => {
    /**
     * Resolves when the PEP's side of the next connection has closed (or, if it never
     * does, after a safety net: an unhandled error skips the close).
     */
    const nextServerSocketClosed = () =>
      new Promise<void>((resolve) =>
        zt.pep.server.once("connection", (s: net.Socket) => {
          const safety = setTimeout(resolve, 5_000);
          s.once("close", () => {
            clearTimeout(safety);
            resolve();
          });
        }),
      );

    it("stops a reset after a refused upgrade from ending the PEP process", async () => {
      const errors = await uncaughtDuring(async () => {
        for (const [host, auth] of [
          ["nosuch.localhost", ""], // 404
          ["app.localhost", "X-Anon: 1"], // 401
          ["silent.localhost", `Cookie: ${alice.cookie}`], // 400: not a WebSocket
        ] as const) {
          const serverSideClosed = nextServerSocketClosed();
          const c = net.connect(zt.port, "127.0.0.1");
          c.on("error", () => {});
          await new Promise((r) => c.once("connect", r));
          c.write(UPGRADE(host, "/ws", auth, host === "silent.localhost" ? "h2c" : "websocket"));
          // The refusal (a safety net bounds the wait if none comes).
          await new Promise((r) => {
            const safety = setTimeout(r, 5_000);
            c.once("data", () => r(clearTimeout(safety)));
          });
          c.resetAndDestroy();
          await serverSideClosed;
        }
      });
      expect(errors).toEqual([]);
      expect((await get("app.localhost", "/still-serving")).status).toBe(200);
    });

    it("stops a reset while the upstream handshake is pending from ending the PEP process", async () => {
      const s = await zt.session("alice");
      const errors = await uncaughtDuring(async () => {
        const { c, upstreamSide } = await pendingUpgrade(s);
        c.resetAndDestroy();
        expect(await silent.closed(upstreamSide)).toBe(true);
      });
      expect(errors).toEqual([]);
      expect(zt.pep.live.count(s.sessionId)).toBe(0);
      expect((await get("app.localhost", "/still-serving")).status).toBe(200);
    });
  });

  describe("the Bearer session token", () => {
    it("stops the Bearer session token reaching the upstream", async () => {
      const r = await raw(zt.port, [
        `GET /api HTTP/1.1\r\nHost: app.localhost\r\nAuthorization: Bearer ${alice.token}\r\nConnection: close\r\n\r\n`,
      ]);
      expect(r.status).toBe(200);
      const seen = up.seen.at(-1)!;
      expect(seen.url).toBe("/api");
      expect(seen.headers.authorization).toBeUndefined();
      expect(JSON.stringify(seen.headers)).not.toContain(alice.token);
      // Signed in by cookie, an Authorization header is the upstream's own: forwarded.
      await get("app.localhost", "/api2", "Authorization: Basic dXNlcjpwdw==\r\n");
      expect(up.seen.at(-1)!.headers.authorization).toBe("Basic dXNlcjpwdw==");
    });

    it("stops the Bearer session token reaching the upstream of a WebSocket", async () => {
      const before = up.seen.length;
      const r = await raw(
        zt.port,
        [UPGRADE("app.localhost", "/ws-bearer", `Authorization: Bearer ${alice.token}`)],
        { until: (t) => t.includes("\r\n\r\n") },
      );
      expect(r.status).toBe(101);
      const seen = up.seen.slice(before).find((s) => s.url === "/ws-bearer")!;
      expect(seen.headers.authorization).toBeUndefined();
      expect(seen.headers.upgrade).toBe("websocket");
    });

    it('stops a policy on context.authenticated_by == "bearer" being bypassed', async () => {
      const bearer = await raw(zt.port, [
        `GET / HTTP/1.1\r\nHost: console.localhost\r\nAuthorization: Bearer ${alice.token}\r\nConnection: close\r\n\r\n`,
      ]);
      expect(bearer.status).toBe(403);
      expect(bearer.text).toContain("bearer-refused");
      const decisionId = /"decision_id":"([^"]+)"/.exec(bearer.text)![1]!;
      expect((await get("console.localhost", "/")).status).toBe(200);
      await zt.ctx.audit.flush();
      const rows = await zt.ctx.store.db
        .selectFrom("audit_events")
        .select(["decision_id", "route", "data"])
        .where("kind", "=", "decision")
        .execute();
      const by = (r: { data: unknown }) =>
        (typeof r.data === "string" ? JSON.parse(r.data) : r.data)["authenticated_by"] as string;
      expect(by(rows.find((r) => r.decision_id === decisionId)!)).toBe("bearer");
      const consoleRows = rows.filter((r) => r.route === "console");
      expect(consoleRows.map(by).sort()).toEqual(["bearer", "session"]);
    });
  });

  describe("upgrade legs and live entries", () => {
    it("stops an unanswered upgrade holding the upstream leg: 504 after the route timeout", async () => {
      const s = await zt.session("alice");
      const handshake = silent.nextHandshake();
      const r = raw(zt.port, [UPGRADE("silent.localhost", "/ws", `Cookie: ${s.cookie}`)]);
      const upstreamSide = await handshake;
      const answer = await r;
      expect(answer.status).toBe(504);
      expect(answer.text).toContain("ZT_UPSTREAM_TIMEOUT");
      expect(answer.closed).toBe(true);
      expect(await silent.closed(upstreamSide)).toBe(true);
      expect(zt.pep.live.count(s.sessionId)).toBe(0);
    });

    it("stops a client that leaves before the upstream's 101 leaking the upstream leg and its live entry", async () => {
      const s = await zt.session("alice");
      for (let i = 0; i < 3; i++) {
        const { c, upstreamSide } = await pendingUpgrade(s);
        c.end();
        expect(await silent.closed(upstreamSide)).toBe(true);
        expect(zt.pep.live.count(s.sessionId)).toBe(0);
      }
      expect(silent.open.size).toBe(0);
    });

    it("stops a session revoked during the upstream handshake keeping its upstream leg", async () => {
      const s = await zt.session("alice");
      const handshake = silent.nextHandshake();
      const r = raw(zt.port, [UPGRADE("silent.localhost", "/ws", `Cookie: ${s.cookie}`)]);
      const upstreamSide = await handshake;
      expect(zt.pep.live.count(s.sessionId)).toBe(1);
      await zt.services.sessions.revoke([s.sessionId], "test");
      expect((await r).closed).toBe(true);
      expect(await silent.closed(upstreamSide)).toBe(true);
      expect(zt.pep.live.count(s.sessionId)).toBe(0);
      expect(silent.open.size).toBe(0);
    });
  });

  describe("headers that would change what was decided", () => {
    it("stops path and method override headers reaching the upstream", async () => {
      const r = await get(
        "app.localhost",
        "/public",
        "X-Original-URL: /admin/keys\r\nX-Rewrite-URL: /admin/keys\r\nX-Original-Method: DELETE\r\nX-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\n",
      );
      expect(r.status).toBe(200);
      const headers = up.seen.at(-1)!.headers;
      for (const h of [
        "x-original-url",
        "x-rewrite-url",
        "x-original-method",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
      ])
        expect(headers[h], h).toBeUndefined();
    });

    it("stops underscore look-alikes of zt identity headers reaching the upstream", async () => {
      const r = await get(
        "app.localhost",
        "/public",
        "X_Zt_Assertion: forged\r\nX-Zt_User: root\r\nx_zt-decision-id: dec_forged\r\nX_Forwarded_For: 10.0.0.1\r\nX_Original_URL: /admin\r\nX-Custom_Thing: kept\r\n",
      );
      expect(r.status).toBe(200);
      const headers = up.seen.at(-1)!.headers;
      const names = Object.keys(headers);
      expect(names.filter((n) => n.includes("_") && n !== "x-custom_thing")).toEqual([]);
      expect(headers["x-zt-decision-id"]).toMatch(/^dec_/);
      expect(headers["x-zt-decision-id"]).not.toBe("dec_forged");
      expect(headers["x-custom_thing"]).toBe("kept");
    });

    it("stops an h2c (or any non-WebSocket) upgrade tunnelling past per-request policy", async () => {
      const before = up.seen.length;
      for (const [method, protocol] of [
        ["GET", "h2c"],
        ["GET", "websocket, h2c"],
        ["GET", "test"],
        ["POST", "websocket"],
      ] as const) {
        const r = await raw(
          zt.port,
          [
            `${method} / HTTP/1.1\r\nHost: app.localhost\r\nCookie: ${alice.cookie}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: ${protocol}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
          ],
          { until: (t) => t.includes("\r\n\r\n") },
        );
        expect(r.status, `${method} ${protocol}`).toBe(400);
        expect(r.text, protocol).toContain("upgrade-not-websocket");
      }
      expect(up.seen.length).toBe(before);
      // A WebSocket handshake still goes through.
      const ws = await raw(zt.port, [UPGRADE("app.localhost", "/ws", `Cookie: ${alice.cookie}`)], {
        until: (t) => t.includes("\r\n\r\n"),
      });
      expect(ws.status).toBe(101);
    });
  });
});
