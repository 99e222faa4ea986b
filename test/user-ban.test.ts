/**
 * User bans are enforced (they were recorded and announced, and checked nowhere): a ban
 * on a user name refuses that user's sign-ins, with the one answer every failed sign-in
 * gets; an operator's ban (`zt ban add user:…`, the real CLI from another process) also
 * refuses the user's requests at the PEP at once, live session included; a login jail's
 * ban — which anyone typing the name can trigger — leaves a working session alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { startBanCache } from "../src/audit/index.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";
import { startPep, startUpstream, type PepFixture } from "./pep-fixture.js";
import { login, request } from "./helpers/http-client.js";
import { runZt } from "./helpers/zt-process.js";

const POLICY = `permit (principal in Group::"eng", action, resource == App::"app");\n`;

describe("user bans", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let stopBans: () => void;
  const users: Record<string, { password: string; totpSecret: string; cookie: string }> = {};

  beforeAll(async () => {
    upstream = await startUpstream();
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "app", from: "http://app.localhost", to: `http://127.0.0.1:${upstream.port}` },
      ],
    });
    await zt.ctx.events.start();
    stopBans = await startBanCache(zt.ctx.store, zt.ctx.events, () => zt.ctx.clock.now());
    for (const name of ["alice", "bob", "carol"]) {
      const u = await zt.addUser(name, ["eng"]);
      users[name] = { ...u, cookie: (await zt.session(name)).cookie };
    }
  });

  afterAll(async () => {
    stopBans?.();
    setBansForTest({});
    await zt?.close();
    await upstream?.close();
  });

  const get = (name: string) =>
    request(zt.port, {
      host: "app.localhost",
      path: "/",
      headers: { cookie: users[name]!.cookie, accept: "application/json" },
    });

  const signIn = (name: string) =>
    login(
      zt.port,
      "app.localhost",
      name,
      users[name]!.password,
      execFileSync("oathtool", ["--totp", "-b", users[name]!.totpSecret]).toString().trim(),
    );

  /** Polls the PEP (not the clock) until the answer for `name` has the status wanted. */
  async function until(name: string, status: number) {
    for (let i = 0; i < 200; i++) {
      const r = await get(name);
      if (r.status === status) return r;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`${name} never got ${status}`);
  }

  async function auditReasons(kind: string) {
    await zt.ctx.audit.flush();
    const rows = await zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["reason", "subject"])
      .where("kind", "=", kind)
      .execute();
    return rows;
  }

  it("an operator's ban refuses the user's requests (live session too) and sign-ins, until lifted", async () => {
    expect((await get("alice")).status).toBe(200);
    const config = join(zt.dir, "zt.yaml");
    const ban = await runZt(["--config", config, "ban", "add", "user:alice", "--for", "1h"]);
    expect(ban.code, ban.stderr).toBe(0);

    const denied = await until("alice", 403);
    expect(denied.json<{ error: { reason: string } }>().error.reason).toBe("user-banned");
    expect((await get("bob")).status).toBe(200);

    const s = await signIn("alice");
    expect(s.status).toBe(401);
    expect((s.body["error"] as { code: string }).code).toBe("ZT_AUTH_FAILED");
    expect(await auditReasons("login")).toContainEqual({ reason: "user-banned", subject: "alice" });

    const lift = await runZt(["--config", config, "ban", "remove", "user:alice"]);
    expect(lift.code, lift.stderr).toBe(0);
    await until("alice", 200);
    expect((await signIn("alice")).status).toBe(200);
  });

  it("zt ban add user:Carol bans carol (it recorded user:Carol, which matched nobody: carol kept her session and could sign in)", async () => {
    expect((await get("carol")).status).toBe(200);
    const config = join(zt.dir, "zt.yaml");
    const ban = await runZt(["--config", config, "ban", "add", "user:Carol", "--for", "1h"]);
    expect(ban.code, ban.stderr).toBe(0);
    const denied = await until("carol", 403);
    expect(ban.stdout).toContain("banned user:carol until");
    expect(denied.json<{ error: { reason: string } }>().error.reason).toBe("user-banned");
    expect((await signIn("carol")).status).toBe(401);
    // A name no user can have is refused, not recorded.
    const bad = await runZt(["--config", config, "ban", "add", "user:Carol Smith", "--for", "1h"]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/^zt: error ZT_BAD_REQUEST: user: expected a lowercase user name/);
    const lift = await runZt(["--config", config, "ban", "remove", "user: CAROL "]);
    expect(lift.code, lift.stderr).toBe(0);
    await until("carol", 200);
  });

  it("a login jail's ban stops the user's sign-ins but leaves a working session alone", async () => {
    const until = zt.ctx.clock.now() + 600_000;
    // What the alert service writes for a `login-user` jail (its own tests cover the jail).
    await zt.ctx.store.db
      .insertInto("audit_bans")
      .values({
        key: "user:bob",
        kind: "user",
        value: "bob",
        rule: "login-user",
        reason: "10 login-failure in 10m",
        created_at: zt.ctx.clock.now(),
        until,
        count: 1,
        lifted_at: null,
      })
      .execute();
    await zt.ctx.events.publish("ban.changed", {
      action: "add",
      key: "user:bob",
      until,
      rule: "login-user",
    });
    const s = await signIn("bob");
    expect(s.status).toBe(401);
    expect((s.body["error"] as { code: string }).code).toBe("ZT_AUTH_FAILED");
    expect(await auditReasons("login")).toContainEqual({ reason: "user-banned", subject: "bob" });
    expect((await get("bob")).status).toBe(200);
  });

  // A network ban reaches the PEP: forward-auth from a trusted front proxy (loopback)
  // naming an IPv6 client in X-Forwarded-For, refused for any address of the banned /64.
  it("an operator's network ban refuses every address in it at forward-auth, until lifted", async () => {
    const authz = (client: string) =>
      request(zt.port, {
        host: "app.localhost",
        path: "/.zt/authz",
        headers: {
          cookie: users["bob"]!.cookie,
          accept: "application/json",
          "x-forwarded-for": client,
          "x-forwarded-proto": "http",
          "x-forwarded-host": "app.localhost",
          "x-forwarded-uri": "/",
          "x-forwarded-method": "GET",
        },
      });
    const inside = "2001:db8:1:2:aaaa::5";
    expect((await authz(inside)).status).toBe(200);
    const config = join(zt.dir, "zt.yaml");
    const ban = await runZt(["--config", config, "ban", "add", "2001:db8:1:2::/64", "--for", "1h"]);
    expect(ban.code, ban.stderr).toBe(0);
    let denied;
    for (let i = 0; i < 200; i++) {
      denied = await authz(inside);
      if (denied.status === 403) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(denied?.status).toBe(403);
    expect(denied?.json<{ error: { reason: string } }>().error.reason).toBe("source-banned");
    expect((await authz("2001:db8:1:2:ffff:1:2:3")).status).toBe(403);
    expect((await authz("2001:db8:1:3::5")).status).toBe(200);
    const lift = await runZt(["--config", config, "ban", "remove", "2001:db8:1:2::/64"]);
    expect(lift.code, lift.stderr).toBe(0);
    for (let i = 0; i < 200 && (await authz(inside)).status !== 200; i++)
      await new Promise((res) => setTimeout(res, 50));
    expect((await authz(inside)).status).toBe(200);
  });
});
