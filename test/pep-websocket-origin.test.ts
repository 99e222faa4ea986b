/**
 * Cross-Site WebSocket Hijacking through the PEP (`zt up` in process, a real `ws`
 * upstream and client over real sockets). A browser sends the session cookie with a
 * WebSocket any page opens — a sibling subdomain is same-site, so SameSite=Lax lets it
 * through — and no CORS applies: zt let such a handshake through, and the page spoke to
 * the app as the user. Now a handshake with an Origin, signed in by the cookie, must come
 * from the route's own origin or one of its `websocket_origins`; else 403 `ZT_CSRF`,
 * audited, before any decision. Without an Origin (not a browser) it is decided as before.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { writeFileSync } from "node:fs";
import * as OTPAuth from "otpauth";
import WebSocket, { WebSocketServer } from "ws";
import { queryAudit } from "../src/audit/index.js";
import { ManualClock } from "../src/core/clock.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { login } from "./helpers/http-client.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";

const PASSWORD = "pw-correct-horse-battery";
const CHAT = "chat.localhost";
const BOARD = "board.localhost";
const PORTAL = "http://portal.localhost:3000";

type Handshake =
  | { open: true; upstreamOrigin: string | undefined }
  | { open: false; status: number; body: { error: Record<string, unknown> } };

describe("WebSocket handshakes from another origin (Cross-Site WebSocket Hijacking)", () => {
  let zt: RunningZt;
  let port: number;
  let upstream: http.Server;
  let configPath: string;
  let yaml: (boardOrigins: string) => string;
  /** The Origin header of every handshake the upstream accepted, in order. */
  const reached: (string | undefined)[] = [];
  const clock = new ManualClock(Date.UTC(2026, 2, 2, 10, 0, 0));
  let cookie: string;
  let sessionId: string;

  /** Opens a WebSocket through zt; says whether it opened, else zt's answer. */
  async function handshake(
    host: string,
    headers: Record<string, string>,
    origin?: string,
  ): Promise<Handshake> {
    const before = reached.length;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
      headers: { host, ...headers },
      ...(origin !== undefined ? { origin } : {}),
    });
    return new Promise<Handshake>((resolve, reject) => {
      ws.once("open", () => {
        ws.close();
        resolve({ open: true, upstreamOrigin: reached[before] });
      });
      ws.once("unexpected-response", (_req, res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => {
          ws.terminate();
          resolve({ open: false, status: res.statusCode ?? 0, body: JSON.parse(text) });
        });
      });
      ws.once("error", reject);
    });
  }

  const withCookie = (host: string, origin?: string) => handshake(host, { cookie }, origin);

  beforeAll(async () => {
    upstream = http.createServer((_req, res) => res.end("ok"));
    const wss = new WebSocketServer({ noServer: true });
    upstream.on("upgrade", (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, () => reached.push(req.headers.origin)),
    );
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    const to = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    yaml = (boardOrigins) => `data_dir: ./data
routes:
  - { name: chat, from: "http://${CHAT}:8443", to: "${to}", websockets: true }
  - { name: board, from: "http://${BOARD}:8443", to: "${to}", websocket_origins: ${boardOrigins} }
policies: ./policies
limits: { reload_grace: 0s }
`;
    configPath = writeConfig(tempDir("zt-ws-origin-"), yaml(`["${PORTAL}"]`), {
      "main.cedar": "permit (principal, action, resource);",
    });
    zt = await runUp({
      configPath,
      env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
      clock,
      out: () => undefined,
    });
    port = zt.pepAddress.port;
    const u = await zt.services.identity.addUser({
      name: "alice",
      groups: ["eng"],
      password: PASSWORD,
    });
    await zt.services.snapshot.refreshUser(u.user.id);
    const code = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(u.totpSecret) }).generate({
      timestamp: clock.now(),
    });
    const l = await login(port, CHAT, "alice", PASSWORD, code);
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    cookie = l.cookie!;
    const mine = await zt.services.sessions.list({ userId: u.user.id });
    expect(mine).toHaveLength(1);
    sessionId = mine[0]!.id;
  }, 120_000);

  afterAll(async () => {
    await zt?.close();
    await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  });

  /** A refusal's audit record (request.refused, under the decision id answered). */
  async function refusalRecord(decisionId: string) {
    await zt.ctx.audit.flush();
    const rows = await queryAudit(zt.ctx.store, { decisionId, limit: 5 });
    expect(rows).toHaveLength(1);
    return { ...rows[0]!, data: JSON.parse(rows[0]!.data) as Record<string, unknown> };
  }

  it("refuses a cookie-signed handshake from a sibling subdomain with 403 ZT_CSRF, audited, and the upstream never sees it", async () => {
    const before = reached.length;
    for (const origin of ["http://evil.localhost", "http://evil.chat.localhost:8443", "null"]) {
      const r = await withCookie(`${CHAT}:8443`, origin);
      expect(r, origin).toMatchObject({
        open: false,
        status: 403,
        body: { error: { code: "ZT_CSRF", reason: "websocket-origin" } },
      });
      if (r.open) continue;
      const id = String(r.body.error["decision_id"]);
      expect(id).toMatch(/^dec_/);
      const row = await refusalRecord(id);
      expect(row).toMatchObject({ kind: "request.refused", outcome: "deny" });
      expect(row.reason).toBe("websocket-origin");
      expect(row.source_ip).toBe("127.0.0.1");
      // Whose session the page tried to use, on which route: the incident's first question.
      expect(row.subject).toBe("alice");
      expect(row.route).toBe("chat");
      expect(row.data).toMatchObject({ code: "ZT_CSRF", host: CHAT, target: "/ws", pep: "pep-1" });
      expect(row.data["session_id"]).toBe(sessionId);
      expect(String(row.data["detail"])).toContain(JSON.stringify(origin));
    }
    // A route's list opens it to the listed origins only, not to the route's neighbours.
    expect(await withCookie(BOARD, "http://evil.localhost")).toMatchObject({ status: 403 });
    expect(await withCookie(CHAT, PORTAL)).toMatchObject({ status: 403 });
    expect(reached.length).toBe(before);
  });

  it("lets a page on the route's own origin through, default ports equal to none", async () => {
    for (const [host, origin] of [
      [`${CHAT}:8443`, `http://${CHAT}:8443`],
      [`${CHAT}:8443`, `HTTP://Chat.Localhost.:8443`],
      [CHAT, `http://${CHAT}`],
      [CHAT, `http://${CHAT}:80`],
      [`${CHAT}:80`, `http://${CHAT}`],
    ] as const)
      expect(await withCookie(host, origin), `${host} ${origin}`).toEqual({
        open: true,
        upstreamOrigin: origin,
      });
    // Another port is another origin.
    expect(await withCookie(`${CHAT}:8443`, `http://${CHAT}`)).toMatchObject({ status: 403 });
  });

  it("lets a page on an origin the route lists in websocket_origins through", async () => {
    expect(await withCookie(BOARD, PORTAL)).toEqual({ open: true, upstreamOrigin: PORTAL });
    expect(await withCookie(BOARD, "HTTP://PORTAL.localhost:3000")).toMatchObject({ open: true });
    expect(await withCookie(BOARD, "http://portal.localhost")).toMatchObject({ status: 403 });
  });

  it("decides a handshake without an Origin (not a browser) as before, and one signed in by a Bearer token", async () => {
    expect(await withCookie(CHAT)).toEqual({ open: true, upstreamOrigin: undefined });
    // A page cannot make a browser send a Bearer token: its Origin is not checked.
    const bearer = { authorization: `Bearer ${cookie.slice(cookie.indexOf("=") + 1)}` };
    expect(await handshake(CHAT, bearer, "http://evil.localhost")).toMatchObject({ open: true });
    // Not signed in: 401 as before, whatever the Origin.
    expect(await handshake(CHAT, {}, "http://evil.localhost")).toMatchObject({
      status: 401,
      body: { error: { code: "ZT_AUTH_REQUIRED" } },
    });
  });

  it("applies a reloaded websocket_origins list to the next handshakes", async () => {
    writeFileSync(configPath, yaml(`["${PORTAL}", "http://evil.localhost"]`));
    await zt.reload();
    expect(await withCookie(BOARD, "http://evil.localhost")).toMatchObject({ open: true });
    expect(await withCookie(BOARD, PORTAL)).toMatchObject({ open: true });
    writeFileSync(configPath, yaml("[]"));
    await zt.reload();
    expect(await withCookie(BOARD, "http://evil.localhost")).toMatchObject({ status: 403 });
    expect(await withCookie(BOARD, PORTAL)).toMatchObject({ status: 403 });
    expect(await withCookie(BOARD, `http://${BOARD}`)).toMatchObject({ open: true });
  });
});
