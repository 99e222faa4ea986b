/**
 * Regression tests from the security review of the Policy Administrator, sign-in and the
 * admin API, each named after what it stops. A real PEP on a real socket, the real `zt`
 * CLI making admin changes from another process, real upstreams.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import WebSocket from "ws";
import { ManualClock } from "../src/core/clock.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";
import type { RunningZt } from "../src/app/run-up.js";
import { createApiServer } from "../src/api/index.js";
import { startPep, type PepFixture } from "./pep-fixture.js";
import { auditRows } from "./helpers/audit-rows.js";
import { bounded } from "./helpers/bounded.js";
import { loginRequest, request, signIn } from "./helpers/http-client.js";
import {
  startPepAppRoute,
  startPepWithUpstream,
  type PepAppRoute,
  type Upstream,
} from "./helpers/pep-app-route.js";
import { oathtoolCode } from "./helpers/totp-code.js";
import {
  openEchoingWebSocket,
  openWebSocket,
  roundTrip,
  type OpenWebSocket,
} from "./helpers/websocket-client.js";
import { runZt, tempDir } from "./helpers/zt-process.js";
import {
  LOOPBACK_LISTEN_ENV,
  startZtUpWithUpstream,
  USER_PASSWORD,
  type AddedUser,
  type ZtUpWithUpstream,
} from "./helpers/zt-up-in-process.js";
import { testSession } from "./helpers/test-session.js";

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
  let fixture: PepAppRoute;
  let zt: PepFixture;
  let upstream: Upstream;
  let cookie: string;

  beforeAll(async () => {
    fixture = await startPepWithUpstream({
      policies: POLICY,
      routes: (to) => [
        { name: "app", from: "http://app.localhost", to },
        { name: "admin", from: "http://admin.localhost", to },
      ],
    });
    ({ pep: zt, upstream } = fixture);
    await zt.ctx.events.start();
    await zt.addUser("alice", ["eng", "admins"]);
    cookie = (await zt.session("alice")).cookie;
  }, 60_000);

  afterAll(async () => {
    await fixture?.close();
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
  let suite: ZtUpWithUpstream;
  let config: string;
  let zt: RunningZt;
  let port: number;
  const clock = new ManualClock(Date.now());
  const env = LOOPBACK_LISTEN_ENV;
  let users: Record<string, AddedUser>;

  beforeAll(async () => {
    // The TOTP codes are made on real time: start the clock at now, not at file load.
    clock.set(Date.now());
    suite = await startZtUpWithUpstream({
      yaml: (to) => `data_dir: ./data
trust_domain: ban.test
routes:
  - { name: app, from: "http://app.localhost:8443", to: "${to}" }
policies: ./policies
# No periodic pass during the test: only the ban's own event can cut the connection.
session: { ttl: 24h, idle_timeout: 12h, recheck_interval: 1h }
`,
      policies: {
        "main.cedar": `permit (principal in Group::"eng", action, resource == App::"app");\n`,
      },
      users: [
        ["alice", ["eng"]],
        ["bob", ["eng"]],
        ["carol", ["eng"]],
      ],
      clock,
    });
    ({ zt, port, config, users } = suite);
  }, 120_000);

  afterAll(async () => {
    await suite?.close();
    setBansForTest({});
  });

  async function signInAs(name: string): Promise<string> {
    const code = oathtoolCode(users[name]!.totpSecret);
    return (await signIn(port, "app.localhost", name, USER_PASSWORD, code)).cookie;
  }

  const openWs = (cookie: string, localAddress?: string): Promise<OpenWebSocket> =>
    openEchoingWebSocket(port, "app.localhost", cookie, localAddress ? { localAddress } : {});

  it("zt ban add user:<name> closes the user's open WebSocket at once (it ran on until the next periodic pass), and leaves other users' alone", async () => {
    const alice = await openWs(await signInAs("alice"));
    const bob = await openWs(await signInAs("bob"));
    const r = await runZt(["--config", config, "ban", "add", "user:alice", "--for", "1h"], {
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    await bounded(alice.closed, "alice's WebSocket is still open");
    const cut = await auditRows(zt.ctx, "session.cut", ["subject", "reason"]);
    expect(cut).toContainEqual({ subject: "alice", reason: "user-banned" });
    expect(bob.ws.readyState).toBe(WebSocket.OPEN);
    expect(await roundTrip(bob.ws, "still here")).toBe("still here");
    bob.ws.close();
  }, 60_000);

  it("zt ban add <address> closes the open WebSockets from that address at once", async () => {
    const carol = await openWs(await signInAs("carol"), "127.0.0.3");
    const r = await runZt(["--config", config, "ban", "add", "127.0.0.3", "--for", "1h"], { env });
    expect(r.code, r.stderr).toBe(0);
    await bounded(carol.closed, "the banned address's WebSocket is still open");
    const cut = await auditRows(zt.ctx, "session.cut", ["subject", "reason"], {
      reason: "source-banned",
    });
    expect(cut).toEqual([{ subject: "carol", reason: "source-banned" }]);
  }, 60_000);
});

describe("the Bearer scheme, case-insensitive (RFC 9110 §11.1)", () => {
  let fixture: PepAppRoute;
  let zt: PepFixture;
  let upstream: Upstream;
  let api: Awaited<ReturnType<typeof createApiServer>>;
  let token: string;

  beforeAll(async () => {
    const metricsToken = join(tempDir(), "metrics.token");
    writeFileSync(metricsToken, "scrape-token-123\n");
    fixture = await startPepAppRoute({
      host: "app.localhost",
      policies: POLICY,
      extra: { audit: { metrics_token_file: metricsToken } },
    });
    ({ pep: zt, upstream } = fixture);
    await zt.addUser("alice", ["eng"]);
    token = (await zt.session("alice")).token;
    api = await createApiServer(zt.ctx, { sessions: zt.services.sessions });
    await api.listen({ host: "127.0.0.1", port: 0 });
  }, 60_000);

  afterAll(async () => {
    await api?.close();
    await fixture?.close();
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

  const login = (body: Record<string, unknown>) => loginRequest(zt.port, HOST, body);

  it("a code sent as a JSON number is a 400 naming the field, not a failed sign-in counted towards the lockout (it was ZT_AUTH_FAILED: wrong username, password or code)", async () => {
    const code = Number(oathtoolCode(alice.totpSecret));
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
    expect(await auditRows(zt.ctx, "login", ["reason"])).toEqual([]);
    const counted = await zt.ctx.store.db
      .selectFrom("auth_failures")
      .select(["key", "failures"])
      .where("failures", ">", 0)
      .execute();
    expect(counted).toEqual([]);
  });
});

describe("a live connection whose session the PEP forgot as idle (zt up, real WebSockets)", () => {
  let suite: ZtUpWithUpstream;
  let zt: RunningZt;
  let port: number;
  const clock = new ManualClock(Date.now());
  const HOUR = 3_600_000;
  let users: Record<string, AddedUser>;
  let config: string;

  beforeAll(async () => {
    // The TOTP codes are made on real time: start the clock at now, not at file load.
    clock.set(Date.now());
    suite = await startZtUpWithUpstream({
      yaml: (to) => `data_dir: ./data
trust_domain: idle.test
routes:
  - { name: app, from: "http://app.localhost:8443", to: "${to}" }
  - { name: fresh, from: "http://fresh.localhost:8443", to: "${to}" }
  - { name: open, from: "http://open.localhost:8443", to: "${to}" }
policies: ./policies
session: { ttl: 12h, idle_timeout: 2h, recheck_interval: 1h }
`,
      policies: {
        "main.cedar": `permit (principal in Group::"eng", action, resource == App::"app");
permit (principal in Group::"eng", action, resource == App::"fresh")
when { context.mfa_age_seconds < 14400 };
permit (principal, action, resource == App::"open");
`,
      },
      users: [
        ["alice", ["eng"]],
        ["bob", []],
        ["dave", []],
      ],
      clock,
    });
    ({ zt, port, config, users } = suite);
  }, 120_000);

  afterAll(async () => {
    await suite?.close();
  });

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
    await roundTrip(ws, "ping");
  }

  /** Waits for the close frame a cut sends (the tick has already decided by then). */
  async function settle(): Promise<void> {
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 10));
  }

  it("is still cut at the session's absolute expiry and when its MFA grows too old (the re-check fell back to the facts of the upgrade: the WebSocket outlived its session)", async () => {
    const { cookie, sessionId } = await signIn(
      port,
      "app.localhost",
      "alice",
      USER_PASSWORD,
      // zt's (manual) clock, not the wall clock: it was set when the suite started, and
      // under load more than a step may have passed since.
      oathtoolCode(users["alice"]!.totpSecret, clock.now()),
    );
    const plain = await openWebSocket(port, "app.localhost", cookie);
    const fresh = await openWebSocket(port, "fresh.localhost", cookie);

    // Only the WebSockets use the session: past the idle timeout, the PEP's session table
    // forgets it when it next prunes (at 1,024 remembered sessions).
    await advance(3 * HOUR);
    for (let i = 0; i < 1024; i++)
      await testSession(zt.services.sessions, users["bob"]!.id, { userAgent: "t" });
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
    expect(fresh.isOpen()).toBe(false);
    expect(plain.isOpen()).toBe(true);

    // Past the session's 12 h ttl.
    await advance(8 * HOUR);
    await ping(plain.ws);
    await zt.continuous.tick();
    await settle();
    expect(plain.isOpen()).toBe(false);
    const cuts = await auditRows(zt.ctx, "session.cut", ["route", "reason"]);
    expect(cuts).toEqual([
      { route: "fresh", reason: expect.any(String) },
      { route: "app", reason: "session-expired" },
    ]);
  }, 120_000);

  it("is cut when its user is deleted by another process (the deletion ends sessions without a session.revoked, and the PEP no longer knew this one)", async () => {
    // The code of zt's (manual) clock, not of the wall clock.
    const code = oathtoolCode(users["dave"]!.totpSecret, clock.now());
    const { cookie } = await signIn(port, "open.localhost", "dave", USER_PASSWORD, code);
    const ws = await openWebSocket(port, "open.localhost", cookie);
    await advance(3 * HOUR);
    // The session table's amortised prune (it runs at 1,024 remembered sessions and more).
    zt.services.sessions.prune();
    // In use again (a frame): the cut below is the deletion's, not the idle one.
    await ping(ws.ws);
    const r = await runZt(["--config", config, "user", "delete", "dave"], {
      env: LOOPBACK_LISTEN_ENV,
    });
    expect(r.code, r.stderr).toBe(0);
    await bounded(ws.closed, "dave's WebSocket is still open");
  }, 60_000);
});
