/**
 * Regression tests for the JIT access / break-glass review, each named after what it
 * stops. Where a defect was about several zt processes, two AppContexts (each with its
 * own store connections, event bus and memory) share one store — a PEP worker and the
 * CLI; on SQLite and, when reachable, PostgreSQL. An injected clock wherever time matters.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { createServices } from "../src/app/services.js";
import { startProcessVerification } from "../src/app/pep-node.js";
import { validateConfig, type ZtConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import { identityService } from "../src/identity/index.js";
import { AccessService, parseAccessConfig } from "../src/access/index.js";
import { auditCut, LiveConnections } from "../src/proxy/index.js";
import type { ContinuousVerification } from "../src/session/reevaluator.js";
import { engines, sqliteEngine, type Engine } from "./store-fixture.js";
import { auditRows } from "./helpers/audit-rows.js";

const PASSWORD = "pw-correct-horse-battery";
const T0 = Date.UTC(2026, 2, 2, 9, 0, 0);
const HOUR = 3_600_000;
const ENGINES = await engines();

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const ACCESS = {
  admins: ["secops"],
  resources: { a: { approvers: "leads", max_ttl: "8h" } },
  breakglass: { accounts: ["oncall", "oncall2"], resources: ["a", "b"], ttl: "1h" },
};

async function config(engine: Engine, access: unknown = ACCESS): Promise<ZtConfig> {
  const target = await engine.fresh();
  cleanups.push(() => target.cleanup());
  const dir = target.storeOptions.dataDir;
  mkdirSync(join(dir, "policies"));
  writeFileSync(join(dir, "policies", "main.cedar"), `permit (principal, action, resource);`);
  return validateConfig(
    {
      data_dir: join(dir, "data"),
      ...(target.storeOptions.databaseUrl ? { database_url: target.storeOptions.databaseUrl } : {}),
      trust_domain: "review.test",
      policies: join(dir, "policies"),
      routes: [
        { name: "a", from: "http://a.localhost", to: "http://127.0.0.1:9" },
        { name: "b", from: "http://b.localhost", to: "http://127.0.0.1:9" },
      ],
      access,
    },
    join(dir, "zt.yaml"),
  );
}

/** A context with nothing running on it: what a `zt access …` CLI command opens. */
async function context(cfg: ZtConfig, clock: ManualClock): Promise<AppContext> {
  const ctx = await openAppContext(cfg, { create: true, clock });
  cleanups.push(() => ctx.close());
  return ctx;
}

async function users(ctx: AppContext): Promise<void> {
  const ids = identityService(ctx);
  for (const [name, groups] of [
    ["alice", ["eng"]],
    ["lead", ["leads"]],
    ["sec", ["secops"]],
    ["mallory", ["eng"]],
    ["oncall", ["sre"]],
    ["oncall2", ["sre"]],
  ] as const)
    await ids.addUser({ name, groups: [...groups], password: PASSWORD });
}

/**
 * A PEP worker's start-up as `pep-worker.ts` does it, stopped just before
 * `events.start()`: services, then continuous verification (which loads the grants).
 */
async function pepBeforeStart(
  cfg: ZtConfig,
  clock: ManualClock,
): Promise<{ ctx: AppContext; continuous: ContinuousVerification }> {
  const ctx = await context(cfg, clock);
  const services = await createServices(ctx);
  const continuous = await startProcessVerification(
    services,
    new LiveConnections(auditCut(ctx.audit)),
  );
  cleanups.push(async () => {
    continuous.close();
    services.close();
  });
  return { ctx, continuous };
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

const aliceOnA = { principal: { type: "User", id: "alice" }, route: "a" };
const grantsOf = (c: ContinuousVerification) =>
  (c.grants.contribute(aliceOnA)?.["grants"] as string[] | undefined) ?? [];

describe.each(ENGINES)("a revoked grant never stays live in a PEP ($name)", (engine) => {
  it("drops a grant revoked between the PEP's grant load and events.start()", async () => {
    const clock = new ManualClock(T0);
    const cfg = await config(engine);
    const cli = await context(cfg, clock);
    await users(cli);
    const access = new AccessService(cli);
    const r = await access.request({ user: "alice", resource: "a", reason: "INC-1", ttlMs: HOUR });
    await access.approve(r.id, "lead");

    const pep = await pepBeforeStart(cfg, clock);
    expect(grantsOf(pep.continuous)).toEqual(["a"]);
    // `zt access revoke` while the worker is between its load and events.start().
    await access.revoke(r.id, "lead");
    await pep.ctx.events.start();
    await pep.continuous.reevaluator.idle();
    expect(grantsOf(pep.continuous)).toEqual([]);
  }, 60_000);

  it("drops, at the next tick, a grant whose revocation committed but was never published", async () => {
    const clock = new ManualClock(T0);
    const cfg = await config(engine);
    const cli = await context(cfg, clock);
    await users(cli);
    const access = new AccessService(cli);
    const r = await access.request({ user: "alice", resource: "a", reason: "INC-2", ttlMs: HOUR });
    await access.approve(r.id, "lead");
    const pep = await pepBeforeStart(cfg, clock);
    await pep.ctx.events.start();
    expect(grantsOf(pep.continuous)).toEqual(["a"]);

    // The state transition commits, then publishing the event fails.
    cli.events.publish = () => Promise.reject(new Error("store connection lost"));
    await expect(access.revoke(r.id, "lead")).rejects.toThrow(/connection lost/);
    expect((await access.get(r.id)).status).toBe("revoked");
    await pep.continuous.reevaluator.idle();

    await pep.continuous.tick();
    expect(grantsOf(pep.continuous)).toEqual([]);
    const drift = await auditRows(pep.ctx, "grant.reconciled", ["reason", "data"]);
    expect(drift).toHaveLength(1);
    expect(JSON.parse(drift[0]!.data)).toMatchObject({ dropped: [r.id] });
  }, 60_000);
});

describe.each(ENGINES)("break-glass is issued once at a time ($name)", (engine) => {
  it("lets only one of two concurrent break-glass calls through, in one process and across two", async () => {
    const clock = new ManualClock(T0);
    const cfg = await config(engine);
    const one = await context(cfg, clock);
    await users(one);
    const two = await context(cfg, clock);
    const a1 = new AccessService(one);
    const a2 = new AccessService(two);
    const open = (svc: AccessService, user: string, resource: string) =>
      svc.breakglass({ user, resource, reason: "primary down, INC-7" });

    for (const [x, y, user, resource] of [
      [a1, a1, "oncall", "a"],
      [a1, a2, "oncall2", "a"],
      [a1, a2, "oncall", "b"],
    ] as const) {
      const results = await Promise.allSettled([
        open(x, user, resource),
        open(y, user, resource),
        open(x, user, resource),
        open(y, user, resource),
      ]);
      expect(results.filter((s) => s.status === "fulfilled")).toHaveLength(1);
      for (const s of results)
        if (s.status === "rejected") expect((s.reason as ZtError).code).toBe("ZT_ACCESS_STATE");
      const rows = await one.store.db
        .selectFrom("access_requests")
        .select("id")
        .where("kind", "=", "breakglass")
        .where("user_name", "=", user)
        .where("resource", "=", resource)
        .execute();
      expect(rows).toHaveLength(1);
    }
  }, 60_000);
});

describe("break-glass: who may end it, and no renewal by revoking", () => {
  it("refuses to let another user revoke someone's break-glass; the holder, an approver or an admin may", async () => {
    const clock = new ManualClock(T0);
    const ctx = await context(await config(sqliteEngine), clock);
    await users(ctx);
    const access = new AccessService(ctx);
    const first = await access.breakglass({ user: "oncall", resource: "a", reason: "INC-7" });
    for (const by of ["mallory", "alice", "oncall2"])
      expect((await refusal(access.revoke(first.id, by))).code).toBe("ZT_ACCESS_NOT_APPROVER");
    expect((await access.get(first.id)).status).toBe("approved");
    // An approver for the resource.
    expect((await access.revoke(first.id, "lead")).status).toBe("revoked");
    // An admin (access.admins), also on a resource without an approver group.
    const onB = await access.breakglass({ user: "oncall", resource: "b", reason: "INC-8" });
    expect((await refusal(access.revoke(onB.id, "lead"))).code).toBe("ZT_ACCESS_NOT_APPROVER");
    expect((await access.revoke(onB.id, "sec")).status).toBe("revoked");
    // The holder.
    const own = await access.breakglass({ user: "oncall2", resource: "a", reason: "INC-9" });
    expect((await access.revoke(own.id, "oncall2")).status).toBe("revoked");

    const refused = await auditRows(ctx, "access.revoke", ["subject", "reason"], {
      outcome: "failure",
    });
    expect(refused.map((x) => x.subject).sort()).toEqual(["alice", "lead", "mallory", "oncall2"]);
  }, 60_000);

  it("refuses a new break-glass within the TTL of the last one, even one revoked early", async () => {
    const clock = new ManualClock(T0);
    const ctx = await context(await config(sqliteEngine), clock);
    await users(ctx);
    const access = new AccessService(ctx);
    const first = await access.breakglass({ user: "oncall", resource: "a", reason: "INC-7" });
    await access.revoke(first.id, "oncall");
    clock.advance(10 * 60_000);
    const renew = await refusal(
      access.breakglass({ user: "oncall", resource: "a", reason: "INC-7 again" }),
    );
    expect(renew.code).toBe("ZT_ACCESS_STATE");
    expect(renew.message).toContain(first.id);
    expect(renew.message).toContain(new Date(T0 + HOUR).toISOString());
    // Another resource, or another account, is not blocked by it.
    await access.breakglass({ user: "oncall", resource: "b", reason: "INC-7 db" });
    await access.breakglass({ user: "oncall2", resource: "a", reason: "INC-7 help" });
    // Once a TTL has passed since it started, a new one may be opened.
    clock.set(T0 + HOUR);
    const second = await access.breakglass({ user: "oncall", resource: "a", reason: "INC-10" });
    expect(second.expiresAt).toBe(T0 + 2 * HOUR);
    // Ended early by someone else, it blocks just the same until its TTL is over.
    await access.revoke(second.id, "sec");
    clock.advance(HOUR - 1);
    expect(
      (await refusal(access.breakglass({ user: "oncall", resource: "a", reason: "INC-11" }))).code,
    ).toBe("ZT_ACCESS_STATE");
    clock.advance(1);
    await access.breakglass({ user: "oncall", resource: "a", reason: "INC-12" });

    const audited = await auditRows(ctx, "breakglass", ["reason"], { outcome: "failure" });
    expect(audited.map((x) => x.reason)).toContain("breakglass-cooldown");
  }, 60_000);

  it("caps the break-glass reason at 500 characters, with a clear error", async () => {
    const clock = new ManualClock(T0);
    const ctx = await context(await config(sqliteEngine), clock);
    await users(ctx);
    const access = new AccessService(ctx);
    const long = await refusal(
      access.breakglass({ user: "oncall", resource: "a", reason: "x".repeat(501) }),
    );
    expect(long.code).toBe("ZT_BAD_REQUEST");
    expect(long.message).toMatch(/3–500 characters/);
    const ok = await access.breakglass({ user: "oncall", resource: "a", reason: "y".repeat(500) });
    expect(ok.reason).toHaveLength(500);
  }, 60_000);
});

describe("an approval is judged against the configuration of now", () => {
  /** The same store under a changed `access:` section (zt.yaml edited, processes restarted). */
  const withAccess = (ctx: AppContext, access: unknown): AccessService =>
    new AccessService({
      ...ctx,
      config: { ...ctx.config, access: access as Record<string, unknown> },
    });

  it("shortens the grant to the current max_ttl, needs the current number of approvals, and refuses a resource no longer configured", async () => {
    const clock = new ManualClock(T0);
    const ctx = await context(await config(sqliteEngine), clock);
    await users(ctx);
    await identityService(ctx).addUser({ name: "lead2", groups: ["leads"], password: PASSWORD });
    const before = new AccessService(ctx);
    const long = await before.request({
      user: "alice",
      resource: "a",
      reason: "INC-r1",
      ttlMs: 8 * HOUR,
    });
    const two = await withAccess(ctx, {
      ...ACCESS,
      resources: { a: { approvers: "leads", approvals: 2 } },
    }).request({ user: "alice", resource: "a", reason: "INC-r2", ttlMs: HOUR });
    expect(two.requiredApprovals).toBe(2);
    const gone = await before.request({
      user: "alice",
      resource: "a",
      reason: "INC-r3",
      ttlMs: HOUR,
    });

    const now = withAccess(ctx, {
      ...ACCESS,
      resources: { a: { approvers: "leads", max_ttl: "30m", approvals: 2 } },
    });
    const one = await now.approve(long.id, "lead");
    expect(one.status).toBe("pending");
    expect(one.requiredApprovals).toBe(2);
    const granted = await now.approve(long.id, "lead2");
    expect(granted.status).toBe("approved");
    expect(granted.expiresAt).toBe(T0 + 30 * 60_000);
    expect(granted.ttlMs).toBe(30 * 60_000);
    const approved = await auditRows(ctx, "access.approved", ["data"]);
    expect(approved.map((x) => JSON.parse(x.data) as Record<string, unknown>)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ request_id: long.id, ttl_requested_ms: 8 * HOUR }),
      ]),
    );

    // Asked when two approvals were needed; one is enough now.
    const fewer = withAccess(ctx, { ...ACCESS, resources: { a: { approvers: "leads" } } });
    expect((await fewer.approve(two.id, "lead")).status).toBe("approved");

    const removed = withAccess(ctx, { ...ACCESS, resources: {} });
    const e = await refusal(removed.approve(gone.id, "lead"));
    expect(e.code).toBe("ZT_ACCESS_STATE");
    expect(e.message).toMatch(/access\.resources no longer has an entry for a/);
    expect((await before.get(gone.id)).status).toBe("pending");
  }, 60_000);

  it("expires a request left pending longer than access.pending_ttl (default 24h)", async () => {
    expect(parseAccessConfig({}).pendingTtlMs).toBe(24 * HOUR);
    expect(parseAccessConfig({ pending_ttl: "2h" }).pendingTtlMs).toBe(2 * HOUR);
    expect(() => parseAccessConfig({ pending_ttl: 0 })).toThrow(/access\.pending_ttl/);

    const clock = new ManualClock(T0);
    const ctx = await context(await config(sqliteEngine), clock);
    await users(ctx);
    const access = new AccessService(ctx);
    const old = await access.request({ user: "alice", resource: "a", reason: "old", ttlMs: HOUR });
    clock.advance(24 * HOUR - 1);
    const fresh = await access.request({
      user: "alice",
      resource: "a",
      reason: "new",
      ttlMs: HOUR,
    });
    clock.advance(1);
    const e = await refusal(access.approve(old.id, "lead"));
    expect(e.code).toBe("ZT_ACCESS_STATE");
    expect(e.message).toMatch(/access\.pending_ttl \(1d\)/);
    const expired = await access.expireDue();
    expect(expired.map((x) => x.id)).toEqual([old.id]);
    expect((await access.get(old.id)).status).toBe("expired");
    expect((await access.approve(fresh.id, "lead")).status).toBe("approved");
  }, 60_000);

  it("audits every refused approval with the request's resource and requester (self-approval and not-an-approver were recorded without them)", async () => {
    const clock = new ManualClock(T0);
    const ctx = await context(await config(sqliteEngine), clock);
    await users(ctx);
    const access = new AccessService(ctx);
    const r = await access.request({ user: "alice", resource: "a", reason: "INC-a1", ttlMs: HOUR });
    expect((await refusal(access.approve(r.id, "alice"))).code).toBe("ZT_ACCESS_SELF_APPROVAL");
    expect((await refusal(access.approve(r.id, "mallory"))).code).toBe("ZT_ACCESS_NOT_APPROVER");
    expect((await refusal(access.deny(r.id, "mallory"))).code).toBe("ZT_ACCESS_NOT_APPROVER");
    const rows = await auditRows(ctx, "access.approve", ["subject", "route", "reason", "data"], {
      outcome: "failure",
    });
    expect(
      rows.map((x) => ({
        subject: x.subject,
        route: x.route,
        reason: x.reason,
        data: JSON.parse(x.data) as unknown,
      })),
    ).toEqual(
      ["alice:self-approval", "mallory:not-an-approver", "mallory:not-an-approver"].map((w) => ({
        subject: w.split(":")[0],
        route: "a",
        reason: w.split(":")[1],
        data: { request_id: r.id, user: "alice" },
      })),
    );
  }, 60_000);
});
