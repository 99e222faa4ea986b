/**
 * A PEP re-reads a user, device, grant or the bans table from the store when an event
 * names it. Two such reads can complete out of order (on PostgreSQL a pool runs them on
 * different connections), and the older answer must never overwrite what a newer read or
 * an ended grant put in memory: a revoked device stayed "approved and compliant", a
 * revoked grant came back, a new ban was dropped, until the next event or periodic pass.
 * The store is real (SQLite, and PostgreSQL when reachable); a ReadGate holds one read's
 * answer to force the interleaving.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig, type ZtConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import { identityService } from "../src/identity/index.js";
import { AccessService, GrantCache } from "../src/access/index.js";
import { DeviceTrust, parseDevicesConfig } from "../src/device/index.js";
import { EntityStore } from "../src/policy/index.js";
import { engines, type Engine } from "./store-fixture.js";
import { ReadGate } from "./helpers/read-gate.js";
import { isBanned, refreshBans } from "../src/audit/index.js";
import { setBansForTest } from "../src/audit/alerts/ban-cache.js";

const T0 = Date.UTC(2026, 2, 2, 9, 0, 0);
const HOUR = 3_600_000;
const ENGINES = await engines();

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function config(engine: Engine): Promise<ZtConfig> {
  const target = await engine.fresh();
  cleanups.push(() => target.cleanup());
  const dir = target.storeOptions.dataDir;
  mkdirSync(join(dir, "policies"));
  writeFileSync(join(dir, "policies", "main.cedar"), `permit (principal, action, resource);`);
  return validateConfig(
    {
      data_dir: join(dir, "data"),
      ...(target.storeOptions.databaseUrl ? { database_url: target.storeOptions.databaseUrl } : {}),
      trust_domain: "order.test",
      policies: join(dir, "policies"),
      routes: [{ name: "a", from: "http://a.localhost", to: "http://127.0.0.1:9" }],
      access: { resources: { a: { approvers: "leads", max_ttl: "8h" } } },
    },
    join(dir, "zt.yaml"),
  );
}

async function context(cfg: ZtConfig, clock: ManualClock): Promise<AppContext> {
  const ctx = await openAppContext(cfg, { create: true, clock });
  cleanups.push(() => ctx.close());
  return ctx;
}

/** The PEP's view of the store: the same store, one table's reads through the gate. */
function gated(ctx: AppContext, gate: ReadGate): AppContext {
  return { ...ctx, store: { ...ctx.store, db: gate.wrap(ctx.store.db) } } as AppContext;
}

describe.each(ENGINES)("refreshes of one thing complete in order ($name)", (engine) => {
  it("stops an older read of a device from making a revoked device compliant again", async () => {
    const clock = new ManualClock(T0);
    const cfg = await config(engine);
    const cli = await context(cfg, clock);
    const { user } = await identityService(cli).addUser({
      name: "dora",
      password: "pw-correct-horse-battery",
    });
    await cli.store.db
      .insertInto("devices")
      .values({
        id: "dev_order1",
        user_id: user.id,
        name: "laptop",
        public_key: "-",
        status: "approved",
        created_at: T0,
        approved_at: T0,
        approved_by: "test",
        last_report_at: T0,
        compliant: 1,
        score: 100,
        os: "linux",
        // Compliant under the default rules (required: disk_encryption, firewall), by
        // which a device's last checks are judged when it is read.
        checks: JSON.stringify({ disk_encryption: true, firewall: true }),
      })
      .execute();
    const pep = await context(cfg, clock);
    const gate = new ReadGate("devices");
    const trust = new DeviceTrust(
      gated(pep, gate),
      parseDevicesConfig(cfg.devices),
      new EntityStore(),
    );
    await trust.load();
    expect(trust.compliantNow(trust.device("dev_order1")!)).toBe(true);

    // An event about the device: its read (still approved) is slow to come back; the
    // device is revoked meanwhile and the refresh for that event completes first.
    gate.hold();
    const older = trust.refresh("dev_order1");
    await gate.held();
    await cli.store.db
      .updateTable("devices")
      .set({ status: "revoked", compliant: 0 })
      .where("id", "=", "dev_order1")
      .execute();
    await trust.refresh("dev_order1");
    expect(trust.device("dev_order1")?.status).toBe("revoked");
    gate.release();
    await older;
    expect(trust.device("dev_order1")?.status).toBe("revoked");
    expect(trust.compliantNow(trust.device("dev_order1")!)).toBe(false);
  });

  it("stops an older read of a grant from bringing it back after it was revoked", async () => {
    const clock = new ManualClock(T0);
    const cfg = await config(engine);
    const cli = await context(cfg, clock);
    const ids = identityService(cli);
    for (const [name, groups] of [
      ["alice", ["eng"]],
      ["lead", ["leads"]],
    ] as const)
      await ids.addUser({ name, groups: [...groups], password: "pw-correct-horse-battery" });
    const access = new AccessService(cli);
    const r = await access.request({ user: "alice", resource: "a", reason: "INC-7", ttlMs: HOUR });
    await access.approve(r.id, "lead");

    const pep = await context(cfg, clock);
    const gate = new ReadGate("access_requests");
    const cache = new GrantCache(gated(pep, gate));
    await cache.load();
    const aliceOnA = { principal: { type: "User", id: "alice" }, route: "a" };
    const grants = () => (cache.contribute(aliceOnA)?.["grants"] as string[] | undefined) ?? [];
    expect(grants()).toEqual(["a"]);

    // A grant.changed about the approved grant: its read is slow to come back; the grant
    // is revoked meanwhile and the PEP drops it on that event (before any read).
    gate.hold();
    const older = cache.refresh(r.id);
    await gate.held();
    await access.revoke(r.id, "lead");
    cache.forget(r.id);
    expect(grants()).toEqual([]);
    gate.release();
    await older;
    expect(grants()).toEqual([]);
  });
});

describe.each(ENGINES)("ban cache refreshes complete in order ($name)", (engine) => {
  it("stops an older read of the bans table from dropping a newer ban", async () => {
    const clock = new ManualClock(T0);
    const cfg = await config(engine);
    const ctx = await context(cfg, clock);
    cleanups.push(async () => setBansForTest({}));
    const ban = (value: string) =>
      ctx.store.db
        .insertInto("audit_bans")
        .values({
          key: `ip:${value}`,
          kind: "ip",
          value,
          rule: "manual",
          reason: "test",
          created_at: T0,
          until: T0 + HOUR,
          count: 1,
          lifted_at: null,
        })
        .execute();
    await ban("192.0.2.1");
    const gate = new ReadGate("audit_bans");
    const store = gated(ctx, gate).store;
    gate.hold();
    const older = refreshBans(store, T0);
    await gate.held();
    await ban("192.0.2.2");
    await refreshBans(store, T0);
    expect(isBanned("192.0.2.2", T0)).toBe(true);
    gate.release();
    await older;
    expect(isBanned("192.0.2.1", T0)).toBe(true);
    expect(isBanned("192.0.2.2", T0)).toBe(true);
  });
});
