/**
 * A WebSocket through the PEP is cut at its session's deadline — `session.idle_timeout`
 * with no frames either way, or the session's absolute expiry (`session.ttl`) — not at
 * the next periodic re-check; a streaming response likewise at the session's expiry.
 * `zt up` in process on the system clock (the deadline timers under test are real
 * timers), a real `ws` upstream and client over loopback.
 *
 * `session.recheck_interval` is an hour and every wait here is bounded far below it, so
 * no periodic pass runs during these tests: a socket that is cut was cut by its own
 * deadline, and without one it would still be open when the poll gives up.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import * as OTPAuth from "otpauth";
import WebSocket from "ws";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { signIn } from "./helpers/http-client.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { startStreamingUpstream } from "./helpers/upstream.js";
import { relay } from "./helpers/websocket-client.js";

const PASSWORD = "pw-correct-horse-battery";
const HOST = "chat.localhost";
/** Bounds every wait for a cut: far below the hour-long recheck_interval. */
const WAIT = { timeout: 20_000, interval: 50 };

/** A zt with one WebSocket route to a real upstream, and users signed in by TOTP. */
function wsFixture(session: string) {
  const f = {
    zt: undefined as unknown as RunningZt,
    port: 0,
    upstream: undefined as Awaited<ReturnType<typeof startStreamingUpstream>> | undefined,
    secrets: {} as Record<string, string>,
  };

  beforeAll(async () => {
    f.upstream = await startStreamingUpstream();
    const to = f.upstream.url;
    const config = writeConfig(
      tempDir("zt-ws-deadline-"),
      `data_dir: ./data
routes:
  - { name: chat, from: "http://${HOST}:8443", to: "${to}", websockets: true }
policies: ./policies
session: ${session}
`,
      { "main.cedar": "permit (principal, action, resource);" },
    );
    f.zt = await runUp({
      configPath: config,
      env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
      out: () => undefined,
    });
    f.port = f.zt.pepAddress.port;
    for (const name of ["alice", "bob", "carol"]) {
      const r = await f.zt.services.identity.addUser({ name, groups: ["eng"], password: PASSWORD });
      f.secrets[name] = r.totpSecret;
      await f.zt.services.snapshot.refreshUser(r.user.id);
    }
  }, 120_000);

  afterAll(async () => {
    await f.zt?.close();
    await f.upstream?.close();
  });

  /** Signs `name` in (each user once: a TOTP code is not accepted twice). */
  const signInAs = (name: string) => {
    const totp = new OTPAuth.TOTP({
      secret: OTPAuth.Secret.fromBase32(f.secrets[name]!),
      digits: 6,
      period: 30,
      algorithm: "SHA1",
    });
    return signIn(f.port, HOST, name, PASSWORD, totp.generate());
  };

  /** Opens a WebSocket through zt on `cookie`; both ends and whether the client's is open. */
  const openWs = async (cookie: string) => {
    const up = f.upstream!.nextSocket();
    const ws = new WebSocket(`ws://127.0.0.1:${f.port}/ws`, { headers: { host: HOST, cookie } });
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
  };

  /** `session.cut` records of a session: their reason and cause. */
  const cuts = async (sessionId: string) => {
    await f.zt.ctx.audit.flush();
    const rows = await f.zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["reason", "data"])
      .where("kind", "=", "session.cut")
      .orderBy("seq")
      .execute();
    return rows
      .map((r) => ({
        reason: r.reason,
        data: JSON.parse(String(r.data)) as Record<string, unknown>,
      }))
      .filter((r) => r.data["session_id"] === sessionId)
      .map((r) => ({ reason: r.reason, cause: r.data["cause"] }));
  };

  /** Opens a streaming response through zt on `cookie`, once its first event is in. */
  const openStream = (cookie: string) =>
    new Promise<{ isOpen: () => boolean }>((resolve, reject) => {
      const req = http.get(
        { host: "127.0.0.1", port: f.port, path: "/stream", headers: { host: HOST, cookie } },
        (res) => {
          let open = true;
          res.once("close", () => (open = false));
          res.on("error", () => undefined);
          res.once("data", () => resolve({ isOpen: () => open }));
        },
      );
      req.once("error", reject);
    });

  return { f, signInAs, openWs, openStream, cuts };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("WebSocket idle deadline (idle_timeout 2s, recheck_interval 1h)", () => {
  const IDLE_MS = 2_000;
  const { f, signInAs, openWs, cuts } = wsFixture(
    "{ ttl: 1h, idle_timeout: 2s, recheck_interval: 1h }",
  );

  it("cuts a WebSocket idle for idle_timeout without waiting for the periodic re-check", async () => {
    const s = await signInAs("alice");
    const c = await openWs(s.cookie);
    await relay(c.ws, c.upstream, "hello");
    await expect.poll(c.isOpen, WAIT).toBe(false);
    await expect
      .poll(() => cuts(s.sessionId), WAIT)
      .toEqual([{ reason: "session-idle", cause: "deadline" }]);
    // The idle cut ends the socket, not the session.
    expect((await f.zt.services.sessions.get(s.sessionId))?.revokedAt).toBeNull();
  });

  it("keeps a WebSocket with frames either way open past idle_timeout, then cuts it once silent", async () => {
    const s = await signInAs("bob");
    const c = await openWs(s.cookie);
    // Frames every quarter of the idle timeout, for twice the idle timeout: activity
    // moves the deadline, so the timer that fires meanwhile finds the socket in use.
    for (let i = 0; i < 8; i++) {
      if (i % 2 === 0) await relay(c.ws, c.upstream, `ping ${i}`);
      else await relay(c.upstream, c.ws, `news ${i}`);
      await pause(IDLE_MS / 4);
    }
    expect(c.isOpen()).toBe(true);
    expect(await cuts(s.sessionId)).toEqual([]);
    await expect.poll(c.isOpen, WAIT).toBe(false);
    expect(await cuts(s.sessionId)).toEqual([{ reason: "session-idle", cause: "deadline" }]);
  });

  it("drops a WebSocket's deadline timer when the socket closes", async () => {
    const s = await signInAs("carol");
    const c = await openWs(s.cookie);
    const reevaluator = f.zt.continuous.reevaluator;
    expect(reevaluator.armedDeadlines()).toBe(1);
    c.ws.close();
    await c.closed;
    await expect.poll(() => f.zt.pep!.live.count(s.sessionId), WAIT).toBe(0);
    expect(reevaluator.armedDeadlines()).toBe(0);
    expect(await cuts(s.sessionId)).toEqual([]);
  });
});

describe("WebSocket absolute expiry (ttl 4s, idle_timeout 1h, recheck_interval 1h)", () => {
  const { f, signInAs, openWs, openStream, cuts } = wsFixture(
    "{ ttl: 4s, idle_timeout: 1h, recheck_interval: 1h }",
  );

  it("cuts a WebSocket in use when its session expires, without waiting for the periodic re-check", async () => {
    const s = await signInAs("alice");
    const c = await openWs(s.cookie);
    // Frames keep flowing (so the socket is never idle) until zt cuts it.
    const chatter = setInterval(() => c.upstream.send("news"), 200);
    try {
      await relay(c.ws, c.upstream, "hello");
      await expect.poll(c.isOpen, WAIT).toBe(false);
    } finally {
      clearInterval(chatter);
    }
    await expect
      .poll(() => cuts(s.sessionId), WAIT)
      .toEqual([{ reason: "session-expired", cause: "deadline" }]);
    expect(f.zt.continuous.reevaluator.armedDeadlines()).toBe(0);
  });

  it("cuts a streaming response when its session expires, without waiting for the periodic re-check", async () => {
    const s = await signInAs("bob");
    const stream = await openStream(s.cookie);
    await expect.poll(stream.isOpen, WAIT).toBe(false);
    await expect
      .poll(() => cuts(s.sessionId), WAIT)
      .toEqual([{ reason: "session-expired", cause: "deadline" }]);
  });
});
