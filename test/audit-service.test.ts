import { afterEach, describe, expect, it } from "vitest";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { StoreEventBus } from "../src/events/index.js";
import {
  AlertService,
  AuditLog,
  isBanned,
  parseAlertsConfig,
  removeBan,
  startBanCache,
  listBans,
  countDecision,
  renderMetrics,
  collectStoreMetrics,
  throttledStoreMetrics,
} from "../src/audit/index.js";
import { makeEnv } from "./audit-helpers.js";

/** A local HTTP receiver collecting JSON bodies. */
async function receiver(): Promise<{
  url: string;
  bodies: unknown[];
  server: Server;
  next: () => Promise<unknown>;
}> {
  const bodies: unknown[] = [];
  const waiters: ((b: unknown) => void)[] = [];
  let taken = 0;
  const server = createServer((req: IncomingMessage, res) => {
    let text = "";
    req.on("data", (d: Buffer) => (text += d.toString()));
    req.on("end", () => {
      const body = JSON.parse(text) as unknown;
      bodies.push(body);
      waiters.shift()?.(body);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/alerts`,
    bodies,
    server,
    next: () =>
      new Promise((r) => {
        const i = taken++;
        if (i < bodies.length) r(bodies[i]);
        else waiters.push(r);
      }),
  };
}

describe("alert service over a real store, event bus and webhook", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("bans a source at the threshold, refuses it via isBanned, and lifts it with ban remove", async () => {
    const t = makeEnv();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const store: Store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const events = new StoreEventBus(store, { clock });
    await events.start();
    cleanups.push(() => events.stop());
    const audit = new AuditLog(store, { clock });
    cleanups.push(() => audit.close());
    const hook = await receiver();
    cleanups.push(() => new Promise<void>((r) => hook.server.close(() => r())));
    const config = parseAlertsConfig({
      jails: [
        {
          name: "login-ip",
          match: "login-failure",
          by: "ip",
          maxretry: 3,
          findtime: "1m",
          bantime: "10m",
        },
      ],
      break_glass: true,
      webhook: hook.url,
    });
    const svc = new AlertService({
      store,
      clock,
      audit,
      events,
      config,
      pollIntervalMs: 60_000,
      wakeOnWrite: false,
    });
    await svc.start();
    cleanups.push(() => svc.stop());
    const stopCache = await startBanCache(store, events, () => clock.now());
    cleanups.push(stopCache);

    const ip = "198.51.100.23";
    for (let i = 0; i < 2; i++) {
      audit.record({
        kind: "login",
        outcome: "failure",
        subject: "eve",
        sourceIp: ip,
        reason: "bad-password",
        data: { password: "x" },
      });
      clock.advance(1000);
    }
    await audit.flush();
    expect(await svc.processNow()).toEqual([]);
    expect(isBanned(ip, clock.now())).toBe(false);

    audit.record({
      kind: "login",
      outcome: "failure",
      subject: "eve",
      sourceIp: ip,
      reason: "bad-password",
    });
    await audit.flush();
    const fired = await svc.processNow();
    expect(fired.map((a) => a.rule)).toEqual(["login-ip"]);
    expect(await hook.next()).toMatchObject({
      source: "zt",
      rule: "login-ip",
      key: `ip:${ip}`,
      severity: "warning",
    });
    expect(isBanned(ip, clock.now())).toBe(true);
    expect(isBanned(ip, clock.now() + 600_000)).toBe(false);
    expect((await listBans(store, clock.now())).map((b) => b.key)).toEqual([`ip:${ip}`]);

    // The alert and the ban are themselves in the audit log (and do not loop back).
    await audit.flush();
    expect(await svc.processNow()).toEqual([]);
    const kinds = (
      await store.db.selectFrom("audit_events").select("kind").orderBy("seq").execute()
    ).map((r) => r.kind);
    expect(kinds).toEqual(["login", "login", "login", "ban.add", "alert"]);

    await removeBan({ store, clock, events, audit }, ip, "test");
    expect(isBanned(ip, clock.now())).toBe(false);
    await expect(removeBan({ store, clock, events, audit }, ip, "test")).rejects.toMatchObject({
      code: "ZT_NOT_FOUND",
    });

    audit.record({ kind: "breakglass", outcome: "info", subject: "root-ops", route: "prod" });
    await audit.flush();
    expect((await svc.processNow()).map((a) => [a.rule, a.severity])).toEqual([
      ["break-glass", "critical"],
    ]);
    expect(await hook.next()).toMatchObject({ rule: "break-glass", severity: "critical" });
  });

  it("metrics: decisions, bans and sink lag appear in the exposition", async () => {
    const t = makeEnv();
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    countDecision("grafana", "deny", "mfa-too-old", 0.00004);
    countDecision("grafana", "deny", "mfa-too-old", 0.00004);
    const now = Date.UTC(2026, 5, 1);
    await store.db
      .insertInto("audit_bans")
      .values({
        key: "ip:192.0.2.1",
        kind: "ip",
        value: "192.0.2.1",
        rule: "r",
        reason: "x",
        created_at: now,
        until: now + 1000,
        count: 1,
        lifted_at: null,
      })
      .execute();
    await store.db
      .insertInto("audit_cursors")
      .values({ name: "sink:loki", seq: 0, dropped: 0, updated_at: now })
      .execute();
    const audit = new AuditLog(store, { clock: new ManualClock(now) });
    for (let i = 0; i < 3; i++) audit.record({ kind: "x", outcome: "info" });
    await audit.close();
    await collectStoreMetrics(store, now);
    const { body, contentType } = await renderMetrics();
    expect(contentType).toContain("text/plain");
    expect(body).toContain(
      'zt_decisions_total{verdict="deny",route="grafana",reason="mfa-too-old"} 2',
    );
    expect(body).toMatch(/zt_decision_duration_seconds_bucket\{le="0\.00005",verdict="deny"\} 2/);
    expect(body).toContain("zt_bans_active 1");
    expect(body).toContain('zt_audit_sink_lag_events{sink="sink:loki"} 3');
    expect(body).toContain("zt_active_sessions 0");
    // Counted between two reads: the next read has them (decisions are added on read).
    countDecision("grafana", "deny", "mfa-too-old", 0.00004);
    expect((await renderMetrics()).body).toContain(
      'zt_decisions_total{verdict="deny",route="grafana",reason="mfa-too-old"} 3',
    );
  });
});

describe("store gauges behind /metrics", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("reads the store at most once per 5 s however often /metrics is scraped", async () => {
    const t = makeEnv();
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    let reads = 0;
    // The real store, its reads counted (each gauge is one or two queries).
    const counted = {
      ...store,
      db: new Proxy(store.db, {
        get(target, prop) {
          const v: unknown = Reflect.get(target, prop, target);
          if (prop === "selectFrom") reads++;
          return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }),
    } as Store;
    const collect = throttledStoreMetrics(counted);
    const now = Date.UTC(2026, 5, 1);
    await collect(now);
    const once = reads;
    expect(once).toBeGreaterThan(0);
    await Promise.all(Array.from({ length: 50 }, (_, i) => collect(now + i * 10)));
    expect(reads).toBe(once);
    await store.db
      .insertInto("audit_bans")
      .values({
        key: "ip:192.0.2.9",
        kind: "ip",
        value: "192.0.2.9",
        rule: "manual",
        reason: "test",
        created_at: now,
        until: now + 60_000,
        count: 1,
        lifted_at: null,
      })
      .execute();
    await collect(now + 5_000);
    expect(reads).toBe(2 * once);
    expect((await renderMetrics()).body).toContain("zt_bans_active 1");
  });
});

describe("checkpoint witnesses", () => {
  it("a webhook witness receives the signed note; a failing witness never breaks checkpointing", async () => {
    const { KeyStore, loadMasterKey } = await import("../src/keys/index.js");
    const { Checkpointer, webhookWitness, parseCheckpoint, verifyCheckpointSignature } =
      await import("../src/audit/index.js");
    const t = makeEnv();
    const clock = new ManualClock();
    const store = await openStore({ dataDir: t.dataDir });
    const hook = await receiver();
    try {
      const keys = new KeyStore(
        store,
        loadMasterKey({ dataDir: t.dataDir, envValue: t.env["ZT_MASTER_KEY"] }),
        clock,
      );
      const log = new AuditLog(store, { clock });
      for (let i = 0; i < 5; i++) log.record({ kind: "x", outcome: "info" });
      await log.close();
      const errors: string[] = [];
      const cp = new Checkpointer({
        store,
        keys,
        clock,
        origin: "audit.test/zt/audit",
        every: 100,
        intervalMs: 60_000,
        witnesses: [webhookWitness(hook.url), webhookWitness("http://127.0.0.1:1/closed")],
        onWitnessError: (w) => errors.push(w),
      });
      const note = await cp.checkpointNow();
      expect(note).toBeDefined();
      const body = (await hook.next()) as {
        origin: string;
        size: number;
        head_hash: string;
        note: string;
      };
      expect(body).toMatchObject({ origin: "audit.test/zt/audit", size: 5, note });
      const parsed = parseCheckpoint(body.note);
      expect(parsed.headHash).toBe(body.head_hash);
      const key = await keys.activeKey("audit-checkpoint", "EdDSA");
      expect(verifyCheckpointSignature(parsed, key.publicKey)).toBe(true);
      expect(errors).toEqual(["webhook:http://127.0.0.1:1/closed"]);
      // Nothing new: no second checkpoint.
      expect(await cp.checkpointNow()).toBeUndefined();
      await cp.stop();
    } finally {
      await new Promise<void>((r) => hook.server.close(() => r()));
      await store.close();
    }
  });
});
