/**
 * Idle WebSockets through the PEP (`zt up` in process, injected clock, a real `ws`
 * upstream and client over real sockets): a socket with no frames either way for
 * `session.idle_timeout` is cut at the periodic re-check; frames either way keep it
 * open and count as session activity (written at most once per touch interval).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import * as OTPAuth from "otpauth";
import WebSocket, { WebSocketServer } from "ws";
import { ManualClock } from "../src/core/clock.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { login, request } from "./helpers/http-client.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";

const PASSWORD = "pw-correct-horse-battery";
const HOST = "chat.localhost";
const IDLE_MS = 10 * 60_000;
/** A tenth of the idle timeout (at most a minute): how stale last_seen_at may get. */
const TOUCH_MS = 60_000;

describe("idle WebSockets through the PEP", () => {
  let zt: RunningZt;
  let port: number;
  let upstream: http.Server;
  /** The upstream's side of every WebSocket, newest last. */
  const upstreamSockets: WebSocket[] = [];
  /** Who waits for the upstream's side of the next WebSocket. */
  const upstreamWaiters: ((ws: WebSocket) => void)[] = [];
  const clock = new ManualClock(Date.UTC(2026, 2, 2, 10, 0, 0));
  const secrets: Record<string, string> = {};

  async function signIn(name: string): Promise<{ cookie: string; sessionId: string }> {
    const totp = new OTPAuth.TOTP({
      secret: OTPAuth.Secret.fromBase32(secrets[name]!),
      digits: 6,
      period: 30,
      algorithm: "SHA1",
    });
    clock.advance(30_000); // a fresh TOTP step for every sign-in
    const l = await login(port, HOST, name, PASSWORD, totp.generate({ timestamp: clock.now() }));
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    return { cookie: l.cookie!, sessionId: String(l.body["session_id"]) };
  }

  async function openWs(cookie: string) {
    const up = new Promise<WebSocket>((resolve) => upstreamWaiters.push(resolve));
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { host: HOST, cookie } });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    let open = true;
    const closed = new Promise<void>((resolve) =>
      ws.once("close", () => {
        open = false;
        resolve();
      }),
    );
    return { ws, upstream: await up, closed, isOpen: () => open };
  }

  /** Sends `text` from `from` and waits until `to` has it (so zt relayed it). */
  function relay(from: WebSocket, to: WebSocket, text: string): Promise<void> {
    return new Promise((resolve) => {
      const onMessage = (m: WebSocket.RawData) => {
        if (m.toString() !== text) return;
        to.off("message", onMessage);
        resolve();
      };
      to.on("message", onMessage);
      from.send(text);
    });
  }

  /**
   * Moves the clock, then lets the event bus read the store as its poll would have
   * meanwhile (else the PEP, out of contact for that long by the clock, fails closed).
   */
  async function advance(ms: number): Promise<void> {
    clock.advance(ms);
    await (zt.ctx.events as { catchUp?: () => Promise<void> }).catchUp?.();
  }

  /** One periodic re-check; how many live connections it cut. */
  const tick = async () => (await zt.continuous.tick()).closed;

  const remembered = (sessionId: string) =>
    [...zt.services.sessions.cached()].find((s) => s.id === sessionId);

  const get = (cookie: string) =>
    request(port, { host: HOST, path: "/", headers: { cookie, accept: "application/json" } });

  async function cuts(sessionId: string): Promise<(string | null)[]> {
    await zt.ctx.audit.flush();
    const rows = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["reason", "data"])
      .where("kind", "=", "session.cut")
      .orderBy("seq")
      .execute();
    return rows.filter((r) => String(r.data).includes(sessionId)).map((r) => r.reason);
  }

  beforeAll(async () => {
    upstream = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"ok":true}');
    });
    const wss = new WebSocketServer({ noServer: true });
    upstream.on("upgrade", (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        upstreamSockets.push(ws);
        upstreamWaiters.shift()?.(ws);
      }),
    );
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    const to = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const dir = tempDir("zt-ws-idle-");
    const config = writeConfig(
      dir,
      `data_dir: ./data
routes:
  - { name: chat, from: "http://${HOST}:8443", to: "${to}", websockets: true }
policies: ./policies
session: { ttl: 24h, idle_timeout: 10m, recheck_interval: 1h }
`,
      { "main.cedar": "permit (principal, action, resource);" },
    );
    zt = await runUp({
      configPath: config,
      env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
      clock,
      out: () => undefined,
    });
    port = zt.pepAddress.port;
    for (const name of ["alice", "bob", "carol"]) {
      const r = await zt.services.identity.addUser({ name, groups: ["eng"], password: PASSWORD });
      secrets[name] = r.totpSecret;
      await zt.services.snapshot.refreshUser(r.user.id);
    }
  }, 120_000);

  afterAll(async () => {
    await zt?.close();
    for (const ws of upstreamSockets) ws.terminate();
    await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  });

  it("cuts a WebSocket with no frames either way for the idle timeout, without revoking the session", async () => {
    const s = await signIn("alice");
    const c = await openWs(s.cookie);
    await relay(c.ws, c.upstream, "hello");
    await advance(IDLE_MS - 1_000);
    expect(await tick()).toBe(0);
    await advance(1_000);
    expect(await tick()).toBe(1);
    await c.closed;
    expect(await cuts(s.sessionId)).toEqual(["session-idle"]);
    expect((await zt.services.sessions.get(s.sessionId))?.revokedAt).toBeNull();
  });

  it("keeps a WebSocket with client frames open past the idle timeout, and its session alive", async () => {
    const s = await signIn("bob");
    const c = await openWs(s.cookie);
    for (let i = 0; i < 4; i++) {
      await advance(IDLE_MS / 2);
      await relay(c.ws, c.upstream, `ping ${i}`);
      expect(await tick()).toBe(0);
    }
    await relay(c.ws, c.upstream, "still there");
    // Two idle timeouts after sign-in, with no HTTP request since: the frames kept the
    // session in use, so a plain request on it still passes.
    expect((await get(s.cookie)).status).toBe(200);
    expect(await cuts(s.sessionId)).toEqual([]);
    c.ws.close();
    await c.closed;
  });

  it("counts upstream frames too, and writes last_seen_at at most once per touch interval", async () => {
    const s = await signIn("carol");
    const c = await openWs(s.cookie);
    await advance(TOUCH_MS);
    await relay(c.upstream, c.ws, "tick");
    const touched = remembered(s.sessionId)!.lastSeenAt;
    expect(touched).toBe(clock.now());
    // Within the touch interval, more frames move nothing (no write per frame).
    await advance(TOUCH_MS / 2);
    for (let i = 0; i < 5; i++) await relay(c.upstream, c.ws, `tick ${i}`);
    expect(remembered(s.sessionId)!.lastSeenAt).toBe(touched);
    // The store has it too.
    await expect
      .poll(async () => (await zt.services.sessions.get(s.sessionId))?.lastSeenAt)
      .toBe(touched);
    // Only the upstream talks, for longer than the idle timeout: still open and in use.
    for (let i = 0; i < 3; i++) {
      await advance(IDLE_MS / 2);
      await relay(c.upstream, c.ws, `news ${i}`);
      expect(await tick()).toBe(0);
    }
    expect((await get(s.cookie)).status).toBe(200);
    // Then silence: cut.
    await advance(IDLE_MS);
    expect(await tick()).toBe(1);
    await c.closed;
    expect(await cuts(s.sessionId)).toEqual(["session-idle"]);
  });
});
