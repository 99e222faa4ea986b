import { afterEach, describe, expect, it } from "vitest";
import { createSocket } from "node:dgram";
import { createServer as createTcpServer, type AddressInfo, type Socket } from "node:net";
import { createServer as createHttpServer, type ServerResponse } from "node:http";
import { readFileSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { StoreEventBus } from "../src/events/index.js";
import {
  AlertEngine,
  AlertService,
  AuditLog,
  SinkRunner,
  addBan,
  removeBan,
  buildSink as buildSinkRaw,
  isBanned,
  parseAlertsConfig,
  parseAuditConfig,
  startBanCache,
} from "../src/audit/index.js";
import { syslogSink } from "../src/audit/sinks/syslog-sink.js";
import { raiseAlert } from "../src/audit/alerts/raise-alert.js";
import { makeEnv } from "./audit-helpers.js";

const buildSink = (raw: Record<string, unknown>) =>
  buildSinkRaw(parseAuditConfig({ sinks: [raw] }, "audit.test").sinks[0]!, 0);

/** RFC 5424 header up to the structured data's seq. */
const HEADER = /^<\d{1,3}>1 \S+ \S+ \S+ \d+ \S+ \[zt@32473 seq="(\d+)"/;

describe("audit exports review: what leaves zt", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function storeWith(
    events: { data?: Record<string, unknown> }[],
  ): Promise<{ store: Store; clock: ManualClock }> {
    const t = makeEnv();
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const log = new AuditLog(store, { clock });
    for (const e of events) {
      log.record({ kind: "decision", outcome: "deny", sourceIp: "192.0.2.1", ...e });
      clock.advance(1);
    }
    await log.close();
    return { store, clock };
  }

  /** An HTTP server that answers with `answer` and records what it received. */
  async function http(answer: (res: ServerResponse) => void) {
    const got: { headers: Record<string, unknown>; body: string }[] = [];
    const server = createHttpServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        got.push({ headers: req.headers, body });
        answer(res);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, got };
  }

  it("stops a syslog receiver that accepts but never reads from holding the sink, and zt's shutdown, forever", async () => {
    // 40 MB of events: more than the loopback socket buffers take without a reader.
    const blob = "x".repeat(1_000_000);
    const { store, clock } = await storeWith(
      Array.from({ length: 40 }, () => ({ data: { blob } })),
    );
    const sockets = new Set<Socket>();
    const server = createTcpServer((sock) => {
      sockets.add(sock);
      sock.pause(); // accepts, never reads
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    );
    const runner = new SinkRunner({
      store,
      clock,
      sink: syslogSink(
        "stalled",
        {
          host: "127.0.0.1",
          port: (server.address() as AddressInfo).port,
          protocol: "tcp",
          appName: "zt",
          timeoutMs: 300,
        },
        "jsonl",
      ),
      batch: 40,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    await expect(runner.runOnce()).rejects.toThrow(/took nothing/);
    await runner.stop();
  }, 20_000);

  it("stops a sink slower than the log from queuing one waiting run per written batch", async () => {
    const { store, clock } = await storeWith([{}, {}]);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let delivered = 0;
    const runner = new SinkRunner({
      store,
      clock,
      sink: {
        name: "slow",
        async deliver(rows) {
          await released;
          delivered += rows.length;
        },
        close: async () => undefined,
      },
      batch: 10,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => runner.stop());
    cleanups.push(() => release());
    const first = runner.runOnce();
    // What zt up does after every committed batch of the log, while the sink is busy.
    for (let i = 0; i < 10_000; i++) runner.poke();
    expect(runner.pendingRuns).toBeLessThanOrEqual(1);
    release();
    expect(await first).toBe(2);
    expect(delivered).toBe(2);
  });

  it("writes into the file now at a file sink's path once logrotate has renamed the old one", async () => {
    const t = makeEnv();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const audit = new AuditLog(store, { clock });
    cleanups.push(() => audit.close());
    const path = join(t.dir, "audit.jsonl");
    const runner = new SinkRunner({
      store,
      clock,
      sink: buildSink({ type: "file", path }),
      batch: 10,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => runner.stop());
    const seqs = (file: string) =>
      readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { seq: number }).seq);
    audit.record({ kind: "decision", outcome: "allow" });
    await audit.flush();
    expect(await runner.runOnce()).toBe(1);
    renameSync(path, `${path}.1`); // logrotate without copytruncate
    audit.record({ kind: "decision", outcome: "deny" });
    await audit.flush();
    expect(await runner.runOnce()).toBe(1);
    expect(seqs(`${path}.1`)).toEqual([1]);
    expect(seqs(path)).toEqual([2]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("stops one event too large for a UDP datagram from blocking the syslog sink for good", async () => {
    const { store, clock } = await storeWith([{ data: { blob: "é".repeat(50_000) } }, {}]);
    const server = createSocket("udp4");
    const got: Buffer[] = [];
    server.on("message", (m) => got.push(m));
    await new Promise<void>((r) => server.bind(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const runner = new SinkRunner({
      store,
      clock,
      sink: buildSink({ type: "syslog", host: "127.0.0.1", port: server.address().port }),
      batch: 10,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => runner.stop());
    expect(await runner.runOnce()).toBe(2);
    while (got.length < 2) await new Promise((r) => setImmediate(r));
    const [big, small] = got.map((b) => b.toString("utf8"));
    // RFC 5426 §3.2: truncated to what one datagram carries, on a character boundary.
    expect(got[0]!.length).toBeLessThanOrEqual(65_507);
    expect(big).not.toContain("\uFFFD");
    expect(HEADER.exec(big!)?.[1]).toBe("1");
    expect(HEADER.exec(small!)?.[1]).toBe("2");
  });

  it("does not follow a webhook or Loki sink's redirect: the events and credential headers stay put", async () => {
    const { store, clock } = await storeWith([{}, {}]);
    const elsewhere = await http((res) => res.writeHead(204).end());
    for (const type of ["webhook", "loki"] as const) {
      const redirecting = await http((res) =>
        res.writeHead(307, { location: `${elsewhere.url}/steal` }).end(),
      );
      const runner = new SinkRunner({
        store,
        clock,
        sink: buildSink(
          type === "webhook"
            ? { type, url: `${redirecting.url}/ingest`, headers: { "dd-api-key": "k-s3cret" } }
            : { type, url: redirecting.url },
        ),
        batch: 10,
        maxLag: 1000,
        pollIntervalMs: 60_000,
        startAt: "beginning",
      });
      cleanups.push(() => runner.stop());
      await expect(runner.runOnce()).rejects.toThrow(/answered 307/);
      expect(redirecting.got).toHaveLength(1);
    }
    expect(elsewhere.got).toEqual([]);
  });

  it("does not follow an alert webhook's redirect to another host", async () => {
    const { store } = await storeWith([]);
    const elsewhere = await http((res) => res.writeHead(204).end());
    const redirecting = await http((res) =>
      res.writeHead(308, { location: `${elsewhere.url}/steal` }).end(),
    );
    const errors: unknown[] = [];
    await raiseAlert(
      {
        rule: "break-glass",
        severity: "critical",
        key: "user:root-ops",
        message: "break-glass",
        seq: 1,
        ts: 0,
        data: {},
      },
      { store, webhook: `${redirecting.url}/alerts`, onWebhookError: (e) => errors.push(e) },
    );
    expect(redirecting.got).toHaveLength(1);
    expect(elsewhere.got).toEqual([]);
    expect(String(errors[0])).toMatch(/answered 308/);
  });

  it("stops a slow alert webhook from holding back the bans of the events that follow", async () => {
    const t = makeEnv();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const events = new StoreEventBus(store, { clock });
    await events.start();
    cleanups.push(() => events.stop());
    const audit = new AuditLog(store, { clock });
    cleanups.push(() => audit.close());
    // The webhook takes the alert and does not answer until the test is over.
    const held: ServerResponse[] = [];
    const hook = await http((res) => held.push(res));
    cleanups.push(() => {
      for (const r of held) r.writeHead(204).end();
    });
    const errors: unknown[] = [];
    const svc = new AlertService({
      store,
      clock,
      audit,
      events,
      config: parseAlertsConfig({
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
        webhook: `${hook.url}/alerts`,
      }),
      pollIntervalMs: 60_000,
      wakeOnWrite: false,
      onError: (_what, e) => errors.push(e),
    });
    await svc.start();
    cleanups.push(() => svc.stop());
    const stopCache = await startBanCache(store, events, () => clock.now());
    cleanups.push(stopCache);

    audit.record({ kind: "breakglass", outcome: "info", subject: "root-ops", route: "prod" });
    await audit.flush();
    expect((await svc.processNow()).map((a) => a.rule)).toEqual(["break-glass"]);
    // processNow did not wait for the webhook (which has not answered, nor timed out).
    expect(errors).toEqual([]);

    const ip = "198.51.100.77";
    for (let i = 0; i < 3; i++)
      audit.record({ kind: "login", outcome: "failure", sourceIp: ip, reason: "bad-password" });
    await audit.flush();
    expect((await svc.processNow()).map((a) => a.rule)).toEqual(["login-ip"]);
    expect(isBanned(ip, clock.now())).toBe(true);
    expect(errors).toEqual([]);
    // The alerts still reach the webhook, in order, once it answers.
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5));
    held.shift()!.writeHead(204).end();
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5));
    expect(hook.got.map((g) => (JSON.parse(g.body) as { rule: string }).rule)).toEqual([
      "break-glass",
      "login-ip",
    ]);
    held.shift()!.writeHead(204).end();
  });

  it("forgets the state of sources that went quiet, so memory follows the active sources only", () => {
    const config = parseAlertsConfig({
      jails: [
        {
          name: "denial-ip",
          match: "denial",
          by: "ip",
          maxretry: 50,
          findtime: "1m",
          bantime: "5m",
        },
      ],
      denial_burst: { threshold: 20, window: "1m" },
      fan_out: { distinct_routes: 5, window: "1m" },
      mtls_failures: null,
      new_network: null,
      break_glass: false,
    });
    const engine = new AlertEngine(config);
    const start = Date.UTC(2026, 5, 1);
    // 60,000 denials, each from a new IPv6 address (one /64 holds 2^64 of them), 100 ms
    // apart: 600 sources are within the 1-minute windows at any time.
    let most = 0;
    for (let i = 0; i < 60_000; i++) {
      engine.evaluate({
        seq: i + 1,
        ts: start + i * 100,
        kind: "decision",
        outcome: "deny",
        subject: null,
        source_ip: `2001:db8::${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}`,
        route: "app",
        reason: "no-policy",
        data: {},
      });
      most = Math.max(most, engine.trackedKeys);
    }
    expect(most).toBeLessThan(20_000);
  });

  it("stops a ban on an address written another way (::ffff:v4, upper-case or long IPv6) from never matching", async () => {
    const t = makeEnv();
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const events = new StoreEventBus(store, { clock });
    await events.start();
    cleanups.push(() => events.stop());
    const audit = new AuditLog(store, { clock });
    cleanups.push(() => audit.close());
    const stopCache = await startBanCache(store, events, () => clock.now());
    cleanups.push(stopCache);
    const deps = { store, clock, events, audit };
    // The PEP looks addresses up as it sees them: dotted IPv4, RFC 5952 IPv6.
    for (const [typed, seen] of [
      ["::FFFF:198.51.100.9", "198.51.100.9"],
      ["ip:2001:DB8:0:0:0:0:0:7", "2001:db8::7"],
    ] as const) {
      const row = await addBan(deps, typed, 3_600_000, "test", "ops");
      expect(row.key).toBe(`ip:${seen}`);
      expect(isBanned(seen, clock.now())).toBe(true);
    }
    await removeBan(deps, "2001:db8::0:7", "ops");
    expect(isBanned("2001:db8::7", clock.now())).toBe(false);

    // A login refused on an API listening on "::" carries the IPv4-mapped form.
    const engine = new AlertEngine(
      parseAlertsConfig({
        jails: [
          {
            name: "login-ip",
            match: "login-failure",
            by: "ip",
            maxretry: 2,
            findtime: "1m",
            bantime: "1m",
          },
        ],
      }),
    );
    const fail = (seq: number) =>
      engine.evaluate({
        seq,
        ts: clock.now(),
        kind: "login",
        outcome: "failure",
        subject: null,
        source_ip: "::ffff:203.0.113.5",
        route: null,
        reason: "unknown-user",
        data: {},
      });
    fail(1);
    expect(fail(2).bans.map((b) => b.key)).toEqual(["ip:203.0.113.5"]);
  });

  it("keeps camelCase secrets (sessionToken, clientSecret, totpSecret …) out of the log", async () => {
    const { store } = await storeWith([
      {
        data: {
          sessionToken: "s-1",
          clientSecret: "s-2",
          totpSecret: "s-3",
          nested: [{ newPassword: "s-4", backupCode: "s-5", SESSIONTOKEN: "s-6" }],
          accessToken: "s-7",
          setCookie: "s-8",
          code: "ZT_AUTH_FAILED",
        },
      },
    ]);
    const row = await store.db.selectFrom("audit_events").select("data").executeTakeFirstOrThrow();
    for (let i = 1; i <= 8; i++) expect(row.data).not.toContain(`s-${i}`);
    expect(JSON.parse(row.data)).toMatchObject({
      sessionToken: "[redacted]",
      code: "ZT_AUTH_FAILED",
    });
  });
});
