/**
 * Sign-in and sign-out on the PEP listener, through real sockets and a real `oathtool`:
 * one answer for every credential failure (no password oracle), no typed text kept as
 * the subject of an unknown user's audit record, the Origin check (port, https,
 * Sec-Fetch-Site), and every presented session ending at sign-out and at a new sign-in.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditRows } from "./helpers/audit-rows.js";
import { loginRequest, request } from "./helpers/http-client.js";
import { oathtoolCode } from "./helpers/totp-code.js";
import { startPep, type PepFixture } from "./pep-fixture.js";
import { testSession } from "./helpers/test-session.js";

const HOST = "app.localhost";

describe("PEP sign-in hardening", () => {
  let zt: PepFixture;
  let alice: { password: string; totpSecret: string };
  let carol: { password: string; totpSecret: string };
  let erin: { password: string; totpSecret: string };

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
      // This file fails on purpose several times in a row; the lockout has its own tests.
      extra: { mfa: { max_failures: 100 } },
    });
    alice = await zt.addUser("alice", ["eng"]);
    carol = await zt.addUser("carol", ["eng"]);
    await zt.services.identity.setDisabled("carol", true);
    erin = await zt.addUser("erin", ["eng"]);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  const origin = () => `http://${HOST}:${zt.port}`;
  const login = (body: Record<string, string>, headers: Record<string, string> = {}) =>
    loginRequest(zt.port, HOST, body, { headers });

  async function loginReasons(): Promise<(string | null)[]> {
    return (await auditRows(zt.ctx, "login", ["reason"])).map((r) => r.reason);
  }

  it("answers a wrong password, a missing or wrong code and a disabled account alike (no password oracle)", async () => {
    const answers = [
      await login({ username: "alice", password: "not-her-password" }),
      await login({ username: "alice", password: alice.password }), // right password, no code
      await login({ username: "alice", password: alice.password, totp: "000000" }),
      await login({
        username: "carol",
        password: carol.password,
        totp: oathtoolCode(carol.totpSecret),
      }),
    ];
    const shapes = answers.map((r) => ({ status: r.status, body: r.json<object>() }));
    for (const s of shapes)
      expect(s).toEqual({
        status: 401,
        body: {
          error: {
            code: "ZT_AUTH_FAILED",
            message: "Wrong username, password or authenticator code.",
          },
        },
      });
    // Operators still see why, in the audit log.
    expect(await loginReasons()).toEqual(
      expect.arrayContaining(["bad-password", "mfa-required", "mfa-invalid", "user-disabled"]),
    );
    // And the right answer still signs in.
    const ok = await login({
      username: "alice",
      password: alice.password,
      totp: oathtoolCode(alice.totpSecret),
    });
    expect(ok.status, ok.body).toBe(200);
  });

  it("keeps no subject for an unknown user's attempt (the name field may hold a password)", async () => {
    const r = await login({ username: "summer2024x", password: "whatever" });
    expect(r.status).toBe(401);
    await zt.ctx.audit.flush();
    const rows = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", "login")
      .where("reason", "=", "unknown-user")
      .execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.subject).toBeNull();
    expect(JSON.stringify(rows[0])).not.toContain("summer2024x");
  });

  it("refuses a sign-in from another origin: another port, plain http to an https client, Sec-Fetch-Site cross-site", async () => {
    const body = { username: "alice", password: alice.password, totp: "123456" };
    const csrf = (r: { status: number; json<T>(): T }) => {
      expect(r.status).toBe(403);
      expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_CSRF");
    };
    csrf(await login(body, { origin: `http://${HOST}:${zt.port + 1}` }));
    csrf(await login(body, { origin: "http://evil.localhost" }));
    csrf(await login(body, { origin: "null" }));
    // The client reached zt over https (a trusted proxy says so): an http page may not post.
    csrf(await login(body, { "x-forwarded-proto": "https" }));
    // No Origin, but the browser says the request came from another site.
    const noOrigin = await request(zt.port, {
      host: `${HOST}:${zt.port}`,
      path: "/.zt/login",
      method: "POST",
      headers: { "content-type": "application/json", "sec-fetch-site": "cross-site" },
      body: JSON.stringify(body),
    });
    csrf(noOrigin);
    // The same origin is not refused as CSRF (401 here: the code is wrong).
    expect((await login(body)).status).toBe(401);
  });

  it("compares the Origin as an origin: default ports equal, case and a trailing dot ignored, a port-less Host is the default port, anything else refused", async () => {
    const body = { username: "alice", password: alice.password, totp: "123456" };
    const post = (host: string, origin: string) =>
      request(zt.port, {
        host,
        path: "/.zt/login",
        method: "POST",
        headers: { "content-type": "application/json", origin },
        body: JSON.stringify(body),
      });
    const code = (r: { status: number; json<T>(): T }) =>
      `${r.status} ${r.json<{ error: { code: string } }>().error.code}`;
    // Same origin (401: the code is wrong, but the request got past the Origin check).
    expect(code(await post(`${HOST}:80`, `http://${HOST}`))).toBe("401 ZT_AUTH_FAILED");
    expect(code(await post(HOST, `http://${HOST}:80`))).toBe("401 ZT_AUTH_FAILED");
    expect(code(await post(`${HOST}.`, `HTTP://App.Localhost.`))).toBe("401 ZT_AUTH_FAILED");
    expect(code(await post(`${HOST}:${zt.port}`, `http://${HOST}.:${zt.port}`))).toBe(
      "401 ZT_AUTH_FAILED",
    );
    // A Host without a port is the default port, not any port.
    expect(code(await post(HOST, `http://${HOST}:${zt.port}`))).toBe("403 ZT_CSRF");
    expect(code(await post(HOST, `http://${HOST}:443`))).toBe("403 ZT_CSRF");
    // Not a serialised origin: refused, never guessed.
    for (const bad of [
      `http://${HOST}:${zt.port}/`,
      `http://${HOST}:${zt.port}/.zt/login`,
      `http://user@${HOST}:${zt.port}`,
      `http://${HOST}..:${zt.port}`,
      `ws://${HOST}:${zt.port}`,
    ])
      expect(code(await post(`${HOST}:${zt.port}`, bad)), bad).toBe("403 ZT_CSRF");
  });

  it("ends every session a sign-out presents: both session cookies and a Bearer token", async () => {
    const [a, b, c] = [
      await zt.session("alice"),
      await zt.session("alice"),
      await zt.session("alice"),
    ];
    const r = await request(zt.port, {
      host: `${HOST}:${zt.port}`,
      path: "/.zt/logout",
      method: "POST",
      headers: {
        origin: origin(),
        cookie: `${a.cookie}; theme=dark; ${b.cookie}`,
        authorization: `Bearer ${c.token}`,
      },
    });
    expect(r.status, r.body).toBe(200);
    for (const s of [a, b, c]) {
      const check = await zt.services.sessions.check(s.token);
      expect(check.ok, s.sessionId).toBe(false);
    }
  });

  it("forgets revoked sessions from memory (a long-running PEP would keep every one), and still refuses them", async () => {
    const sessions = zt.services.sessions;
    const live = await zt.session("alice");
    const ended = [await zt.session("alice"), await zt.session("alice")];
    await sessions.revoke(
      ended.map((e) => e.sessionId),
      "test",
    );
    const ids = () => new Set([...sessions.cached()].map((c) => c.id));
    expect(ids().has(ended[0]!.sessionId)).toBe(true);
    expect(sessions.prune()).toBeGreaterThanOrEqual(2);
    expect(ids().has(ended[0]!.sessionId)).toBe(false);
    expect(ids().has(ended[1]!.sessionId)).toBe(false);
    expect(ids().has(live.sessionId)).toBe(true);
    // Read back from the store when presented again: still refused.
    expect((await sessions.check(ended[0]!.token)).ok).toBe(false);
    expect((await sessions.check(live.token)).ok).toBe(true);
    // Without being asked: remembering more than the table held prunes it as it grows.
    const userId = (await zt.services.identity.getUser("alice"))!.id;
    for (let i = 0; i < 1100; i++) {
      const { session } = await testSession(sessions, userId, { userAgent: "t" });
      await sessions.revoke([session.id], "test");
    }
    expect([...sessions.cached()].length).toBeLessThan(1024);
  }, 60_000);

  it("ends the session a browser held when it signs in again (step-up): the old cookie is dead", async () => {
    const old = await zt.session("erin");
    const ok = await login(
      { username: "erin", password: erin.password, totp: oathtoolCode(erin.totpSecret) },
      { cookie: old.cookie },
    );
    expect(ok.status, ok.body).toBe(200);
    expect((await zt.services.sessions.check(old.token)).ok).toBe(false);
    const fresh = /zt_session=([^;]+)/.exec(String(ok.headers["set-cookie"]))![1]!;
    expect((await zt.services.sessions.check(fresh)).ok).toBe(true);
  });
});
