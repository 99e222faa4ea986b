/**
 * Regression tests from the security review of the Policy Administrator, sign-in and the
 * admin API, each named after what it stops. A real PEP on a real socket, the real `zt`
 * CLI making admin changes from another process, real upstreams.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import WebSocket from "ws";
import { ManualClock } from "../src/core/clock.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { createApiServer } from "../src/api/index.js";
import { startPep, startUpstream, type PepFixture } from "./pep-fixture.js";
import { login, request } from "./helpers/http-client.js";
import { startRecordingUpstream } from "./helpers/upstream.js";
import { runZt, tempDir, writeConfig } from "./helpers/zt-process.js";

const POLICY = `
permit (principal in Group::"eng", action, resource == App::"app");
permit (principal in Group::"admins", action, resource == App::"admin");
`;

/** The payload of a JWT (not verified: the assertion tests verify signatures elsewhere). */
function jwtPayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString("utf8")) as Record<
    string,
    unknown
  >;
}

describe("identity assertions follow the user's current identity", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let cookie: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const to = `http://127.0.0.1:${upstream.port}`;
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "app", from: "http://app.localhost", to },
        { name: "admin", from: "http://admin.localhost", to },
      ],
    });
    await zt.ctx.events.start();
    await zt.addUser("alice", ["eng", "admins"]);
    cookie = (await zt.session("alice")).cookie;
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });

  const get = (host: string) =>
    request(zt.port, { host, path: "/", headers: { cookie, accept: "application/json" } });

  /** The groups claim of the assertion the upstream got with its last request. */
  const lastAssertionGroups = () => {
    const jwt = upstream.seen.at(-1)!.headers["x-zt-assertion"];
    expect(typeof jwt).toBe("string");
    return jwtPayload(jwt as string)["groups"];
  };

  it("a user removed from a group is not still named in it by a cached assertion (upstreams authorising on the signed groups kept granting admin for up to 30 s)", async () => {
    expect((await get("app.localhost")).status).toBe(200);
    expect(lastAssertionGroups()).toEqual(["admins", "eng"].sort());

    const config = join(zt.dir, "zt.yaml");
    const r = await runZt(["--config", config, "user", "groups", "alice", "--remove", "admins"]);
    expect(r.code, r.stderr).toBe(0);
    // Poll the PEP (not the clock) until it has heard the change: the admin app refuses.
    let status = 0;
    for (let i = 0; i < 200 && status !== 403; i++) {
      status = (await get("admin.localhost")).status;
      if (status !== 403) await new Promise((res) => setTimeout(res, 50));
    }
    expect(status).toBe(403);

    // Same session, same route: the signed assertion must say what the PEP now knows.
    expect((await get("app.localhost")).status).toBe(200);
    expect(lastAssertionGroups()).toEqual(["eng"]);
  });
});

describe("an operator's ban cuts live connections (zt up, the real CLI)", () => {
  let config: string;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let zt: RunningZt;
  let port: number;
  const clock = new ManualClock(Date.now());
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
  const PASSWORD = "pw-correct-horse-battery";
  const secrets: Record<string, string> = {};

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    config = writeConfig(
      tempDir(),
      `data_dir: ./data
trust_domain: ban.test
routes:
  - { name: app, from: "http://app.localhost:8443", to: "http://127.0.0.1:${upstream.port}" }
policies: ./policies
# No periodic pass during the test: only the ban's own event can cut the connection.
session: { ttl: 24h, idle_timeout: 12h, recheck_interval: 1h }
`,
      { "main.cedar": `permit (principal in Group::"eng", action, resource == App::"app");\n` },
    );
    zt = await runUp({ configPath: config, env, clock, out: () => undefined });
    port = zt.pepAddress.port;
    for (const name of ["alice", "bob", "carol"]) {
      const r = await zt.services.identity.addUser({ name, groups: ["eng"], password: PASSWORD });
      secrets[name] = r.totpSecret;
      await zt.services.snapshot.refreshUser(r.user.id);
    }
  }, 120_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
    setBansForTest({});
  });

  async function signIn(name: string): Promise<string> {
    const code = execFileSync("oathtool", ["--totp", "-b", secrets[name]!]).toString().trim();
    const l = await login(port, "app.localhost", name, PASSWORD, code);
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    return l.cookie!;
  }

  /** Bounded, so that a regression fails here rather than at the test's timeout. */
  async function bounded(p: Promise<void>, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      p,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(what)), 15_000);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  async function openWs(
    cookie: string,
    localAddress?: string,
  ): Promise<{ ws: WebSocket; closed: Promise<void> }> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
      headers: { host: "app.localhost", cookie },
      ...(localAddress ? { localAddress } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) =>
        reject(new Error(`upgrade refused: ${res.statusCode}`)),
      );
    });
    const echoed = new Promise<string>((r) => ws.once("message", (m: Buffer) => r(m.toString())));
    ws.send("ping");
    expect(await echoed).toBe("ping");
    return { ws, closed: new Promise<void>((resolve) => ws.once("close", () => resolve())) };
  }

  it("zt ban add user:<name> closes the user's open WebSocket at once (it ran on until the next periodic pass), and leaves other users' alone", async () => {
    const alice = await openWs(await signIn("alice"));
    const bob = await openWs(await signIn("bob"));
    const r = await runZt(["--config", config, "ban", "add", "user:alice", "--for", "1h"], {
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    await bounded(alice.closed, "alice's WebSocket is still open");
    await zt.ctx.audit.flush();
    const cut = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["subject", "reason"])
      .where("kind", "=", "session.cut")
      .execute();
    expect(cut).toContainEqual({ subject: "alice", reason: "user-banned" });
    expect(bob.ws.readyState).toBe(WebSocket.OPEN);
    const echoed = new Promise<string>((res) =>
      bob.ws.once("message", (m: Buffer) => res(m.toString())),
    );
    bob.ws.send("still here");
    expect(await echoed).toBe("still here");
    bob.ws.close();
  }, 60_000);

  it("zt ban add <address> closes the open WebSockets from that address at once", async () => {
    const carol = await openWs(await signIn("carol"), "127.0.0.3");
    const r = await runZt(["--config", config, "ban", "add", "127.0.0.3", "--for", "1h"], { env });
    expect(r.code, r.stderr).toBe(0);
    await bounded(carol.closed, "the banned address's WebSocket is still open");
    await zt.ctx.audit.flush();
    const cut = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["subject", "reason"])
      .where("kind", "=", "session.cut")
      .where("reason", "=", "source-banned")
      .execute();
    expect(cut).toEqual([{ subject: "carol", reason: "source-banned" }]);
  }, 60_000);
});

describe("the Bearer scheme, case-insensitive (RFC 9110 §11.1)", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let api: Awaited<ReturnType<typeof createApiServer>>;
  let token: string;

  beforeAll(async () => {
    upstream = await startUpstream();
    const metricsToken = join(tempDir(), "metrics.token");
    writeFileSync(metricsToken, "scrape-token-123\n");
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "app", from: "http://app.localhost", to: `http://127.0.0.1:${upstream.port}` },
      ],
      extra: { audit: { metrics_token_file: metricsToken } },
    });
    await zt.addUser("alice", ["eng"]);
    token = (await zt.session("alice")).token;
    api = await createApiServer(zt.ctx, { sessions: zt.services.sessions });
    await api.listen({ host: "127.0.0.1", port: 0 });
  }, 60_000);

  afterAll(async () => {
    await api?.close();
    await zt?.close();
    await upstream?.close();
  });

  it("a session token sent as `bearer` or `BEARER` signs the request in at the PEP and the API, and is never forwarded (it was 401 ZT_AUTH_REQUIRED, as if nothing was sent)", async () => {
    for (const scheme of ["Bearer", "bearer", "BEARER"]) {
      const r = await request(zt.port, {
        host: "app.localhost",
        path: "/",
        headers: { authorization: `${scheme} ${token}`, accept: "application/json" },
      });
      expect(r.status, `${scheme}: ${r.body}`).toBe(200);
      expect(upstream.seen.at(-1)!.headers["authorization"], scheme).toBeUndefined();

      const port = (api.server.address() as { port: number }).port;
      const a = await request(port, {
        host: "127.0.0.1",
        path: "/api/v1/ssh/sign",
        method: "POST",
        headers: { authorization: `${scheme} ${token}`, "content-type": "application/json" },
        body: "{}",
      });
      // Signed in: the body is what is refused.
      expect(a.status, `${scheme}: ${a.body}`).toBe(400);
      expect(a.json<{ error: { code: string } }>().error.code).toBe("ZT_BAD_REQUEST");

      const m = await request(port, {
        host: "127.0.0.1",
        path: "/metrics",
        headers: { authorization: `${scheme} scrape-token-123` },
      });
      expect(m.status, `${scheme}: ${m.body}`).toBe(200);
      const wrong = await request(port, {
        host: "127.0.0.1",
        path: "/metrics",
        headers: { authorization: `${scheme} scrape-token-124` },
      });
      expect(wrong.status).toBe(401);
    }
  });
});

describe("sign-in input of the wrong type", () => {
  let zt: PepFixture;
  let alice: { password: string; totpSecret: string };
  const HOST = "app.localhost";

  beforeAll(async () => {
    zt = await startPep({
      policies: POLICY,
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
    });
    alice = await zt.addUser("alice", ["eng"]);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  const login = (body: Record<string, unknown>) =>
    request(zt.port, {
      host: `${HOST}:${zt.port}`,
      path: "/.zt/login",
      method: "POST",
      headers: { "content-type": "application/json", origin: `http://${HOST}:${zt.port}` },
      body: JSON.stringify(body),
    });

  it("a code sent as a JSON number is a 400 naming the field, not a failed sign-in counted towards the lockout (it was ZT_AUTH_FAILED: wrong username, password or code)", async () => {
    const code = Number(
      execFileSync("oathtool", ["--totp", "-b", alice.totpSecret]).toString().trim(),
    );
    for (const totp of [code, null, true, ["123456"], { code: "123456" }]) {
      const r = await login({ username: "alice", password: alice.password, totp });
      expect(r.status, JSON.stringify(totp)).toBe(400);
      expect(r.json<{ error: { code: string; message: string; field: string } }>().error).toEqual({
        code: "ZT_BAD_REQUEST",
        message: 'totp: expected a string (the 6-digit code, or a backup code), as "123456"',
        field: "totp",
      });
    }
    for (const [field, value] of [
      ["username", 7],
      ["password", 12345678],
    ] as const) {
      const r = await login({ username: "alice", password: alice.password, [field]: value });
      expect(r.status).toBe(400);
      expect(r.json<{ error: { field: string } }>().error.field).toBe(field);
    }
    // None of them was a sign-in attempt: nothing audited, nothing counted.
    await zt.ctx.audit.flush();
    const attempts = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select("reason")
      .where("kind", "=", "login")
      .execute();
    expect(attempts).toEqual([]);
    const counted = await zt.ctx.store.db
      .selectFrom("auth_failures")
      .select(["key", "failures"])
      .where("failures", ">", 0)
      .execute();
    expect(counted).toEqual([]);
  });
});

describe("a live connection whose session the PEP forgot as idle (zt up, real WebSockets)", () => {
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let zt: RunningZt;
  let port: number;
  const clock = new ManualClock(Date.now());
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
  const PASSWORD = "pw-correct-horse-battery";
  const HOUR = 3_600_000;
  let alice: { secret: string; id: string };
  let bobId: string;
  let config: string;
  let daveSecret: string;

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    const to = `http://127.0.0.1:${upstream.port}`;
    config = writeConfig(
      tempDir(),
      `data_dir: ./data
trust_domain: idle.test
routes:
  - { name: app, from: "http://app.localhost:8443", to: "${to}" }
  - { name: fresh, from: "http://fresh.localhost:8443", to: "${to}" }
  - { name: open, from: "http://open.localhost:8443", to: "${to}" }
policies: ./policies
session: { ttl: 12h, idle_timeout: 2h, recheck_interval: 1h }
`,
      {
        "main.cedar": `permit (principal in Group::"eng", action, resource == App::"app");
permit (principal in Group::"eng", action, resource == App::"fresh")
when { context.mfa_age_seconds < 14400 };
permit (principal, action, resource == App::"open");
`,
      },
    );
    zt = await runUp({ configPath: config, env, clock, out: () => undefined });
    port = zt.pepAddress.port;
    const a = await zt.services.identity.addUser({
      name: "alice",
      groups: ["eng"],
      password: PASSWORD,
    });
    alice = { secret: a.totpSecret, id: a.user.id };
    const b = await zt.services.identity.addUser({ name: "bob", groups: [], password: PASSWORD });
    bobId = b.user.id;
    const d = await zt.services.identity.addUser({ name: "dave", groups: [], password: PASSWORD });
    daveSecret = d.totpSecret;
    for (const id of [alice.id, bobId, d.user.id]) await zt.services.snapshot.refreshUser(id);
  }, 120_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });

  async function openWs(host: string, cookie: string) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { host, cookie } });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) =>
        reject(new Error(`upgrade refused: ${res.statusCode}`)),
      );
    });
    let closed = false;
    ws.once("close", () => (closed = true));
    return { ws, isClosed: () => closed };
  }

  /** Moves the clock, and has the event bus poll the store (or the PEP would see it as lost). */
  async function advance(ms: number): Promise<void> {
    clock.advance(ms);
    await (zt.ctx.events as unknown as { catchUp(): Promise<void> }).catchUp();
  }

  /**
   * A frame through the WebSocket and its echo back: activity, so the re-check does not
   * cut it as idle (`session-idle`) before the cause under test.
   */
  async function ping(ws: WebSocket): Promise<void> {
    await new Promise<void>((resolve) => {
      ws.once("message", () => resolve());
      ws.send("ping");
    });
  }

  /** Waits for the close frame a cut sends (the tick has already decided by then). */
  async function settle(): Promise<void> {
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 10));
  }

  it("is still cut at the session's absolute expiry and when its MFA grows too old (the re-check fell back to the facts of the upgrade: the WebSocket outlived its session)", async () => {
    const code = execFileSync("oathtool", ["--totp", "-b", alice.secret]).toString().trim();
    const l = await login(port, "app.localhost", "alice", PASSWORD, code);
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    const sessionId = String(l.body["session_id"]);
    const plain = await openWs("app.localhost", l.cookie!);
    const fresh = await openWs("fresh.localhost", l.cookie!);

    // Only the WebSockets use the session: past the idle timeout, the PEP's session table
    // forgets it when it next prunes (at 1,024 remembered sessions).
    await advance(3 * HOUR);
    for (let i = 0; i < 1024; i++)
      await zt.services.sessions.create({ userId: bobId, sourceIp: "127.0.0.1", userAgent: "t" });
    expect([...zt.services.sessions.cached()].some((s) => s.id === sessionId)).toBe(false);

    // 5 h after sign-in: MFA older than the `fresh` app's 4 h; the session still runs.
    // (No periodic pass ran meanwhile; frames now keep the sockets from the idle cut,
    // and do not bring a forgotten session back.)
    await advance(2 * HOUR);
    await ping(plain.ws);
    await ping(fresh.ws);
    expect([...zt.services.sessions.cached()].some((s) => s.id === sessionId)).toBe(false);
    await zt.continuous.tick();
    await settle();
    expect(fresh.isClosed()).toBe(true);
    expect(plain.isClosed()).toBe(false);

    // Past the session's 12 h ttl.
    await advance(8 * HOUR);
    await ping(plain.ws);
    await zt.continuous.tick();
    await settle();
    expect(plain.isClosed()).toBe(true);
    await zt.ctx.audit.flush();
    const cuts = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["route", "reason"])
      .where("kind", "=", "session.cut")
      .orderBy("seq")
      .execute();
    expect(cuts).toEqual([
      { route: "fresh", reason: expect.any(String) },
      { route: "app", reason: "session-expired" },
    ]);
  }, 120_000);

  it("is cut when its user is deleted by another process (the deletion ends sessions without a session.revoked, and the PEP no longer knew this one)", async () => {
    // The code of zt's (manual) clock, not of the wall clock.
    const at = `@${Math.floor(clock.now() / 1000)}`;
    const code = execFileSync("oathtool", ["--totp", "-b", daveSecret, "-N", at]).toString().trim();
    const l = await login(port, "open.localhost", "dave", PASSWORD, code);
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    const ws = await openWs("open.localhost", l.cookie!);
    const closed = new Promise<void>((r) => ws.ws.once("close", () => r()));
    await advance(3 * HOUR);
    // The session table's amortised prune (it runs at 1,024 remembered sessions and more).
    zt.services.sessions.prune();
    // In use again (a frame): the cut below is the deletion's, not the idle one.
    await ping(ws.ws);
    const r = await runZt(["--config", config, "user", "delete", "dave"], { env });
    expect(r.code, r.stderr).toBe(0);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      closed,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("dave's WebSocket is still open")), 15_000);
      }),
    ]).finally(() => clearTimeout(timer));
  }, 60_000);
});
