/**
 * Regressions from the adversarial review of sign-in, each named after what it stops.
 * Real PEP on a real socket, real `oathtool` codes, the real `zt ban` CLI; every scenario
 * signs in from its own loopback address (127.0.0.x), so the per-address lockout key of
 * one does not leak into another.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { isUserBanned, startBanCache } from "../src/audit/index.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";
import { raw, startPep, startUpstream, type PepFixture } from "./pep-fixture.js";
import { postLogin, request } from "./helpers/http-client.js";
import { runZt } from "./helpers/zt-process.js";

const HOST = "app.localhost";

function oathtool(secret: string): string {
  return execFileSync("oathtool", ["--totp", "-b", secret]).toString().trim();
}

describe("sign-in: what the lockout and the answers tell an attacker", () => {
  let zt: PepFixture;
  let stopBans: () => void;
  const users: Record<string, { password: string; totpSecret: string }> = {};

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
      // Three failures lock a key; the window is long so a slow machine cannot spread four
      // attempts over two windows.
      extra: { mfa: { max_failures: 3, failure_window: "10m" } },
    });
    await zt.ctx.events.start();
    stopBans = await startBanCache(zt.ctx.store, zt.ctx.events, () => zt.ctx.clock.now());
    for (const name of ["alice", "carol", "dave"]) users[name] = await zt.addUser(name, ["eng"]);
    await zt.services.identity.setDisabled("carol", true);
  }, 60_000);

  afterAll(async () => {
    stopBans?.();
    setBansForTest({});
    await zt?.close();
  });

  /** A JSON sign-in from `from` (a loopback address), on a real socket; the HTTP status. */
  const login = (from: string, body: Record<string, string>) =>
    postLogin(zt.port, HOST, body, from);

  /** Four attempts in a row from one address: the statuses the client saw. */
  async function fourAttempts(from: string, attempts: Record<string, string>[]) {
    const out: number[] = [];
    for (const a of attempts) out.push(await login(from, a));
    return out;
  }

  const wrong = (username: string) => ({ username, password: "not-the-password", totp: "000000" });

  it("stops a disabled account's right password from being confirmed by the lockout (it counts like a wrong one)", async () => {
    // An enabled account: the right password with a wrong code is a failure like any other.
    const enabled = await fourAttempts("127.0.0.11", [
      wrong("dave"),
      wrong("dave"),
      { username: "dave", password: users["dave"]!.password, totp: "000000" },
      wrong("dave"),
    ]);
    expect(enabled).toEqual([401, 401, 401, 429]);
    // A disabled account, its right password (and a valid code) third: the same answers.
    // Were that attempt not counted, the fourth would still be let through (401): the
    // lockout would have confirmed the password the answers are careful not to.
    const disabled = await fourAttempts("127.0.0.12", [
      wrong("carol"),
      wrong("carol"),
      {
        username: "carol",
        password: users["carol"]!.password,
        totp: oathtool(users["carol"]!.totpSecret),
      },
      wrong("carol"),
    ]);
    expect(disabled).toEqual(enabled);
  });

  it("stops a banned user name (a login jail bans only names that exist) from answering unlike an unknown one", async () => {
    const config = join(zt.dir, "zt.yaml");
    const ban = await runZt(["--config", config, "ban", "add", "user:alice", "--for", "1h"]);
    expect(ban.code, ban.stderr).toBe(0);
    for (let i = 0; i < 200 && !isUserBanned("alice", Date.now()); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(isUserBanned("alice", Date.now())).toBe(true);

    // A name nobody has: three failures, then the lockout.
    const unknown = await fourAttempts("127.0.0.13", [
      wrong("nobody-here"),
      wrong("nobody-here"),
      wrong("nobody-here"),
      wrong("nobody-here"),
    ]);
    expect(unknown).toEqual([401, 401, 401, 429]);
    // The banned (existing) name must look the same: its attempts are counted too.
    const banned = await fourAttempts("127.0.0.14", [
      wrong("alice"),
      wrong("alice"),
      { username: "alice", password: users["alice"]!.password, totp: "000000" },
      wrong("alice"),
    ]);
    expect(banned).toEqual(unknown);

    await zt.ctx.audit.flush();
    const reasons = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["reason", "subject", "source_ip"])
      .where("kind", "=", "login")
      .where("source_ip", "=", "127.0.0.14")
      .orderBy("seq")
      .execute();
    // Still audited as the ban (which no jail counts), until the lockout answers instead.
    expect(reasons.map((r) => r.reason)).toEqual([
      "user-banned",
      "user-banned",
      "user-banned",
      "mfa-locked",
    ]);
  });
});

describe("proxy mode: a second session cookie (cookie shadowing)", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;

  beforeAll(async () => {
    upstream = await startUpstream();
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [
        {
          name: "app",
          from: `http://${HOST}`,
          to: `http://127.0.0.1:${upstream.port}`,
          websockets: true,
        },
      ],
    });
    for (const name of ["alice", "mallory"]) await zt.addUser(name, ["eng"]);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });

  // Script on any app under the same site (or a sibling host, with Domain=) can add a
  // `zt_session` cookie of the attacker's own session with a longer Path: the browser
  // sends it first (RFC 6265 §5.4), before the victim's. Taking the first one signed the
  // victim in as the attacker on that path (what they type there lands in the attacker's
  // account); forward-auth already refused such a request.
  it("stops a shadowing session cookie from signing the victim in as the attacker", async () => {
    const victim = await zt.session("alice");
    const attacker = await zt.session("mallory");
    const before = upstream.seen.length;
    const r = await request(zt.port, {
      host: HOST,
      path: "/notes/new",
      headers: { cookie: `${attacker.cookie}; theme=dark; ${victim.cookie}`, accept: "*/*" },
    });
    expect(r.status, r.body).toBe(403);
    expect(r.json<{ error: { reason: string } }>().error.reason).toBe("session-cookie-duplicate");
    expect(upstream.seen.length).toBe(before);

    // A browser gets the page that says how to get out of it.
    const page = await request(zt.port, {
      host: HOST,
      path: "/notes/new",
      headers: { cookie: `${attacker.cookie}; ${victim.cookie}`, accept: "text/html" },
    });
    expect(page.status).toBe(403);
    expect(page.body).toContain("two sign-in cookies");

    // Two Cookie header lines count the same as one line with both.
    const split = await raw(
      zt.port,
      [
        `GET /notes/new HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${attacker.cookie}\r\n` +
          `Cookie: ${victim.cookie}\r\nAccept: application/json\r\nConnection: close\r\n\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n") },
    );
    expect(split.status).toBe(403);

    // And a WebSocket upgrade.
    const ws = await raw(
      zt.port,
      [
        `GET /live HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${attacker.cookie}; ${victim.cookie}\r\n` +
          "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      ],
      { until: (t) => t.includes("\r\n\r\n") },
    );
    expect(ws.status).toBe(403);
    expect(ws.text).toContain("session-cookie-duplicate");
    expect(upstream.seen.length).toBe(before);

    // One cookie still works.
    const ok = await request(zt.port, {
      host: HOST,
      path: "/notes/new",
      headers: { cookie: victim.cookie, accept: "application/json" },
    });
    expect(ok.status).toBe(200);
  });
});
