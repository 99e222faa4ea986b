/**
 * Pruning of the event bus's `events` table, and what it must not break: a process whose
 * position fell behind the pruned horizon (cut off or suspended for longer than
 * `events.retention`) notices the gap and re-reads its state from the store, reporting
 * stale until it has, instead of silently skipping the events it never heard. On SQLite
 * and a real PostgreSQL; an injected clock; several contexts on one store stand for
 * several processes, a PEP on a real socket.
 */
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { createServices } from "../src/app/services.js";
import { validateConfig, type ZtConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import { identityService } from "../src/identity/index.js";
import { SessionService } from "../src/session/index.js";
import { startContinuousVerification } from "../src/session/reevaluator.js";
import {
  EventPruner,
  pruneEvents,
  readPrunedThrough,
  StoreEventBus,
  type EventResync,
  type ZtEvent,
} from "../src/events/index.js";
import { openStore, type Store } from "../src/store/index.js";
import { createPep } from "../src/proxy/index.js";
import { auditRecords } from "./helpers/audit-rows.js";
import { bounded } from "./helpers/bounded.js";
import { openWebSocket } from "./helpers/websocket-client.js";
import { runUp } from "../src/app/run-up.js";
import { createPepNode } from "../src/app/pep-node.js";
import { initPki, pkiService } from "../src/pki/index.js";
import {
  AlertService,
  AuditLog,
  listBans,
  metrics,
  parseAlertsConfig,
  removeBan,
} from "../src/audit/index.js";
import {
  OPERATOR_AUTH,
  tempDir as tempDirOf,
  withOperatorToken,
  writeConfig,
} from "./helpers/zt-process.js";
import { request } from "./helpers/http-client.js";
import { ReadGate } from "./helpers/read-gate.js";
import { startUpstream, tempDir } from "./pep-fixture.js";
import {
  engines,
  perTestTargets,
  waitFor,
  type Engine,
  type EngineTarget,
} from "./store-fixture.js";

const T0 = Date.UTC(2026, 2, 2, 9, 0, 0);
const HOUR = 3_600_000;
const PASSWORD = "pw-correct-horse-battery";
const ENGINES = await engines();

describe.each(ENGINES)("event pruning and resync: $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);

  async function store(t: EngineTarget): Promise<Store> {
    const s = await openStore(t.storeOptions);
    cleanups.push(() => s.close());
    return s;
  }

  function bus(s: Store, clock: ManualClock, o: { resyncRetryMs?: number } = {}): StoreEventBus {
    const b = new StoreEventBus(s, { clock, ...o });
    cleanups.push(() => b.stop());
    return b;
  }

  /**
   * A second process on the store (a PEP's), its event bus reading `events` through a gate
   * (to suspend it past the retention), with its services; the bus is marked, not started.
   * `whileSuspended(change)` holds the process's reads, makes the change, lets two hours
   * pass and prunes the events past the retention, then lets the process catch up and
   * waits for its resync; it returns what the pruning did.
   */
  async function gatedProcess(cfg: ZtConfig, clock: ManualClock) {
    const base = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => base.close());
    const gate = new ReadGate("events");
    const events = bus({ ...base.store, db: gate.wrap(base.store.db) } as Store, clock);
    const ctx = { ...base, events } as AppContext;
    await events.mark();
    const services = await createServices(ctx);
    const whileSuspended = async (change: () => Promise<void>) => {
      gate.hold();
      await gate.held();
      await change();
      clock.advance(2 * HOUR);
      const pruned = await pruneEvents(base.store, {
        now: clock.now(),
        retentionMs: cfg.eventRetentionMs,
      });
      gate.release();
      await events.catchUp();
      await events.resynced();
      return pruned;
    };
    return { ctx, events, services, whileSuspended };
  }

  /** The CLI's side: a context on the store with zt's CA, and an SVID issued from it. */
  async function cliWithSvid(cfg: ZtConfig, clock: ManualClock) {
    const cli = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => cli.close());
    await initPki(cli);
    const issued = await (
      await pkiService(cli)
    ).issueSvidWithNewKey({ spiffeId: "spiffe://prune.test/api", actor: "test" });
    return { cli, issued };
  }

  async function seqs(s: Store): Promise<number[]> {
    const rows = await s.db.selectFrom("events").select("seq").orderBy("seq").execute();
    return rows.map((r) => Number(r.seq));
  }

  it("deletes events older than the retention, in bounded batches, and keeps the recent ones", async () => {
    const clock = new ManualClock(T0);
    const s = await store(await target());
    const b = bus(s, clock);
    const old: number[] = [];
    for (let i = 0; i < 7; i++) old.push((await b.publish("policy.changed", { i })).seq);
    clock.advance(25 * HOUR);
    const recent: number[] = [];
    for (let i = 0; i < 3; i++) recent.push((await b.publish("ban.changed", { i })).seq);

    const r = await pruneEvents(s, { now: clock.now(), retentionMs: 24 * HOUR, batchSize: 3 });
    expect(r).toEqual({ deleted: 7, batches: 3, prunedThrough: old.at(-1) });
    expect(await seqs(s)).toEqual(recent);
    // Nothing more is old enough: a second pass deletes nothing, the horizon stays.
    expect(await pruneEvents(s, { now: clock.now(), retentionMs: 24 * HOUR })).toEqual({
      deleted: 0,
      batches: 0,
      prunedThrough: old.at(-1),
    });
  });

  it("keeps seqs growing and starts a new reader at the horizon once the table was emptied", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const s = await store(t);
    const b = bus(s, clock);
    let last = 0;
    for (let i = 0; i < 4; i++) last = (await b.publish("grant.changed", { i })).seq;
    clock.advance(2 * HOUR);
    const pruner = new EventPruner(s, { clock, retentionMs: HOUR });
    expect((await pruner.runOnce())?.deleted).toBe(4);
    expect(await seqs(s)).toEqual([]);
    expect(await readPrunedThrough(s)).toBe(last);

    // A process starting now reads from the horizon: no spurious resync.
    const late = bus(await store(t), clock);
    await late.mark();
    await late.start();
    expect(late.lastSeq()).toBe(last);
    expect(late.resyncing()).toBe(false);
    // And a new event's seq is above every pruned one (no seq is ever reused).
    expect((await b.publish("grant.changed", {})).seq).toBeGreaterThan(last);
  });

  // Replicas share a PostgreSQL store. (Two SQLite handles in one thread cannot interleave
  // write transactions: the second's busy wait blocks the thread holding the lock.)
  it.skipIf(engine.name !== "postgres")(
    "never lowers the horizon when two replicas prune at once",
    async () => {
      const clock = new ManualClock(T0);
      const t = await target();
      const a = await store(t);
      const b2 = await store(t);
      const b = bus(a, clock);
      let last = 0;
      for (let i = 0; i < 50; i++) last = (await b.publish("policy.changed", { i })).seq;
      clock.advance(2 * HOUR);
      const o = { now: clock.now(), retentionMs: HOUR, batchSize: 7 };
      const [r1, r2] = await Promise.all([pruneEvents(a, o), pruneEvents(b2, o)]);
      // Whatever one skipped while the other held the batch, a last pass finishes it.
      const r3 = await pruneEvents(a, o);
      expect(r1.deleted + r2.deleted + r3.deleted).toBe(50);
      expect(await readPrunedThrough(a)).toBe(last);
      expect(await seqs(a)).toEqual([]);
    },
  );

  it("stops a reader behind the pruned horizon from silently skipping events: it resyncs, stale until done", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const writer = bus(await store(t), clock);
    const readerStore = await store(t);
    // The reader is suspended (its read of `events` held) while events are published and
    // then pruned behind it.
    const gate = new ReadGate("events");
    const reader = bus({ ...readerStore, db: gate.wrap(readerStore.db) } as Store, clock, {
      resyncRetryMs: 10,
    });
    const heard: ZtEvent[] = [];
    reader.subscribe((e) => heard.push(e));
    const resyncs: EventResync[] = [];
    let failNext = true;
    let finish!: () => void;
    const finished = new Promise<void>((r) => (finish = r));
    reader.onResync(async (r) => {
      resyncs.push(r);
      // The first attempt fails (store unreachable, say): the bus stays stale and retries.
      if (failNext) {
        failNext = false;
        throw new Error("store unreachable");
      }
      await finished;
    });
    await reader.start();
    const before = reader.lastSeq();
    gate.hold();
    await gate.held();

    const lost = await writer.publish("session.revoked", { sessionIds: ["ses_x"] });
    clock.advance(2 * HOUR);
    const kept = await writer.publish("policy.changed", { v: 2 });
    await pruneEvents(await store(t), { now: clock.now(), retentionMs: HOUR });
    gate.release();
    await waitFor(() => reader.lastSeq() >= kept.seq, "the reader to catch up");

    // The gap is seen: stale (PEPs deny) while the state is re-read, retried on failure.
    expect(reader.resyncing()).toBe(true);
    expect(reader.lastContactMs()).toBe(Number.POSITIVE_INFINITY);
    await waitFor(() => resyncs.length >= 2, "the failed resync to be retried");
    expect(resyncs[0]).toMatchObject({ afterSeq: before, prunedThrough: lost.seq });
    expect(reader.resyncing()).toBe(true);
    finish();
    await reader.resynced();
    expect(reader.resyncing()).toBe(false);
    expect(reader.lastContactMs()).toBe(0);
    // The event after the gap is still delivered; the pruned one cannot be.
    expect(heard.map((e) => e.seq)).toEqual([kept.seq]);
  });

  it("stops a session revoked while its PEP was suspended past the retention from staying usable", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const up = await startUpstream();
    cleanups.push(() => up.close());
    const cfg = config(t, up.port);
    const cli = await openAppContext(cfg, { create: true, clock });
    cleanups.push(() => cli.close());
    const { user } = await identityService(cli).addUser({ name: "erin", password: PASSWORD });

    // A PEP process whose event bus reads `events` through a gate (to suspend it).
    const { ctx, events, services, whileSuspended } = await gatedProcess(cfg, clock);
    const pep = createPep(services);
    const port = (await pep.listen("127.0.0.1", 0)).port;
    // The re-evaluator's part of the resync (users, devices, grants, then a re-check of
    // every live connection) runs too.
    const continuous = await startContinuousVerification(services, pep.live);
    await events.start();
    cleanups.push(async () => {
      continuous.close();
      await pep.close();
      services.close();
    });
    const get = (token: string) =>
      request(port, {
        host: "a.localhost",
        path: "/x",
        headers: { cookie: `zt_session=${token}`, accept: "application/json" },
      });
    const { token, session } = await new SessionService(cli).create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    expect((await get(token)).status).toBe(200);
    const ws = await openWebSocket(port, "a.localhost", `zt_session=${token}`);

    // Suspended; meanwhile the session is revoked, time passes, and the event is pruned.
    const r = await whileSuspended(async () => {
      const admin = new SessionService(cli);
      expect(await admin.revoke([session.id], "admin")).toBe(1);
      admin.close();
    });
    expect(r.deleted).toBeGreaterThan(0);

    expect((await get(token)).status).toBe(401);
    expect(services.sessions.checkInMemory(token)).toMatchObject({
      ok: false,
      code: "ZT_SESSION_REVOKED",
    });
    expect(events.resyncCount()).toBe(1);
    // Its WebSocket is cut, and the cut audited once: found in the store, not heard from
    // an event (no event_seq), with the revocation's reason.
    await bounded(ws.closed, "the revoked session's WebSocket is still open");
    const cuts = await auditRecords(ctx, "session.cut", ["route", "reason"]);
    expect(cuts).toEqual([
      {
        route: "a",
        reason: "session-revoked",
        data: {
          session_id: session.id,
          cause: "session-revoked",
          connection_id: expect.stringMatching(/^dec_/),
          revoke_reason: "admin",
        },
      },
    ]);
  });

  it("stops a certificate revoked while its PEP was suspended past the retention from passing the deny list", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const cfg = config(t, 9);
    const { cli, issued } = await cliWithSvid(cfg, clock);

    // A process holding the PKI (its deny list), its bus reading through a gate.
    const { ctx, events, services, whileSuspended } = await gatedProcess(cfg, clock);
    cleanups.push(async () => services.close());
    const pki = await pkiService(ctx);
    await events.start();
    expect(pki.isRevoked(issued.serial)).toBe(false);

    await whileSuspended(async () => {
      await (await pkiService(cli)).revoke({ serial: issued.serial, actor: "test" });
    });

    expect(pki.isRevoked(issued.serial)).toBe(true);
  });

  it("stops a revocation restated by the resync from being recorded as heard from an event: the cut of the SVID's live connection names no event_seq", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const up = await startUpstream();
    cleanups.push(() => up.close());
    const cfg = config(t, up.port, {
      tls: { from_ca: true, client_certs: "optional" },
      routes: [{ name: "a", from: "https://a.localhost", to: `http://127.0.0.1:${up.port}` }],
    });
    const { cli, issued } = await cliWithSvid(cfg, clock);

    // A PEP process with a TLS listener from zt's CA, its bus reading through a gate.
    const { ctx, events, services, whileSuspended } = await gatedProcess(cfg, clock);
    const node = await createPepNode(ctx, services, { host: "127.0.0.1" });
    const port = (await node.pep.listen("127.0.0.1", 0)).port;
    await events.start();
    cleanups.push(async () => {
      await node.close();
      services.close();
    });
    // (Certificates are dated by zt's injected clock: the client does not check them.)
    const tlsOptions = {
      headers: { host: "a.localhost" },
      servername: "localhost",
      rejectUnauthorized: false,
      key: issued.keyPem,
      cert: issued.chainPem,
    };
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, tlsOptions);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_q, res) => reject(new Error(`refused ${res.statusCode}`)));
    });
    const closed = new Promise<void>((r) => ws.once("close", () => r()));

    await whileSuspended(async () => {
      await (await pkiService(cli)).revoke({ serial: issued.serial, actor: "test" });
    });

    await bounded(closed, "the revoked SVID's WebSocket is still open");
    const cuts = await auditRecords(ctx, "session.cut", ["route", "reason"]);
    expect(cuts).toEqual([
      {
        route: "a",
        reason: "cert-revoked",
        data: {
          session_id: "svc:spiffe://prune.test/api",
          cause: "svid-revoked",
          connection_id: expect.stringMatching(/^dec_/),
          cert_serial: issued.serial,
        },
      },
    ]);
  });

  it("lets the alert rules ban a source again after its ban was lifted while their process was suspended past the retention", async () => {
    const clock = new ManualClock(T0);
    const t = await target();
    const s = await store(t);
    const operator = bus(await store(t), clock);
    const gate = new ReadGate("events");
    const events = bus({ ...s, db: gate.wrap(s.db) } as Store, clock);
    await events.start();
    const audit = new AuditLog(s, { clock });
    cleanups.push(() => audit.close());
    const alerts = new AlertService({
      store: s,
      clock,
      audit,
      events,
      config: parseAlertsConfig({
        jails: [
          {
            name: "login-ip",
            match: "login-failure",
            by: "ip",
            maxretry: 2,
            findtime: "1m",
            bantime: "1d",
          },
        ],
      }),
      pollIntervalMs: 60_000,
      wakeOnWrite: false,
    });
    await alerts.start();
    cleanups.push(() => alerts.stop());
    const ip = "198.51.100.40";
    const failTwice = async (): Promise<string[]> => {
      for (let i = 0; i < 2; i++) {
        audit.record({
          kind: "login",
          outcome: "failure",
          subject: "eve",
          sourceIp: ip,
          reason: "bad-password",
        });
        clock.advance(1_000);
      }
      await audit.flush();
      return (await alerts.processNow()).map((a) => a.key);
    };
    expect(await failTwice()).toEqual([`ip:${ip}`]);

    // Suspended; meanwhile an operator lifts the ban, time passes, and the event is pruned.
    gate.hold();
    await gate.held();
    await removeBan({ store: s, clock, events: operator, audit }, ip, "ops");
    clock.advance(2 * HOUR);
    const kept = await operator.publish("policy.changed", { v: 2 });
    await pruneEvents(await store(t), { now: clock.now(), retentionMs: HOUR });
    gate.release();
    await waitFor(() => events.lastSeq() >= kept.seq, "the alert process to catch up");
    await events.resynced();

    // The same source misbehaves again: banned again, not taken for still banned.
    expect(await failTwice()).toEqual([`ip:${ip}`]);
    expect((await listBans(s, clock.now())).map((b) => b.key)).toEqual([`ip:${ip}`]);
  });

  function config(
    t: EngineTarget,
    upstreamPort: number,
    extra: Record<string, unknown> = {},
  ): ZtConfig {
    const dir = tempDir("zt-events-prune-");
    mkdirSync(join(dir, "policies"));
    writeFileSync(
      join(dir, "policies", "main.cedar"),
      `permit (principal, action, resource == App::"a");`,
    );
    return validateConfig(
      {
        data_dir: t.storeOptions.dataDir,
        ...(t.storeOptions.databaseUrl ? { database_url: t.storeOptions.databaseUrl } : {}),
        trust_domain: "prune.test",
        policies: join(dir, "policies"),
        routes: [{ name: "a", from: "http://a.localhost", to: `http://127.0.0.1:${upstreamPort}` }],
        session: { ttl: "24h", idle_timeout: "24h" },
        events: { retention: "1h" },
        // Certificates outlive the 2 h a suspended process misses (expired ones need no deny).
        pki: { svid_ttl: "12h" },
        ...extra,
      },
      join(dir, "zt.yaml"),
    );
  }
});

describe("zt up prunes events and reports resyncs", () => {
  it("prunes on its pass, and /readyz shows the resync and policy-watch state", async () => {
    const clock = new ManualClock(T0);
    const dir = tempDirOf("zt-up-prune-");
    const configPath = writeConfig(
      dir,
      `data_dir: ./data
routes:
  - { name: a, from: "http://a.localhost:8443", to: "http://127.0.0.1:9" }
policies: ./policies
events: { retention: 1h }
`,
      { "main.cedar": `permit (principal, action, resource == App::"a");` },
    );
    const lines: string[] = [];
    const zt = await runUp({
      configPath,
      // The operator token opens /readyz's detail.
      env: withOperatorToken({ ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" }),
      clock,
      out: (l) => lines.push(l),
    });
    try {
      const first = await zt.ctx.events.publish("policy.changed", { v: 1 });
      clock.advance(2 * HOUR);
      const r = await zt.eventPruner.runOnce();
      expect(r).toMatchObject({ prunedThrough: first.seq });
      expect(r?.deleted).toBeGreaterThanOrEqual(1);
      const ready = await request(zt.apiAddress.port, {
        host: "127.0.0.1",
        path: "/readyz",
        headers: OPERATOR_AUTH,
      });
      expect(ready.json()).toMatchObject({
        events_resyncing: false,
        policy_watch: { mode: "watching", errors: 0, error: null },
      });
      const text = await metrics.getSingleMetricAsString("zt_events_pruned_total");
      expect(text).toMatch(/zt_events_pruned_total [1-9]/);
    } finally {
      await zt.close();
    }
  }, 60_000);
});
