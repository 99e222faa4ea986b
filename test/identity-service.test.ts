/**
 * IdentityService over a real store (SQLite, and PostgreSQL when reachable): users and
 * groups, password + TOTP logins, RFC 6238 §5.2 replay refusal (also under concurrency,
 * across two connections), lockout per user and per source address on a ManualClock,
 * backup codes, MFA reset, events, audit records without secrets, and interop with the
 * real `oathtool`.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import type { ZtEvent } from "../src/events/index.js";
import { IdentityService, totpCodeAt, type AddUserResult } from "../src/identity/index.js";
import { hashSecret } from "../src/identity/password-hash.js";
import { engines, type Engine, type EngineTarget } from "./store-fixture.js";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const IP = "192.0.2.10";

async function openCtx(
  target: EngineTarget,
  clock: ManualClock,
  masterKey: string,
): Promise<AppContext> {
  const dataDir = target.storeOptions.dataDir;
  const config = validateConfig(
    {
      data_dir: dataDir,
      ...(target.storeOptions.databaseUrl ? { database_url: target.storeOptions.databaseUrl } : {}),
      mfa: { issuer: "zt-test", max_failures: 3, failure_window: "30s" },
    },
    join(dataDir, "zt.yaml"),
  );
  return openAppContext(config, { clock, env: { ZT_MASTER_KEY: masterKey } });
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

const DIST_ROOT = resolve(import.meta.dirname, "..", "dist");

/**
 * A child `node` process that opens its own AppContext on the same store (with the
 * system clock), reports "ready", waits for "go" on stdin, then tries one login.
 * Needs `npm run build` (the `pretest` script) for dist/.
 */
function startAuthChild(o: {
  dataDir: string;
  databaseUrl: string | undefined;
  masterKey: string;
  code: string;
  sourceIp: string;
}): { ready: Promise<void>; go: () => void; result: Promise<string> } {
  const script = `
    import { validateConfig } from ${JSON.stringify(pathToFileURL(join(DIST_ROOT, "src/config/index.js")).href)};
    import { openAppContext } from ${JSON.stringify(pathToFileURL(join(DIST_ROOT, "src/app/index.js")).href)};
    import { IdentityService } from ${JSON.stringify(pathToFileURL(join(DIST_ROOT, "src/identity/index.js")).href)};
    const o = JSON.parse(process.env.ZT_TEST_CHILD);
    const config = validateConfig({ data_dir: o.dataDir, ...(o.databaseUrl ? { database_url: o.databaseUrl } : {}) }, o.dataDir + "/zt.yaml");
    const ctx = await openAppContext(config, { env: { ZT_MASTER_KEY: o.masterKey } });
    const idp = new IdentityService(ctx);
    process.stdout.write("ready\\n");
    await new Promise((r) => process.stdin.once("data", r));
    let out = "ok";
    try { await idp.authenticate({ username: "alice", password: "alice-password-1", totp: o.code, sourceIp: o.sourceIp }); }
    catch (e) { out = e.code ?? String(e); }
    await ctx.close();
    process.stdout.write("result " + out + "\\n");
    process.exit(0);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, ZT_TEST_CHILD: JSON.stringify(o) },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const ready = new Promise<void>((res, rej) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("ready")) res();
    });
    child.on("exit", () => rej(new Error(`child exited early: ${out} ${err}`)));
  });
  const result = new Promise<string>((res, rej) => {
    child.on("exit", () => {
      const m = /result (\S+)/.exec(out);
      if (m) res(m[1]!);
      else rej(new Error(`child failed: ${out} ${err}`));
    });
  });
  ready.catch(() => undefined);
  return { ready, go: () => child.stdin.end("go\n"), result };
}

const allEngines = await engines();

describe.each(allEngines.map((e) => [e.name, e] as [string, Engine]))(
  "IdentityService on %s",
  (_name, engine) => {
    let target: EngineTarget;
    let clock: ManualClock;
    let ctx: AppContext;
    let idp: IdentityService;
    let events: ZtEvent[];
    let masterKey: string;
    const secrets: string[] = [];

    beforeEach(async () => {
      target = await engine.fresh();
      clock = new ManualClock(T0);
      masterKey = randomBytes(32).toString("base64");
      ctx = await openCtx(target, clock, masterKey);
      idp = new IdentityService(ctx);
      events = [];
      ctx.events.subscribe((e) => events.push(e));
    });

    afterEach(async () => {
      await ctx.close();
      await target.cleanup();
    });

    async function addAlice(
      extra: Partial<Parameters<IdentityService["addUser"]>[0]> = {},
    ): Promise<AddUserResult> {
      const r = await idp.addUser({
        name: "alice",
        groups: ["eng", "ops"],
        password: "alice-password-1",
        ...extra,
      });
      secrets.push(r.totpSecret, ...r.backupCodes, "alice-password-1");
      return r;
    }

    const login = (
      over: Partial<Parameters<IdentityService["authenticate"]>[0]> & { secret?: string } = {},
    ) => {
      const { secret, ...rest } = over;
      return idp.authenticate({
        username: "alice",
        password: "alice-password-1",
        ...(secret ? { totp: totpCodeAt(secret, clock.now()) } : {}),
        sourceIp: IP,
        ...rest,
      });
    };

    it("adds a user with groups, a TOTP enrolment and ten backup codes", async () => {
      const r = await addAlice({ email: "alice@example.test" });
      expect(r.user).toMatchObject({
        name: "alice",
        email: "alice@example.test",
        groups: ["eng", "ops"],
        disabled: false,
      });
      expect(r.user.createdAt).toBe(T0);
      expect(r.password).toBeUndefined();
      expect(r.totpSecret).toMatch(/^[A-Z2-7]{32}$/);
      const uri = new URL(r.totpUri);
      expect(uri.protocol).toBe("otpauth:");
      expect(uri.searchParams.get("issuer")).toBe("zt-test");
      expect(uri.searchParams.get("secret")).toBe(r.totpSecret);
      expect(r.backupCodes).toHaveLength(10);
      expect(await idp.getUser("alice")).toEqual(r.user);
      expect(await idp.getUserById(r.user.id)).toEqual(r.user);
      expect(await idp.groupsOf(r.user.id)).toEqual(["eng", "ops"]);
      const groups = await ctx.store.db
        .selectFrom("groups")
        .select("name")
        .orderBy("name")
        .execute();
      expect(groups.map((g) => g.name)).toEqual(["eng", "ops"]);
      // stored: hashes and a sealed secret only
      const row = await ctx.store.db
        .selectFrom("users")
        .selectAll()
        .where("name", "=", "alice")
        .executeTakeFirstOrThrow();
      expect(row.password_hash).toMatch(/^scrypt\$/);
      expect(row.totp_secret_sealed).toMatch(/^ztbox1\./);
      expect(row.totp_secret_sealed).not.toContain(r.totpSecret);
      const codes = await ctx.store.db.selectFrom("backup_codes").selectAll().execute();
      expect(codes).toHaveLength(10);
      for (const c of codes)
        for (const plain of r.backupCodes)
          expect(c.code_hash).not.toContain(plain.replace("-", ""));
    });

    it("generates a strong password when none is given, and it works", async () => {
      const r = await idp.addUser({ name: "bob" });
      expect(r.password).toMatch(/^[A-Za-z0-9_-]{20}$/);
      const u = await idp.authenticate({
        username: "bob",
        password: r.password!,
        totp: totpCodeAt(r.totpSecret, clock.now()),
        sourceIp: IP,
      });
      expect(u.name).toBe("bob");
      expect(u.groups).toEqual([]);
    });

    it("refuses bad input with stable codes naming the field", async () => {
      await addAlice();
      expect((await refusal(addAlice())).code).toBe("ZT_USER_EXISTS");
      for (const name of ["Alice", "", "-x", "a b", "a".repeat(65), "ali/ce", "é"]) {
        const e = await refusal(idp.addUser({ name }));
        expect(e.code, name).toBe("ZT_BAD_REQUEST");
        expect(e.message).toMatch(/^name: /);
      }
      expect((await refusal(idp.addUser({ name: "bob", groups: ["Eng"] }))).message).toMatch(
        /^groups\[0\]: /,
      );
      expect((await refusal(idp.addUser({ name: "bob", email: "nope" }))).message).toMatch(
        /^email: /,
      );
      expect((await refusal(idp.addUser({ name: "bob", password: "short" }))).message).toMatch(
        /^password: /,
      );
      expect((await refusal(idp.setDisabled("nobody", true))).code).toBe("ZT_USER_NOT_FOUND");
      expect((await refusal(idp.resetMfa("nobody"))).code).toBe("ZT_USER_NOT_FOUND");
      expect(await idp.getUser("NOT VALID")).toBeUndefined();
      expect((await idp.listUsers()).map((u) => u.name)).toEqual(["alice"]);
    });

    it("signs in with password + TOTP and audits the success", async () => {
      const { totpSecret, user } = await addAlice();
      const u = await login({ secret: totpSecret });
      expect(u).toEqual(user);
      await ctx.audit.flush();
      const rows = await ctx.store.db
        .selectFrom("audit_events")
        .selectAll()
        .where("kind", "=", "login")
        .execute();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ outcome: "success", subject: "alice", source_ip: IP });
      expect(JSON.parse(rows[0]!.data)).toEqual({ method: "totp" });
    });

    it("unknown user and wrong password are the same refusal", async () => {
      await addAlice();
      const wrong = await refusal(login({ password: "not-the-password" }));
      const unknown = await refusal(login({ username: "mallory" }));
      expect(wrong.code).toBe("ZT_AUTH_FAILED");
      expect(unknown.code).toBe("ZT_AUTH_FAILED");
      expect(wrong.message).toBe(unknown.message);
      expect(wrong.context).toEqual(unknown.context);
      await ctx.audit.flush();
      const reasons = (
        await ctx.store.db.selectFrom("audit_events").select("reason").orderBy("seq").execute()
      ).map((r) => r.reason);
      expect(reasons.slice(-2)).toEqual(["bad-password", "unknown-user"]);
    });

    it("a missing, malformed or wrong TOTP code is refused", async () => {
      const { totpSecret } = await addAlice();
      expect((await refusal(login())).context).toEqual({ reason: "mfa-required" });
      expect((await refusal(login())).code).toBe("ZT_MFA_INVALID");
      clock.set(T0 + 120_000); // past the first lockout
      const wrong = totpCodeAt(totpSecret, clock.now() + 10 * 30_000);
      expect((await refusal(login({ totp: wrong }))).context).toEqual({ reason: "mfa-invalid" });
      expect((await refusal(login({ totp: "12ab56" }))).context).toEqual({
        reason: "mfa-malformed",
      });
    });

    it("RFC 6238 §5.2: the same code twice → the second is refused (mfa-replayed)", async () => {
      const { totpSecret } = await addAlice();
      const code = totpCodeAt(totpSecret, clock.now());
      await login({ totp: code });
      const e = await refusal(login({ totp: code }));
      expect(e.code).toBe("ZT_MFA_REPLAYED");
      expect(e.context).toEqual({ reason: "mfa-replayed" });
      // still refused one step later (inside the ±1 window)
      clock.advance(30_000);
      expect((await refusal(login({ totp: code }))).code).toBe("ZT_MFA_REPLAYED");
      // the next code works
      expect((await login({ secret: totpSecret })).name).toBe("alice");
    });

    it("RFC 6238 §5.2: an older code after a newer one was accepted is refused", async () => {
      const { totpSecret } = await addAlice();
      const older = totpCodeAt(totpSecret, clock.now());
      const newer = totpCodeAt(totpSecret, clock.now() + 30_000); // an authenticator running a little fast
      await login({ totp: newer });
      expect((await refusal(login({ totp: older }))).code).toBe("ZT_MFA_REPLAYED");
    });

    it("concurrent double use of one code: exactly one login wins (same connection)", async () => {
      const { totpSecret } = await addAlice();
      const code = totpCodeAt(totpSecret, clock.now());
      const results = await Promise.allSettled([
        login({ totp: code }),
        login({ totp: code }),
        login({ totp: code }),
      ]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      for (const r of results) {
        if (r.status === "rejected") expect((r.reason as ZtError).code).toBe("ZT_MFA_REPLAYED");
      }
    });

    // Two connections in one process would deadlock on SQLite's synchronous driver, so the
    // cross-connection race runs in real child processes (one connection each).
    it("concurrent double use of one code: exactly one of two zt processes wins", async () => {
      const { totpSecret } = await addAlice();
      const code = totpCodeAt(totpSecret, Date.now());
      const children = [0, 1].map((i) =>
        startAuthChild({
          dataDir: target.storeOptions.dataDir,
          databaseUrl: target.storeOptions.databaseUrl,
          masterKey,
          code,
          sourceIp: `192.0.2.${i + 1}`,
        }),
      );
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.go();
      const outcomes = (await Promise.all(children.map((c) => c.result))).sort();
      expect(outcomes).toEqual(["ZT_MFA_REPLAYED", "ok"]);
    });

    it.runIf(engine.name === "postgres")(
      "concurrent double use of one code: exactly one wins across two pools in one process",
      async () => {
        const { totpSecret } = await addAlice();
        const ctx2 = await openCtx(target, clock, masterKey);
        try {
          const idp2 = new IdentityService(ctx2);
          const code = totpCodeAt(totpSecret, clock.now());
          const args = { username: "alice", password: "alice-password-1", totp: code };
          const results = await Promise.allSettled([
            idp.authenticate({ ...args, sourceIp: "192.0.2.1" }),
            idp2.authenticate({ ...args, sourceIp: "192.0.2.2" }),
          ]);
          expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
          const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
          expect((lost.reason as ZtError).code).toBe("ZT_MFA_REPLAYED");
        } finally {
          await ctx2.close();
        }
      },
    );

    it("lockout per user: three failures within 30 s, then locked even with the right password; growth on repeat", async () => {
      const { totpSecret } = await addAlice();
      for (let i = 0; i < 3; i++) {
        expect(
          (await refusal(login({ password: "wrong-password", sourceIp: `198.51.100.${i}` }))).code,
        ).toBe("ZT_AUTH_FAILED");
        clock.advance(1000);
      }
      // from yet another address, with everything right: locked for 30 s from the third failure
      const locked = await refusal(login({ secret: totpSecret, sourceIp: "203.0.113.9" }));
      expect(locked.code).toBe("ZT_MFA_LOCKED");
      expect(locked.context).toEqual({ reason: "mfa-locked", retry_after_seconds: 29 });
      clock.advance(28_999);
      expect((await refusal(login({ secret: totpSecret }))).code).toBe("ZT_MFA_LOCKED");
      clock.advance(1);
      // three more failures → the second lockout lasts 60 s
      for (let i = 0; i < 3; i++) await refusal(login({ password: "wrong-password" }));
      expect((await refusal(login({ secret: totpSecret }))).context).toEqual({
        reason: "mfa-locked",
        retry_after_seconds: 60,
      });
      clock.advance(60_000);
      expect((await login({ secret: totpSecret })).name).toBe("alice");
      // success resets: a fresh run starts at 30 s again
      clock.advance(30_000);
      for (let i = 0; i < 3; i++)
        await refusal(login({ password: "wrong-password", sourceIp: `198.51.100.${i}` }));
      expect(
        (await refusal(login({ secret: totpSecret, sourceIp: "203.0.113.9" }))).context,
      ).toEqual({
        reason: "mfa-locked",
        retry_after_seconds: 30,
      });
    });

    it("unlock clears a user's lockout (the source address keeps its own count)", async () => {
      const { totpSecret } = await addAlice();
      for (let i = 0; i < 3; i++) {
        await refusal(login({ password: "wrong-password", sourceIp: `198.51.100.${i}` }));
      }
      expect((await refusal(login({ secret: totpSecret }))).code).toBe("ZT_MFA_LOCKED");
      await idp.unlock("alice");
      expect((await login({ secret: totpSecret })).name).toBe("alice");
      await ctx.audit.flush();
      const kinds = (await ctx.store.db.selectFrom("audit_events").select("kind").execute()).map(
        (r) => r.kind,
      );
      expect(kinds).toContain("user.unlock");
    });

    it("lockout per source address: a spray over three users from one address locks the address", async () => {
      const { totpSecret } = await addAlice();
      for (const name of ["bob", "carol", "dave"])
        await refusal(login({ username: name, password: "guess-123" }));
      expect((await refusal(login({ secret: totpSecret }))).code).toBe("ZT_MFA_LOCKED");
      // alice herself is not locked: from another address she gets in
      expect((await login({ secret: totpSecret, sourceIp: "203.0.113.7" })).name).toBe("alice");
    });

    it("a valid login from the spraying address does not wash away its failures", async () => {
      const { totpSecret } = await addAlice();
      await refusal(login({ username: "bob", password: "guess-123" }));
      await refusal(login({ username: "carol", password: "guess-123" }));
      clock.advance(1000);
      await login({ secret: totpSecret });
      await refusal(login({ username: "dave", password: "guess-123" }));
      expect((await refusal(login({ username: "erin", password: "guess-123" }))).code).toBe(
        "ZT_MFA_LOCKED",
      );
    });

    it("IPv6 sources are throttled per /64", async () => {
      await addAlice();
      for (const host of ["1", "2", "3"]) {
        await refusal(
          login({
            username: `user${host}`,
            password: "guess-123",
            sourceIp: `2001:db8:1:2::${host}`,
          }),
        );
      }
      expect((await refusal(login({ username: "x", sourceIp: "2001:db8:1:2:ffff::9" }))).code).toBe(
        "ZT_MFA_LOCKED",
      );
      expect((await refusal(login({ username: "x", sourceIp: "2001:db8:1:3::1" }))).code).toBe(
        "ZT_AUTH_FAILED",
      );
    });

    it("wrong and replayed TOTP codes count towards the lockout", async () => {
      const { totpSecret } = await addAlice();
      const code = totpCodeAt(totpSecret, clock.now());
      await login({ totp: code });
      await refusal(login({ totp: code })); // replay
      await refusal(login({ totp: totpCodeAt(totpSecret, clock.now() + 300_000) })); // wrong
      await refusal(login()); // missing
      expect((await refusal(login({ secret: totpSecret }))).code).toBe("ZT_MFA_LOCKED");
    });

    it("a disabled user is refused (after the password check) and publishes events", async () => {
      const { totpSecret, user } = await addAlice();
      await idp.setDisabled("alice", true);
      expect((await idp.getUser("alice"))!.disabled).toBe(true);
      expect((await refusal(login({ secret: totpSecret }))).code).toBe("ZT_USER_DISABLED");
      // a wrong password still says only "failed"
      expect((await refusal(login({ password: "wrong-password" }))).code).toBe("ZT_AUTH_FAILED");
      await idp.setDisabled("alice", false);
      clock.advance(30_000);
      expect((await login({ secret: totpSecret })).disabled).toBe(false);
      const mine = events.filter((e) => e.kind.startsWith("user."));
      expect(mine.map((e) => [e.kind, e.data])).toEqual([
        ["user.added", { userId: user.id, name: "alice", groups: ["eng", "ops"] }],
        // revoke_id: the user.disable audit record, which cuts made on hearing it name.
        [
          "user.disabled",
          { userId: user.id, name: "alice", revoke_id: expect.stringMatching(/^evt_/) },
        ],
        ["user.enabled", { userId: user.id, name: "alice" }],
      ]);
    });

    it("group changes publish user.groups-changed with the new groups", async () => {
      const { user } = await addAlice();
      expect((await idp.addToGroup("alice", "admins")).groups).toEqual(["admins", "eng", "ops"]);
      expect((await idp.removeFromGroup("alice", "ops")).groups).toEqual(["admins", "eng"]);
      expect((await idp.setGroups("alice", ["sre"])).groups).toEqual(["sre"]);
      expect((await idp.changeGroups("alice", { add: ["eng"], remove: ["sre"] })).groups).toEqual([
        "eng",
      ]);
      await idp.addToGroup("alice", "eng"); // no change, no event
      const changes = events.filter((e) => e.kind === "user.groups-changed").map((e) => e.data);
      expect(changes).toEqual([
        { userId: user.id, name: "alice", groups: ["admins", "eng", "ops"] },
        { userId: user.id, name: "alice", groups: ["admins", "eng"] },
        { userId: user.id, name: "alice", groups: ["sre"] },
        { userId: user.id, name: "alice", groups: ["eng"] },
      ]);
      expect((await idp.getUser("alice"))!.groups).toEqual(["eng"]);
      expect((await refusal(idp.addToGroup("alice", "Bad Group"))).code).toBe("ZT_BAD_REQUEST");
    });

    it("a backup code works once, in any case or spacing", async () => {
      const { backupCodes } = await addAlice();
      expect(await idp.backupCodesLeft("alice")).toBe(10);
      const u = await login({ backupCode: backupCodes[4]!.toUpperCase() });
      expect(u.name).toBe("alice");
      expect(await idp.backupCodesLeft("alice")).toBe(9);
      const again = await refusal(login({ backupCode: backupCodes[4]! }));
      expect(again.code).toBe("ZT_MFA_REPLAYED");
      expect((await refusal(login({ backupCode: "aaaaa-aaaaa" }))).code).toBe("ZT_MFA_INVALID");
      clock.advance(60_000);
      expect((await login({ backupCode: backupCodes[5]!.replace("-", " ") })).name).toBe("alice");
    });

    it("concurrent use of one backup code: exactly one login wins", async () => {
      const { backupCodes } = await addAlice();
      const results = await Promise.allSettled([
        login({ backupCode: backupCodes[0]! }),
        login({ backupCode: backupCodes[0]! }),
      ]);
      expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    });

    it("MFA reset: new secret and codes work, old ones do not, mfa.reset is published", async () => {
      const old = await addAlice();
      const fresh = await idp.resetMfa("alice");
      secrets.push(fresh.totpSecret, ...fresh.backupCodes);
      expect(fresh.totpSecret).not.toBe(old.totpSecret);
      expect(fresh.backupCodes).toHaveLength(10);
      expect((await refusal(login({ secret: old.totpSecret }))).code).toBe("ZT_MFA_INVALID");
      expect((await refusal(login({ backupCode: old.backupCodes[0]! }))).code).toBe(
        "ZT_MFA_INVALID",
      );
      clock.advance(60_000);
      expect((await login({ secret: fresh.totpSecret })).name).toBe("alice");
      expect((await login({ backupCode: fresh.backupCodes[0]! })).name).toBe("alice");
      expect(events.filter((e) => e.kind === "mfa.reset").map((e) => e.data)).toEqual([
        { userId: old.user.id, name: "alice" },
      ]);
    });

    it("a TOTP secret sealed for one user does not open as another's (swapped rows fail closed)", async () => {
      const a = await addAlice();
      const b = await idp.addUser({ name: "bob", password: "bob-password-1" });
      const rowA = await ctx.store.db
        .selectFrom("users")
        .select("totp_secret_sealed")
        .where("name", "=", "alice")
        .executeTakeFirstOrThrow();
      await ctx.store.db
        .updateTable("users")
        .set({ totp_secret_sealed: rowA.totp_secret_sealed })
        .where("name", "=", "bob")
        .execute();
      const e = await refusal(
        idp.authenticate({
          username: "bob",
          password: "bob-password-1",
          totp: totpCodeAt(a.totpSecret, clock.now()),
          sourceIp: IP,
        }),
      );
      expect(e.code).toBe("ZT_KEY_DECRYPT_FAILED");
      void b;
      await ctx.audit.flush();
      const last = await ctx.store.db
        .selectFrom("audit_events")
        .selectAll()
        .where("kind", "=", "login")
        .orderBy("seq", "desc")
        .executeTakeFirstOrThrow();
      expect(last).toMatchObject({ outcome: "failure", subject: "bob", reason: "internal-error" });
    });

    it("setPassword: the old password stops working, the new one works; generated when omitted", async () => {
      const { totpSecret } = await addAlice();
      expect(await idp.setPassword("alice", "a-brand-new-password")).toEqual({});
      expect((await refusal(login({ secret: totpSecret }))).code).toBe("ZT_AUTH_FAILED");
      expect((await login({ secret: totpSecret, password: "a-brand-new-password" })).name).toBe(
        "alice",
      );
      const g = await idp.setPassword("alice");
      expect(g.password).toMatch(/^[A-Za-z0-9_-]{20}$/);
      clock.advance(30_000);
      expect((await login({ secret: totpSecret, password: g.password! })).name).toBe("alice");
      expect((await refusal(idp.setPassword("alice", "short"))).code).toBe("ZT_BAD_REQUEST");
    });

    it("a hash made with older scrypt parameters is upgraded at the next successful login", async () => {
      const { totpSecret } = await addAlice();
      const old = await hashSecret("alice-password-1", { N: 2 ** 12, r: 8, p: 1 });
      await ctx.store.db
        .updateTable("users")
        .set({ password_hash: old })
        .where("name", "=", "alice")
        .execute();
      await login({ secret: totpSecret });
      const row = await ctx.store.db
        .selectFrom("users")
        .select("password_hash")
        .where("name", "=", "alice")
        .executeTakeFirstOrThrow();
      expect(row.password_hash).toMatch(/^scrypt\$32768\$8\$3\$/);
      clock.advance(30_000);
      expect((await login({ secret: totpSecret })).name).toBe("alice");
    });

    it("deleteUser removes the user and their rows, publishes user.deleted, and frees the name", async () => {
      const { user } = await addAlice();
      await idp.deleteUser("alice");
      expect(await idp.getUser("alice")).toBeUndefined();
      expect(await ctx.store.db.selectFrom("backup_codes").selectAll().execute()).toEqual([]);
      expect(await ctx.store.db.selectFrom("user_groups").selectAll().execute()).toEqual([]);
      expect(events.filter((e) => e.kind === "user.deleted").map((e) => e.data)).toEqual([
        { userId: user.id, name: "alice", revoke_id: expect.stringMatching(/^evt_/) },
      ]);
      expect((await refusal(login())).code).toBe("ZT_AUTH_FAILED");
      expect((await addAlice()).user.id).not.toBe(user.id);
      expect((await refusal(idp.deleteUser("nobody"))).code).toBe("ZT_USER_NOT_FOUND");
    });

    it("oathtool interop: a code from the real `oathtool --totp -b` is accepted", async () => {
      const { totpSecret } = await addAlice();
      const code = execFileSync(
        "oathtool",
        ["--totp", "-b", "--now", "2026-01-01 12:00:00 UTC", totpSecret],
        {
          encoding: "utf8",
        },
      ).trim();
      expect(code).toMatch(/^\d{6}$/);
      expect((await login({ totp: code })).name).toBe("alice");
      // and a code oathtool gives for 90 s later is outside the window
      const late = execFileSync(
        "oathtool",
        ["--totp", "-b", "--now", "2026-01-01 12:01:30 UTC", totpSecret],
        {
          encoding: "utf8",
        },
      ).trim();
      clock.advance(30_000);
      expect((await refusal(login({ totp: late }))).code).toBe("ZT_MFA_INVALID");
    });

    it("audit records never contain a password, code or secret", async () => {
      const { totpSecret, backupCodes } = await addAlice();
      const code = totpCodeAt(totpSecret, clock.now());
      await login({ totp: code });
      await refusal(login({ totp: code }));
      await refusal(login({ password: "hunter2-secret-typo" }));
      await refusal(login({ username: "hunter2 password in user field" }));
      clock.advance(3_600_000);
      await login({ backupCode: backupCodes[1]! });
      await idp.resetMfa("alice");
      await ctx.audit.flush();
      const rows = await ctx.store.db.selectFrom("audit_events").selectAll().execute();
      expect(rows.length).toBeGreaterThanOrEqual(6);
      const dump = JSON.stringify(rows);
      for (const s of [
        totpSecret,
        code,
        "alice-password-1",
        "hunter2",
        backupCodes[1]!,
        backupCodes[1]!.replace("-", ""),
      ]) {
        expect(dump).not.toContain(s);
      }
    });
  },
);

describe("IdentityService config", () => {
  let target: EngineTarget;
  beforeAll(async () => {
    target = await allEngines[0]!.fresh();
  });
  afterAll(async () => target.cleanup());

  it("refuses an mfa.issuer with a colon, naming the key", async () => {
    const dataDir = target.storeOptions.dataDir;
    const config = validateConfig(
      { data_dir: dataDir, mfa: { issuer: "a:b" } },
      join(dataDir, "zt.yaml"),
    );
    const ctx = await openAppContext(config, {
      env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
    });
    try {
      expect(() => new IdentityService(ctx)).toThrow(/^mfa\.issuer: /);
    } finally {
      await ctx.close();
    }
  });
});
