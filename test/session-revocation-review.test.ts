/**
 * Regression tests for the storage / event bus / session review, each named after what it
 * stops. Every case runs on SQLite and on a real PostgreSQL (a fresh database per test).
 * Several zt processes are several AppContexts on one store (each with its own event bus
 * and memory); requests go to a real PEP over a real socket; an injected clock.
 */
import { describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { createServices, type Services } from "../src/app/services.js";
import { validateConfig, type ZtConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import { IdentityService, identityService, totpCodeAt } from "../src/identity/index.js";
import { ZtError } from "../src/core/errors.js";
import { SessionService } from "../src/session/index.js";
import { startContinuousVerification } from "../src/session/reevaluator.js";
import { EntitySnapshot } from "../src/session/entity-snapshot.js";
import { StoreEventBus } from "../src/events/index.js";
import { createPep, type Pep } from "../src/proxy/index.js";
import { request } from "./helpers/http-client.js";
import { auditRecords, auditRows } from "./helpers/audit-rows.js";
import { bounded } from "./helpers/bounded.js";
import { openWebSocket } from "./helpers/websocket-client.js";
import { startUpstream, tempDir } from "./pep-fixture.js";
import { engines, perTestTargets, type Engine, type EngineTarget } from "./store-fixture.js";
import { ReadGate } from "./helpers/read-gate.js";

const PASSWORD = "pw-correct-horse-battery";
const T0 = Date.UTC(2026, 2, 2, 9, 0, 0);
const ENGINES = await engines();

describe.each(ENGINES)("sessions and revocation: $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);

  function config(t: EngineTarget, upstreamPort = 9): ZtConfig {
    const dir = tempDir("zt-sess-review-");
    mkdirSync(join(dir, "policies"));
    writeFileSync(
      join(dir, "policies", "main.cedar"),
      `permit (principal, action, resource == App::"a");`,
    );
    return validateConfig(
      {
        data_dir: t.storeOptions.dataDir,
        ...(t.storeOptions.databaseUrl ? { database_url: t.storeOptions.databaseUrl } : {}),
        trust_domain: "review.test",
        policies: join(dir, "policies"),
        routes: [{ name: "a", from: "http://a.localhost", to: `http://127.0.0.1:${upstreamPort}` }],
        mfa: { max_failures: 50 },
      },
      join(dir, "zt.yaml"),
    );
  }

  /** A context with nothing running on it: what a `zt user …` CLI command opens. */
  async function cliContext(cfg: ZtConfig, clock: ManualClock): Promise<AppContext> {
    const ctx = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => ctx.close());
    return ctx;
  }

  /** A PEP process: services, the PEP on a real socket, its event bus reading the store. */
  async function pepNode(
    cfg: ZtConfig,
    clock: ManualClock,
  ): Promise<{ ctx: AppContext; services: Services; pep: Pep; port: number }> {
    const ctx = await openAppContext(cfg, { create: true, clock });
    await ctx.events.mark();
    const services = await createServices(ctx);
    const pep = createPep(services);
    const port = (await pep.listen("127.0.0.1", 0)).port;
    await ctx.events.start();
    cleanups.push(async () => {
      await pep.close();
      services.close();
      await ctx.close();
    });
    return { ctx, services, pep, port };
  }

  async function upstream(): Promise<number> {
    const up = await startUpstream();
    cleanups.push(() => up.close());
    return up.port;
  }

  const get = (port: number, token: string) =>
    request(port, {
      host: "a.localhost",
      path: "/x",
      headers: { cookie: `zt_session=${token}`, accept: "application/json" },
    });

  it("stops a session from coming back when its user is re-enabled: disabling revokes the user's sessions in the store", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t, await upstream());
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({ name: "bob", password: PASSWORD });
    // bob signs in through a PEP, which then goes away (a restart, an outage).
    const signIn = new SessionService(cli);
    const { token, session } = await signIn.create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    signIn.close();

    // The account is found compromised: `zt user disable bob` while no zt process runs.
    await identityService(cli).setDisabled("bob", true);

    // Investigated and re-enabled: bob signs in afresh; the old token stays dead.
    await identityService(cli).setDisabled("bob", false);
    const pep = await pepNode(cfg, clock);
    const r = await get(pep.port, token);
    expect(r.status).toBe(401);
    expect(await pep.services.sessions.check(token)).toMatchObject({
      ok: false,
      code: "ZT_SESSION_REVOKED",
    });
    const row = await cli.store.db
      .selectFrom("sessions")
      .select(["revoked_at", "revoke_reason"])
      .where("id", "=", session.id)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ revoked_at: T0, revoke_reason: "user-disabled" });
  });

  it("stops a session read from the store while its revocation is delivered from staying usable in that PEP", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t);
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({ name: "carol", password: PASSWORD });
    const { token, session } = await new SessionService(cli).create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });

    const pepCtx = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => pepCtx.close());
    await pepCtx.events.start();
    // The PEP's reads of `sessions` are held after they ran (the row is read), until
    // released: the revocation commits and is heard in between.
    const gate = new ReadGate("sessions");
    const sessions = new SessionService({
      ...pepCtx,
      store: { ...pepCtx.store, db: gate.wrap(pepCtx.store.db) },
    } as AppContext);
    cleanups.push(async () => sessions.close());

    gate.hold();
    const first = sessions.check(token);
    await gate.held();
    const admin = new SessionService(cli);
    expect(await admin.revoke([session.id], "admin")).toBe(1);
    admin.close();
    await (pepCtx.events as StoreEventBus).catchUp();
    gate.release();
    await first;

    // From now on the PEP must refuse it, however it remembers it.
    expect(sessions.checkInMemory(token) ?? (await sessions.check(token))).toMatchObject({
      ok: false,
      code: "ZT_SESSION_REVOKED",
    });
  });

  it("stops a session revoked in the store whose event was never heard from staying usable: the periodic pass re-reads remembered sessions", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t, await upstream());
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({ name: "dave", password: PASSWORD });
    const pep = await pepNode(cfg, clock);
    const continuous = await startContinuousVerification(pep.services, pep.pep.live);
    cleanups.push(async () => continuous.close());
    const { token, session } = await new SessionService(cli).create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    expect((await get(pep.port, token)).status).toBe(200);

    // The revocation committed, but its `session.revoked` was never appended (the
    // publish failed after the UPDATE; a retry finds nothing left to revoke).
    await cli.store.db
      .updateTable("sessions")
      .set({ revoked_at: clock.now(), revoke_reason: "admin" })
      .where("id", "=", session.id)
      .execute();
    const cut: string[] = [];
    pep.services.sessions.onRevoked((id) => cut.push(id));

    await continuous.tick();
    expect(cut).toEqual([session.id]);
    const r = await get(pep.port, token);
    expect(r.status).toBe(401);
  });

  it("stops a revocation's cut from going unaudited or being audited twice across replicas: each live connection's cut is one session.cut, written by the replica that held it, linked to the session.revoke record", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t, await upstream());
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({ name: "erin", password: PASSWORD });
    const a = await pepNode(cfg, clock);
    const b = await pepNode(cfg, clock);
    const cvA = await startContinuousVerification(a.services, a.pep.live);
    const cvB = await startContinuousVerification(b.services, b.pep.live);
    cleanups.push(async () => {
      cvA.close();
      cvB.close();
    });
    const { token, session } = await new SessionService(cli).create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    const cookie = `zt_session=${token}`;
    // One WebSocket through each replica.
    const onA = await openWebSocket(a.port, "a.localhost", cookie);
    const onB = await openWebSocket(b.port, "a.localhost", cookie);

    // Replica A revokes the session (its own memory first); B hears it from the store.
    expect(await a.services.sessions.revoke([session.id], "admin")).toBe(1);
    await bounded(onA.closed, "the revoking replica's WebSocket is still open");
    await bounded(onB.closed, "the other replica's WebSocket is still open");
    // Then everything else that could see the revocation: each replica's periodic pass
    // (its re-check of live connections and its reconcile with the store), and the event
    // heard again by catching up.
    await (a.ctx.events as StoreEventBus).catchUp();
    await (b.ctx.events as StoreEventBus).catchUp();
    await cvA.tick();
    await cvB.tick();

    await a.ctx.audit.flush();
    const revoke = (await auditRows(b.ctx, "session.revoke", ["id", "data"])).filter((r) =>
      String(r.data).includes(session.id),
    );
    expect(revoke).toHaveLength(1);
    const cuts = await auditRecords(b.ctx, "session.cut", ["route", "reason"]);
    const each = {
      route: "a",
      reason: "session-revoked",
      data: expect.objectContaining({
        session_id: session.id,
        cause: "session-revoked",
        revoke_reason: "admin",
        revoke_id: revoke[0]!.id,
        connection_id: expect.stringMatching(/^dec_/),
      }),
    };
    expect(cuts).toEqual([each, each]);
    expect(cuts[0]!.data["connection_id"]).not.toBe(cuts[1]!.data["connection_id"]);
  });

  it("stops a user deletion's cuts from linking only to an event sequence number: each session.cut names the user.delete record (revoke_id)", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t, await upstream());
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({ name: "fred", password: PASSWORD });
    const a = await pepNode(cfg, clock);
    const { token } = await new SessionService(cli).create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    const ws = await openWebSocket(a.port, "a.localhost", `zt_session=${token}`);

    // The CLI deletes the user; the PEP hears it from the store.
    await identityService(cli).deleteUser("fred");
    await (a.ctx.events as StoreEventBus).catchUp();
    await bounded(ws.closed, "the deleted user's WebSocket is still open");

    await cli.audit.flush();
    await a.ctx.audit.flush();
    const deleted = await auditRows(a.ctx, "user.delete", ["id", "subject"]);
    expect(deleted).toEqual([expect.objectContaining({ subject: "fred" })]);
    const cuts = await auditRecords(a.ctx, "session.cut", ["reason"]);
    expect(cuts).toEqual([
      {
        reason: "session-revoked",
        data: expect.objectContaining({
          cause: "session-revoked",
          revoke_reason: "user-deleted",
          revoke_id: deleted[0]!.id,
          event_seq: expect.any(Number),
        }),
      },
    ]);
  });

  it("stops an older read of a user from overwriting a newer one in a PEP's entity snapshot (a removed group stays removed)", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t);
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({
      name: "frank",
      groups: ["admins", "eng"],
      password: PASSWORD,
    });
    const pepCtx = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => pepCtx.close());
    const gate = new ReadGate("user_groups");
    const snapshot = new EntitySnapshot({
      ...pepCtx,
      store: { ...pepCtx.store, db: gate.wrap(pepCtx.store.db) },
    } as AppContext);
    cleanups.push(async () => snapshot.close());
    await snapshot.load();

    // An event about frank: the refresh reads his groups (still admins) and is slow to
    // return; meanwhile admins is taken away and the refresh for that event completes.
    gate.hold();
    const older = snapshot.refreshUser(user.id);
    await gate.held();
    await identityService(cli).removeFromGroup("frank", "admins");
    await snapshot.refreshUser(user.id);
    expect(snapshot.user(user.id)?.groups).toEqual(["eng"]);
    gate.release();
    await older;
    expect(snapshot.user(user.id)?.groups).toEqual(["eng"]);
  });

  /**
   * The user erin, an admin's context (`cli`) and a sign-in process (`login`) whose
   * identity service reads the users table through `gate`.
   */
  async function signInRig() {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t);
    const cli = await cliContext(cfg, clock);
    const added = await identityService(cli).addUser({ name: "erin", password: PASSWORD });
    const login = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => login.close());
    const gate = new ReadGate("users");
    const ids = new IdentityService({
      ...login,
      store: { ...login.store, db: gate.wrap(login.store.db) },
    } as AppContext);
    return { cli, added, login, gate, ids };
  }

  /**
   * A sign-in whose user row was read before an admin change committed: the row read is
   * held (scrypt runs meanwhile in real life), the change lands, then the sign-in goes on.
   */
  async function signInAcross(change: (cli: AppContext) => Promise<unknown>, code?: string) {
    const { cli, added, gate, ids } = await signInRig();
    gate.hold();
    const attempt = ids
      .authenticate({
        username: "erin",
        password: PASSWORD,
        totp: code ?? totpCodeAt(added.totpSecret, T0),
        sourceIp: "192.0.2.7",
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await gate.held();
    await change(cli);
    gate.release();
    return attempt;
  }

  it("stops a sign-in that checked the old TOTP secret from passing after an MFA reset committed meanwhile", async () => {
    const e = await signInAcross((cli) => identityService(cli).resetMfa("erin"));
    expect(e).toBeInstanceOf(ZtError);
    expect((e as ZtError).code).toBe("ZT_AUTH_FAILED");
  });

  it("stops a sign-in with the old password from passing after the password changed meanwhile", async () => {
    const e = await signInAcross((cli) =>
      identityService(cli).setPassword("erin", "pw-a-brand-new-one-99"),
    );
    expect(e).toBeInstanceOf(ZtError);
    expect((e as ZtError).code).toBe("ZT_AUTH_FAILED");
  });

  it("stops a sign-in from passing for a user disabled meanwhile", async () => {
    const e = await signInAcross((cli) => identityService(cli).setDisabled("erin", true));
    expect(e).toBeInstanceOf(ZtError);
    expect((e as ZtError).code).toBe("ZT_USER_DISABLED");
  });

  /**
   * The window after `authenticate`'s own re-read: the re-read of the user row is held
   * (it has run, and seen the user as it was), the admin change commits and revokes the
   * sessions it finds (none yet), then the sign-in goes on to make its session.
   */
  async function sessionAcross(change: (cli: AppContext) => Promise<unknown>) {
    const { cli, added, login, gate, ids } = await signInRig();
    const sessions = new SessionService(login);
    cleanups.push(async () => sessions.close());
    gate.hold(); // the first read of the user (before the password check)
    const attempt = ids
      .signIn(
        {
          username: "erin",
          password: PASSWORD,
          totp: totpCodeAt(added.totpSecret, T0),
          sourceIp: "192.0.2.7",
        },
        sessions,
        { userAgent: "test" },
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await gate.held();
    gate.release();
    gate.hold(); // the next: authenticate's re-read after the scrypt
    await gate.held();
    await change(cli);
    gate.release();
    const e = await attempt;
    const live = await cli.store.db
      .selectFrom("sessions")
      .select("id")
      .where("user_id", "=", added.user.id)
      .where("revoked_at", "is", null)
      .execute();
    return { e, live };
  }

  it("stops a session made after a password change that committed past the sign-in's last check from staying live", async () => {
    const { e, live } = await sessionAcross((cli) =>
      identityService(cli).setPassword("erin", "pw-a-brand-new-one-99"),
    );
    expect(e).toBeInstanceOf(ZtError);
    expect((e as ZtError).code).toBe("ZT_AUTH_FAILED");
    expect(live).toEqual([]);
  });

  it("stops a session made after an MFA reset that committed past the sign-in's last check from staying live", async () => {
    const reset = await sessionAcross((cli) => identityService(cli).resetMfa("erin"));
    expect((reset.e as ZtError).code).toBe("ZT_AUTH_FAILED");
    expect(reset.live).toEqual([]);
  });

  it("stops a session made for a user disabled past the sign-in's last check from staying live", async () => {
    const off = await sessionAcross((cli) => identityService(cli).setDisabled("erin", true));
    expect((off.e as ZtError).code).toBe("ZT_USER_DISABLED");
    expect(off.live).toEqual([]);
  });

  it("stops a PEP that hears a user's disable late from ending the sessions the user made after being enabled again", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t, await upstream());
    const cli = await cliContext(cfg, clock);
    const { user } = await identityService(cli).addUser({ name: "dan", password: PASSWORD });
    // A PEP whose event position is from before the disable, hearing nothing until later
    // (a partition, a slow start): it catches up on `user.disabled` afterwards.
    const late = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => late.close());
    await late.events.mark();
    await identityService(cli).setDisabled("dan", true);
    clock.advance(10 * 60_000);
    await identityService(cli).setDisabled("dan", false);
    const signIn = new SessionService(cli);
    const { token, session } = await signIn.create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    signIn.close();

    const sessions = new SessionService(late);
    cleanups.push(async () => sessions.close());
    expect(await sessions.check(token)).toMatchObject({ ok: true });
    await late.events.start();
    // The catch-up delivered user.disabled (start() returns once it has): this PEP's
    // memory keeps the session live, and so does the store.
    expect(await sessions.check(token)).toMatchObject({ ok: true });
    const row = await late.store.db
      .selectFrom("sessions")
      .select(["revoked_at"])
      .where("id", "=", session.id)
      .executeTakeFirstOrThrow();
    expect(row.revoked_at).toBeNull();
    expect(await sessions.check(token)).toMatchObject({ ok: true });
  });
});
