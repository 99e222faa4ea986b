/**
 * Regression tests for the identity, session and access review, each named after what it
 * stops. Real stores (SQLite), real sockets, a real `oathtool`; where a defect was about
 * several zt processes, two sets of services (each with its own AppContext, event bus and
 * memory) share one store, as `listen.proxy_workers` or replicas do; an injected clock
 * wherever time matters.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import net from "node:net";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { createServices, type Services } from "../src/app/services.js";
import { validateConfig, type ZtConfig } from "../src/config/index.js";
import { ManualClock, type Clock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import type { ZtEvent } from "../src/events/index.js";
import { identityService, totpCodeAt } from "../src/identity/index.js";
import { AccessService, GrantCache, RiskSignals } from "../src/access/index.js";
import { createPep, type Pep } from "../src/proxy/index.js";
import { request } from "./helpers/http-client.js";
import { startUpstream, tempDir } from "./pep-fixture.js";
import { testSession } from "./helpers/test-session.js";

const PASSWORD = "pw-correct-horse-battery";
const T0 = Date.UTC(2026, 2, 2, 9, 0, 0);

type Upstream = Awaited<ReturnType<typeof startUpstream>>;

/** One zt process's worth of services (and optionally its PEP) on a shared store. */
interface Node {
  ctx: AppContext;
  services: Services;
  pep?: Pep;
  port: number;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

function config(extra: Record<string, unknown> = {}, upstreamPort = 9): ZtConfig {
  const dir = tempDir("zt-review-");
  mkdirSync(join(dir, "policies"));
  writeFileSync(
    join(dir, "policies", "main.cedar"),
    `permit (principal, action, resource == App::"a");`,
  );
  return validateConfig(
    {
      data_dir: join(dir, "data"),
      trust_domain: "review.test",
      policies: join(dir, "policies"),
      routes: [
        {
          name: "a",
          from: "http://a.localhost",
          to: `http://127.0.0.1:${upstreamPort}`,
          websockets: true,
        },
      ],
      mfa: { max_failures: 50 },
      ...extra,
    },
    join(dir, "zt.yaml"),
  );
}

/** A context with nothing running on it: what a `zt user …` CLI command opens. */
async function cliContext(cfg: ZtConfig, clock?: Clock, create = false): Promise<AppContext> {
  const ctx = await openAppContext(cfg, { create, ...(clock ? { clock } : {}) });
  cleanups.push(() => ctx.close());
  return ctx;
}

/** A PEP process: services, the PEP on a real socket, and the event bus reading the store. */
async function pepNode(cfg: ZtConfig, o: { clock?: Clock; pep?: boolean } = {}): Promise<Node> {
  const ctx = await openAppContext(cfg, { create: true, ...(o.clock ? { clock: o.clock } : {}) });
  const services = await createServices(ctx);
  await ctx.events.start();
  let pep: Pep | undefined;
  let port = 0;
  if (o.pep !== false) {
    pep = createPep(services);
    port = (await pep.listen("127.0.0.1", 0)).port;
  }
  cleanups.push(async () => {
    await pep?.close();
    services.close();
    await ctx.close();
  });
  return { ctx, services, port, ...(pep ? { pep } : {}) };
}

async function upstream(): Promise<Upstream> {
  const up = await startUpstream();
  cleanups.push(() => up.close());
  return up;
}

function postLogin(
  port: number,
  fields: Record<string, string>,
  form = false,
): ReturnType<typeof request> {
  return request(port, {
    host: "a.localhost",
    path: "/.zt/login",
    method: "POST",
    headers: {
      "content-type": form ? "application/x-www-form-urlencoded" : "application/json",
    },
    body: form ? new URLSearchParams(fields).toString() : JSON.stringify(fields),
  });
}

function cookieOf(r: { headers: { "set-cookie"?: string[] | undefined } }): string {
  const set = r.headers["set-cookie"]?.[0];
  if (!set) throw new Error("no session cookie was set");
  return set.split(";")[0]!;
}

async function refusal(p: Promise<unknown>): Promise<ZtError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ZtError) return e;
    throw e;
  }
  throw new Error("expected a refusal, but the call succeeded");
}

describe("JIT access and user deletion", () => {
  const accessConfig = {
    access: { resources: { a: { approvers: "leads", max_ttl: "2h" } } },
  };

  it("stops a deleted user's grant and pending request from passing to a new user given the same name", async () => {
    const clock = new ManualClock(T0);
    const ctx = await cliContext(config(accessConfig), clock, true);
    const ids = identityService(ctx);
    await ids.addUser({ name: "bob", groups: ["eng"], password: PASSWORD });
    await ids.addUser({ name: "lead", groups: ["leads"], password: PASSWORD });
    const access = new AccessService(ctx);
    const grants = new GrantCache(ctx);
    const granted = await access.request({
      user: "bob",
      resource: "a",
      reason: "INC-1 fix",
      ttlMs: 3_600_000,
    });
    await access.approve(granted.id, "lead");
    const pending = await access.request({
      user: "bob",
      resource: "a",
      reason: "INC-2 later",
      ttlMs: 3_600_000,
    });
    await grants.load();
    expect(grants.contribute({ principal: { type: "User", id: "bob" }, route: "a" })).toEqual({
      grants: ["a"],
      breakglass: false,
    });
    const events: ZtEvent[] = [];
    ctx.events.subscribe((e) => events.push(e));

    await ids.deleteUser("bob");
    clock.advance(60_000);
    await ids.addUser({ name: "bob", groups: ["eng"], password: "pw-another-person-42" });

    // Both ended with the old user, audited, and announced so every PEP drops them.
    expect((await access.get(granted.id)).status).toBe("revoked");
    expect((await access.get(pending.id)).status).toBe("revoked");
    const changed = events.filter((e) => e.kind === "grant.changed").map((e) => e.data);
    expect(changed).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ requestId: granted.id, status: "revoked" }),
        expect.objectContaining({ requestId: pending.id, status: "revoked" }),
      ]),
    );
    // The new bob holds nothing: after a refresh of the old request (what a PEP does on
    // grant.changed) or a restart (load).
    await grants.refresh(granted.id);
    expect(
      grants.contribute({ principal: { type: "User", id: "bob" }, route: "a" }),
    ).toBeUndefined();
    await grants.load();
    expect(
      grants.contribute({ principal: { type: "User", id: "bob" }, route: "a" }),
    ).toBeUndefined();
    // And the withdrawn request can no longer be approved for him.
    expect((await refusal(access.approve(pending.id, "lead"))).code).toBe("ZT_ACCESS_STATE");

    await ctx.audit.flush();
    const revoked = await ctx.store.db
      .selectFrom("audit_events")
      .select(["kind", "reason", "data"])
      .where("kind", "=", "access.revoked")
      .execute();
    expect(revoked.map((r) => r.reason)).toEqual(["user-deleted", "user-deleted"]);
  });

  it("stops an approval for a requester who no longer exists or is disabled (grants held by user id)", async () => {
    const clock = new ManualClock(T0);
    const ctx = await cliContext(config(accessConfig), clock, true);
    const ids = identityService(ctx);
    const carol = await ids.addUser({ name: "carol", groups: ["eng"], password: PASSWORD });
    await ids.addUser({ name: "dave", groups: ["eng"], password: PASSWORD });
    await ids.addUser({ name: "lead", groups: ["leads"], password: PASSWORD });
    const access = new AccessService(ctx);
    const ask = (user: string) =>
      access.request({ user, resource: "a", reason: "maintenance", ttlMs: 600_000 });

    // A request whose user row vanished without `deleteUser` (data from before this fix).
    const orphan = await ask("carol");
    const held = await ask("carol");
    await access.approve(held.id, "lead");
    await ctx.store.db.deleteFrom("users").where("id", "=", carol.user.id).execute();
    await ids.addUser({ name: "carol", groups: ["eng"], password: "pw-another-person-42" });
    const e = await refusal(access.approve(orphan.id, "lead"));
    expect(e.code).toBe("ZT_ACCESS_STATE");
    expect(e.context["reason"]).toBe("requester-missing");
    expect((await access.get(orphan.id)).status).toBe("pending");
    // The grant still marked approved belongs to the old id: the new carol does not hold it.
    const grants = new GrantCache(ctx);
    await grants.load();
    expect(
      grants.contribute({ principal: { type: "User", id: "carol" }, route: "a" }),
    ).toBeUndefined();

    const disabled = await ask("dave");
    // Disabled by a write that left the request pending (`setDisabled` now revokes it, see
    // access-adversarial-review.test.ts): the approval still checks the requester itself.
    await ctx.store.db
      .updateTable("users")
      .set({ disabled: 1 })
      .where("name", "=", "dave")
      .execute();
    const d = await refusal(access.approve(disabled.id, "lead"));
    expect(d.code).toBe("ZT_ACCESS_STATE");
    expect(d.context["reason"]).toBe("requester-disabled");
    await ctx.audit.flush();
    const refused = await ctx.store.db
      .selectFrom("audit_events")
      .select("reason")
      .where("kind", "=", "access.approve")
      .where("outcome", "=", "failure")
      .execute();
    expect(refused.map((r) => r.reason).sort()).toEqual([
      "requester-disabled",
      "requester-missing",
    ]);
  });
});

describe("several PEP processes on one store", () => {
  it("stops the login loop for a user added after the PEPs started: the other PEP learns them from user.added", async () => {
    const up = await upstream();
    const cfg = config({}, up.port);
    const A = await pepNode(cfg);
    const B = await pepNode(cfg);
    // `zt user add` in its own process, after both PEPs are up.
    const cli = await cliContext(cfg);
    const added = await identityService(cli).addUser({
      name: "newbie",
      groups: ["eng"],
      password: PASSWORD,
    });
    await vi.waitFor(() => expect(B.services.snapshot.user(added.user.id)).toBeDefined(), {
      timeout: 10_000,
    });
    const l = await postLogin(A.port, {
      username: "newbie",
      password: PASSWORD,
      totp: totpCodeAt(added.totpSecret, Date.now()),
    });
    expect(l.status).toBe(200);
    const cookie = cookieOf(l);
    const viaB = await request(B.port, { host: "a.localhost", headers: { cookie } });
    expect(viaB.status, viaB.body).toBe(200);
  });

  it("stops a session active through one process from being refused as idle by another", async () => {
    const clock = new ManualClock(T0);
    const cfg = config({ session: { ttl: "12h", idle_timeout: "2h" } });
    const boot = await cliContext(cfg, clock, true);
    const u = await identityService(boot).addUser({
      name: "alice",
      groups: ["eng"],
      password: PASSWORD,
    });
    const A = await pepNode(cfg, { clock, pep: false });
    const B = await pepNode(cfg, { clock, pep: false });
    const { token, session } = await testSession(A.services.sessions, u.user.id);
    expect((await A.services.sessions.check(token)).ok).toBe(true);
    // The user works through B every 10 minutes for 2.5 h; A sees nothing of it.
    for (let m = 10; m <= 150; m += 10) {
      clock.advance(10 * 60_000);
      expect((await B.services.sessions.check(token)).ok).toBe(true);
    }
    // B writes last_seen_at off the request path: wait until the store has it.
    await vi.waitFor(async () => {
      const row = await boot.store.db
        .selectFrom("sessions")
        .select("last_seen_at")
        .where("id", "=", session.id)
        .executeTakeFirstOrThrow();
      expect(Number(row.last_seen_at)).toBe(clock.now());
    });
    expect(await A.services.sessions.check(token)).toMatchObject({ ok: true });
    // A session idle everywhere is still refused as idle, by both.
    clock.advance(2 * 3_600_000);
    for (const n of [A, B])
      expect(await n.services.sessions.check(token)).toMatchObject({
        ok: false,
        reason: "session-idle",
      });
  });
});

describe("risk signal context.failed_attempts", () => {
  it("stops context.failed_attempts from dropping to 0 at the failure that locks the account", async () => {
    const clock = new ManualClock(T0);
    const ctx = await cliContext(
      config({ mfa: { max_failures: 3, failure_window: "30s" } }),
      clock,
      true,
    );
    const ids = identityService(ctx);
    const olga = await ids.addUser({ name: "olga", groups: ["ops"], password: PASSWORD });
    const risk = new RiskSignals(ctx, () => "unknown");
    const failedAttempts = async () => {
      await risk.refresh();
      return (
        risk.contribute({ principal: { type: "User", id: "olga" }, sourceIp: "10.0.0.1" })?.[
          "failed_attempts"
        ] ?? 0
      );
    };
    const guess = () =>
      refusal(
        ids.authenticate({
          username: "olga",
          password: "wrong-password-123",
          totp: "000000",
          sourceIp: "10.0.0.1",
        }),
      );
    for (let i = 1; i <= 3; i++) {
      expect((await guess()).code).toBe("ZT_AUTH_FAILED");
      expect(await failedAttempts()).toBe(i);
      clock.advance(1_000);
    }
    // Locked now: the refused attempt is not a checked failure, and the count stays.
    expect((await guess()).code).toBe("ZT_MFA_LOCKED");
    expect(await failedAttempts()).toBe(3);
    // A success after the lock does not wash the burst away.
    clock.advance(60_000);
    await ids.authenticate({
      username: "olga",
      password: PASSWORD,
      totp: totpCodeAt(olga.totpSecret, clock.now()),
      sourceIp: "10.0.0.2",
    });
    expect(await failedAttempts()).toBe(3);
    // An hour after the last failure, it is forgotten.
    clock.advance(3_600_000);
    expect(await failedAttempts()).toBe(0);
  });
});

describe("sign-in at /.zt/login", () => {
  async function singlePep(extra: Record<string, unknown> = {}): Promise<Node> {
    const up = await upstream();
    const cfg = config(extra, up.port);
    await cliContext(cfg, undefined, true);
    return pepNode(cfg);
  }

  it("stops a non-ASCII or control character in the return URL from turning a successful sign-in into a refusal", async () => {
    const z = await singlePep();
    const u = await identityService(z.ctx).addUser({
      name: "alice",
      groups: ["eng"],
      password: PASSWORD,
    });
    const cases: [string, string][] = [
      ["/docs/日本語", "/docs/%E6%97%A5%E6%9C%AC%E8%AA%9E"],
      ["/a\u0100?q=é", "/a%C4%80?q=%C3%A9"],
      ["/x y", "/x%20y"],
      ["/bad\u0007bell", "/"],
    ];
    for (const [rd, location] of cases) {
      // A backup code per sign-in (each TOTP step works once; these need no clock).
      const r = await postLogin(
        z.port,
        { username: "alice", password: PASSWORD, totp: u.backupCodes.pop()!, rd },
        true,
      );
      expect(r.status, `${JSON.stringify(rd)}: ${r.body}`).toBe(303);
      expect(r.headers.location).toBe(location);
      expect(r.headers["set-cookie"]?.[0]).toMatch(/^zt_session=/);
    }
    const sessions = await z.services.sessions.list({ userId: u.user.id });
    expect(sessions).toHaveLength(cases.length);
  });

  it("stops an internal failure after the credential check from being answered as wrong credentials", async () => {
    const z = await singlePep();
    const u = await identityService(z.ctx).addUser({
      name: "alice",
      groups: ["eng"],
      password: PASSWORD,
    });
    // The store under the session table fails (stands in for a lost database connection).
    z.services.sessions.create = () => Promise.reject(new Error("disk I/O error"));
    const json = await postLogin(z.port, {
      username: "alice",
      password: PASSWORD,
      totp: totpCodeAt(u.totpSecret, Date.now()),
    });
    expect(json.status).toBe(500);
    expect(json.json<{ error: { code: string } }>().error.code).toBe("ZT_INTERNAL");
    expect(json.body).not.toContain("disk I/O");
    const form = await postLogin(
      z.port,
      { username: "alice", password: PASSWORD, totp: u.backupCodes[0]! },
      true,
    );
    expect(form.status).toBe(500);
    expect(form.body).not.toContain("Wrong username or password");
  });

  it("stops a correct TOTP code typed with a space from being refused and counted as a failure", async () => {
    const z = await singlePep();
    const u = await identityService(z.ctx).addUser({
      name: "alice",
      groups: ["eng"],
      password: PASSWORD,
    });
    const code = execFileSync("oathtool", ["--totp", "-b", u.totpSecret], {
      encoding: "utf8",
    }).trim();
    expect(code).toMatch(/^\d{6}$/);
    const r = await postLogin(z.port, {
      username: "alice",
      password: PASSWORD,
      totp: `${code.slice(0, 3)} ${code.slice(3)}`,
    });
    expect(r.status, r.body).toBe(200);
    const row = await z.ctx.store.db
      .selectFrom("auth_failures")
      .select(["failures", "recent_failures"])
      .where("key", "=", "user:alice")
      .executeTakeFirstOrThrow();
    expect(row.failures).toBe(0);
    expect(JSON.parse(row.recent_failures)).toEqual([]);
  });

  it("the 429 lockout answer carries Retry-After with the body's retry_after_seconds", async () => {
    const z = await singlePep({ mfa: { max_failures: 2, failure_window: "30s" } });
    await identityService(z.ctx).addUser({ name: "alice", groups: ["eng"], password: PASSWORD });
    const wrong = { username: "alice", password: "wrong-password-1", totp: "000000" };
    for (let i = 0; i < 2; i++) expect((await postLogin(z.port, wrong)).status).toBe(401);
    const json = await postLogin(z.port, wrong);
    expect(json.status).toBe(429);
    const seconds = json.json<{ error: { retry_after_seconds: number } }>().error
      .retry_after_seconds;
    expect(seconds).toBeGreaterThan(0);
    expect(json.headers["retry-after"]).toBe(String(seconds));
    const form = await postLogin(z.port, wrong, true);
    expect(form.status).toBe(429);
    expect(Number(form.headers["retry-after"])).toBeGreaterThan(0);
  });

  it("stops a login body over 16 KiB from resetting the connection: 413 ZT_PAYLOAD_TOO_LARGE, then close", async () => {
    const z = await singlePep();
    const head = (extra: string) =>
      `POST /.zt/login HTTP/1.1\r\nHost: a.localhost\r\nContent-Type: application/json\r\n${extra}\r\n`;
    const declared = (n: number) => [head(`Content-Length: ${n}\r\n`), "x".repeat(n)];
    const chunked = (n: number) => [
      head("Transfer-Encoding: chunked\r\n"),
      `${n.toString(16)}\r\n${"x".repeat(n)}\r\n0\r\n\r\n`,
    ];
    for (const [name, chunks] of [
      ["just over, declared", declared(16 * 1024 + 10)],
      ["200 KiB, declared", declared(200 * 1024)],
      ["200 KiB, chunked (no length up front)", chunked(200 * 1024)],
    ] as const) {
      const r = await rawExchange(z.port, chunks);
      expect(r.error, name).toBeUndefined();
      expect(r.text, name).toMatch(/^HTTP\/1\.1 413 /);
      expect(r.text.toLowerCase(), name).toContain("\r\nconnection: close\r\n");
      expect(r.text, name).toContain('"code":"ZT_PAYLOAD_TOO_LARGE"');
      expect(r.closed, name).toBe(true);
    }
  });
});

describe("credential changes end sessions", () => {
  it("stops a session won with the old password or MFA from outliving a password change or MFA reset, at every PEP", async () => {
    const up = await upstream();
    const cfg = config({}, up.port);
    await cliContext(cfg, undefined, true);
    const pep = await pepNode(cfg);
    const cli = await cliContext(cfg);
    const ids = identityService(cli);
    const alice = await ids.addUser({ name: "alice", groups: ["eng"], password: PASSWORD });
    const bob = await ids.addUser({ name: "bob", groups: ["eng"], password: PASSWORD });
    await vi.waitFor(() => expect(pep.services.snapshot.user(bob.user.id)).toBeDefined());
    const signIn = async (name: string, secret: string, at = Date.now()) =>
      cookieOf(
        await postLogin(pep.port, {
          username: name,
          password: PASSWORD,
          totp: totpCodeAt(secret, at),
        }),
      );
    const get = (cookie: string) => request(pep.port, { host: "a.localhost", headers: { cookie } });

    const aliceCookie = await signIn("alice", alice.totpSecret);
    const aliceWs = await openUpgrade(pep.port, aliceCookie);
    expect((await get(aliceCookie)).status).toBe(200);
    await ids.setPassword("alice", "a-brand-new-password-42");
    await aliceWs.closed; // the live connection is cut, not only the next request
    const after = await get(aliceCookie);
    expect(after.status).toBe(401);
    expect(after.body).toContain("ZT_SESSION_REVOKED");

    const bobCookie = await signIn("bob", bob.totpSecret);
    expect((await get(bobCookie)).status).toBe(200);
    await ids.resetMfa("bob");
    await vi.waitFor(async () => expect((await get(bobCookie)).status).toBe(401));

    await cli.audit.flush();
    const rows = await cli.store.db
      .selectFrom("audit_events")
      .select("reason")
      .where("kind", "=", "session.revoke")
      .execute();
    expect(rows.map((r) => r.reason).sort()).toEqual(["mfa-reset", "password-changed"]);
  });
});

/** Raw bytes on a fresh connection; what came back, whether it closed, and any socket error. */
function rawExchange(
  port: number,
  chunks: readonly string[],
): Promise<{ text: string; closed: boolean; error: string | undefined }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    let error: string | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text, closed: false, error });
    }, 15_000);
    socket.on("connect", () => {
      for (const c of chunks) socket.write(c, () => undefined);
    });
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    // Writing into a socket the server already closed (EPIPE) is the client's own business;
    // a reset (ECONNRESET) is what loses the answer.
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "EPIPE") error = e.code ?? e.message;
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ text, closed: true, error });
    });
  });
}

/** A WebSocket-style upgrade through the PEP; `closed` resolves when the PEP cuts it. */
async function openUpgrade(port: number, cookie: string): Promise<{ closed: Promise<void> }> {
  const socket = net.connect(port, "127.0.0.1");
  cleanups.push(async () => void socket.destroy());
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  socket.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    let text = "";
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (text.includes("\r\n\r\n")) {
        if (text.startsWith("HTTP/1.1 101")) resolve();
        else reject(new Error(`upgrade refused: ${text}`));
      }
    });
    socket.write(
      "GET /ws HTTP/1.1\r\nHost: a.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: ${cookie}\r\n\r\n`,
    );
  });
  return { closed };
}
