import { afterEach, describe, expect, it } from "vitest";
import { createSocket } from "node:dgram";
import {
  createServer as createTcpServer,
  type AddressInfo,
  type Server as TcpServer,
} from "node:net";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { readFileSync } from "node:fs";
import { createServer as createTlsServer } from "node:tls";
import { join } from "node:path";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import {
  AuditLog,
  SinkRunner,
  buildSink as buildSinkRaw,
  metrics,
  parseAuditConfig,
} from "../src/audit/index.js";

/** Builds a sink from a raw config entry, validated like zt.yaml's `audit.sinks`. */
const buildSink = (raw: Record<string, unknown>, i: number) =>
  buildSinkRaw(parseAuditConfig({ sinks: [raw] }, "audit.test").sinks[0]!, i);
import { makeEnv } from "./audit-helpers.js";
import { opensslRequest } from "./helpers/tls.js";

/** RFC 5424: `<PRI>1 TS HOST APP PROCID MSGID [SD] MSG` */
const RFC5424 =
  /^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\d+) (\S+) \[zt@32473 seq="(\d+)" id="([^"]+)" outcome="([a-z-]+)"\] (.*)$/s;

/** Splits an RFC 6587 octet-counted stream into messages. */
function octetFrames(buf: Buffer): { frames: string[]; rest: Buffer } {
  const frames: string[] = [];
  let b = buf;
  while (true) {
    const sp = b.indexOf(0x20);
    if (sp < 0) break;
    const len = Number(b.subarray(0, sp).toString());
    if (b.length < sp + 1 + len) break;
    frames.push(b.subarray(sp + 1, sp + 1 + len).toString());
    b = b.subarray(sp + 1 + len);
  }
  return { frames, rest: b };
}

describe("audit sinks against real local receivers", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(n: number): Promise<{ store: Store; clock: ManualClock; dir: string }> {
    const t = makeEnv();
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const log = new AuditLog(store, { clock });
    for (let i = 1; i <= n; i++) {
      log.record({
        kind: i % 2 ? "decision" : "login",
        outcome: i % 3 ? "allow" : "deny",
        subject: "alice",
        sourceIp: "192.0.2.1",
        route: "app",
        reason: 'quote"and]bracket',
        data: { i },
      });
      clock.advance(1);
    }
    await log.close();
    return { store, clock, dir: t.dir };
  }

  it("syslog over UDP: one RFC 5424 datagram per event", async () => {
    const { store, clock } = await setup(5);
    const server = createSocket("udp4");
    const got: string[] = [];
    server.on("message", (m) => got.push(m.toString()));
    await new Promise<void>((r) => server.bind(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = server.address().port;
    const runner = new SinkRunner({
      store,
      clock,
      sink: buildSink(
        {
          type: "syslog",
          host: "127.0.0.1",
          port,
          protocol: "udp",
          app_name: "zt",
          max_lag: 1000,
          batch: 2,
          format: "jsonl",
        },
        0,
      ),
      batch: 2,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => runner.stop());
    expect(await runner.runOnce()).toBe(5);
    while (got.length < 5) await new Promise((r) => setImmediate(r));
    const parsed = got.map((g) => RFC5424.exec(g));
    expect(parsed.every(Boolean)).toBe(true);
    const first = parsed[0]!;
    expect(Number(first[1])).toBe(13 * 8 + 6); // log audit, info
    expect(first[4]).toBe("zt");
    expect(first[6]).toBe("decision");
    expect(parsed.map((p) => Number(p![7])).sort()).toEqual([1, 2, 3, 4, 5]);
    const third = parsed.find((p) => p![7] === "3")!;
    expect(Number(third[1])).toBe(13 * 8 + 5); // deny → notice
    expect(JSON.parse(third[10]!)).toMatchObject({
      seq: 3,
      reason: 'quote"and]bracket',
      data: { i: 3 },
    });
  });

  it("syslog over TCP with octet counting; a dead receiver loses nothing and blocks nobody", async () => {
    const { store, clock } = await setup(7);
    const frames: string[] = [];
    let pending: Buffer = Buffer.alloc(0);
    const sockets = new Set<import("node:net").Socket>();
    const server: TcpServer = createTcpServer((sock) => {
      sockets.add(sock);
      sock.on("data", (d: Buffer) => {
        const r = octetFrames(Buffer.concat([pending, d]));
        pending = r.rest;
        frames.push(...r.frames);
      });
    });
    // Reserve a port, then stop listening: the sink meets a dead receiver first.
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const runner = new SinkRunner({
      store,
      clock,
      sink: buildSink(
        {
          type: "syslog",
          host: "127.0.0.1",
          port,
          protocol: "tcp",
          app_name: "zt-test",
          max_lag: 1000,
          batch: 3,
          format: "ocsf",
        },
        0,
      ),
      batch: 3,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => runner.stop());
    await expect(runner.runOnce()).rejects.toThrow(/ECONNREFUSED/);
    // Writers are unaffected while the sink is down.
    const log = new AuditLog(store, { clock });
    log.record({ kind: "decision", outcome: "allow" });
    await log.close();
    // Within the backoff nothing is attempted; after it, delivery resumes where it stopped.
    expect(await runner.runOnce()).toBe(0);
    await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    );
    clock.advance(60_000);
    expect(await runner.runOnce()).toBe(8);
    while (frames.length < 8) await new Promise((r) => setTimeout(r, 5));
    const seqs = frames.map((f) => Number(RFC5424.exec(f)![7]));
    expect(seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const ocsf = JSON.parse(RFC5424.exec(frames[0]!)![10]!) as Record<string, unknown>;
    expect(ocsf).toMatchObject({ class_uid: 4001, metadata: { sequence: 1 } });
    const cur = await store.db
      .selectFrom("audit_cursors")
      .selectAll()
      .where("name", "=", "sink:syslog")
      .executeTakeFirstOrThrow();
    expect(Number(cur.seq)).toBe(8);
  });

  it("syslog over TLS (RFC 5425) verifies the receiver against ca_file", async () => {
    const { store, clock, dir } = await setup(3);
    const key = join(dir, "syslog.key");
    const cert = join(dir, "syslog.crt");
    opensslRequest({ keyOut: key, out: cert, subj: "/CN=syslog.test", san: "IP:127.0.0.1" });
    const frames: string[] = [];
    const sockets = new Set<import("node:net").Socket>();
    let pending: Buffer = Buffer.alloc(0);
    const server = createTlsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (sock) => {
      sockets.add(sock);
      sock.on("data", (d: Buffer) => {
        const r = octetFrames(Buffer.concat([pending, d]));
        pending = r.rest;
        frames.push(...r.frames);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    );
    const port = (server.address() as AddressInfo).port;
    const mk = (ca: string | undefined, name: string) =>
      new SinkRunner({
        store,
        clock,
        sink: buildSink(
          {
            type: "syslog",
            name,
            host: "127.0.0.1",
            port,
            protocol: "tls",
            ...(ca ? { ca_file: ca } : {}),
            start_at: "beginning",
          },
          0,
        ),
        batch: 10,
        maxLag: 1000,
        pollIntervalMs: 60_000,
        startAt: "beginning",
      });
    // Without the CA the self-signed receiver is refused (nothing is sent in clear).
    const untrusted = mk(undefined, "untrusted");
    cleanups.push(() => untrusted.stop());
    await expect(untrusted.runOnce()).rejects.toThrow(/self-signed|self signed/);
    const trusted = mk(cert, "trusted");
    cleanups.push(() => trusted.stop());
    expect(await trusted.runOnce()).toBe(3);
    while (frames.length < 3) await new Promise((r) => setTimeout(r, 5));
    expect(frames.map((f) => Number(RFC5424.exec(f)![7]))).toEqual([1, 2, 3]);
  });

  it("Loki push API: streams labelled by kind/outcome, ns timestamps; kinds filter", async () => {
    const { store, clock } = await setup(6);
    const pushes: {
      path: string;
      body: { streams: { stream: Record<string, string>; values: [string, string][] }[] };
    }[] = [];
    let status = 204;
    const server: HttpServer = createHttpServer((req, res) => {
      let text = "";
      req.on("data", (d: Buffer) => (text += d.toString()));
      req.on("end", () => {
        if (status === 204)
          pushes.push({
            path: req.url ?? "",
            body: JSON.parse(text) as (typeof pushes)[0]["body"],
          });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const runner = new SinkRunner({
      store,
      clock,
      sink: buildSink(
        {
          type: "loki",
          url,
          labels: { job: "zt", env: "test" },
          max_lag: 1000,
          batch: 100,
          format: "jsonl",
        },
        0,
      ),
      batch: 100,
      maxLag: 1000,
      kinds: ["decision"],
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => runner.stop());
    status = 500;
    await expect(runner.runOnce()).rejects.toThrow(/answered 500/);
    status = 204;
    clock.advance(60_000);
    expect(await runner.runOnce()).toBe(3);
    expect(pushes).toHaveLength(1);
    expect(pushes[0]!.path).toBe("/loki/api/v1/push");
    const streams = pushes[0]!.body.streams;
    expect(
      streams.map((s) => s.stream).sort((a, b) => a["outcome"]!.localeCompare(b["outcome"]!)),
    ).toEqual([
      { job: "zt", env: "test", kind: "decision", outcome: "allow" },
      { job: "zt", env: "test", kind: "decision", outcome: "deny" },
    ]);
    const all = streams.flatMap((s) => s.values);
    expect(all).toHaveLength(3);
    for (const [ns, line] of all) {
      const rec = JSON.parse(line) as { ts: number; kind: string };
      expect(rec.kind).toBe("decision");
      expect(BigInt(ns) / 1_000_000n).toBe(BigInt(rec.ts));
    }
  });

  it("a sink too far behind skips ahead and counts the dropped events", async () => {
    const { store, clock, dir } = await setup(50);
    const path = join(dir, "audit.jsonl");
    // A sink that starts from the beginning is 50 events behind, more than max_lag.
    const fresh = new SinkRunner({
      store,
      clock,
      sink: buildSink(
        { type: "file", path, max_lag: 10, batch: 100, format: "jsonl", start_at: "beginning" },
        0,
      ),
      batch: 100,
      maxLag: 10,
      pollIntervalMs: 60_000,
      startAt: "beginning",
    });
    cleanups.push(() => fresh.stop());
    expect(await fresh.runOnce()).toBe(10);
    const lines = readFileSync(path, "utf8")
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { seq: number }).seq);
    expect(lines).toEqual([41, 42, 43, 44, 45, 46, 47, 48, 49, 50]);
    const cur = await store.db
      .selectFrom("audit_cursors")
      .selectAll()
      .where("name", "=", "sink:file")
      .executeTakeFirstOrThrow();
    expect(Number(cur.dropped)).toBe(40);
    expect(await metrics.getSingleMetricAsString("zt_audit_dropped_events_total")).toContain(
      'zt_audit_dropped_events_total{sink="file"} 40',
    );
  });

  /** A webhook receiver answering each POST with `answer(seqs)`; records what it took. */
  async function webhookReceiver(answer: (seqs: number[]) => number) {
    const taken: number[] = [];
    let posts = 0;
    const server: HttpServer = createHttpServer((req, res) => {
      let text = "";
      req.on("data", (d: Buffer) => (text += d.toString()));
      req.on("end", () => {
        posts++;
        const seqs = (JSON.parse(text) as { events: { seq: number }[] }).events.map((e) => e.seq);
        const status = answer(seqs);
        if (status < 300) taken.push(...seqs);
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    return { url, taken, posts: () => posts };
  }

  function webhookRunner(store: Store, clock: ManualClock, url: string, errors: string[]) {
    const runner = new SinkRunner({
      store,
      clock,
      sink: buildSink(
        { type: "webhook", name: "siem", url, batch: 100, max_lag: 1000, format: "jsonl" },
        0,
      ),
      batch: 100,
      maxLag: 1000,
      pollIntervalMs: 60_000,
      startAt: "beginning",
      onError: (_n, e) => errors.push((e as Error).message),
    });
    cleanups.push(() => runner.stop());
    return runner;
  }

  async function droppedOf(store: Store, name: string): Promise<number> {
    const cur = await store.db
      .selectFrom("audit_cursors")
      .selectAll()
      .where("name", "=", name)
      .executeTakeFirstOrThrow();
    return Number(cur.dropped);
  }

  it("a receiver refusing some events (400) drops only those, not the batch or the sink", async () => {
    const { store, clock } = await setup(20);
    const poison = new Set([5, 13]);
    const rx = await webhookReceiver((seqs) => (seqs.some((s) => poison.has(s)) ? 400 : 204));
    const errors: string[] = [];
    const runner = webhookRunner(store, clock, rx.url, errors);
    expect(await runner.runOnce()).toBe(18);
    expect(rx.taken.sort((a, b) => a - b)).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1).filter((s) => !poison.has(s)),
    );
    expect(await droppedOf(store, "sink:siem")).toBe(2);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/answered 400: the receiver refuses event seq 5 /);
    expect(errors[1]).toMatch(/event seq 13 /);
    expect(await metrics.getSingleMetricAsString("zt_audit_dropped_events_total")).toContain(
      'zt_audit_dropped_events_total{sink="siem"} 2',
    );
    // Nothing is left behind: the next run has nothing to send.
    expect(await runner.runOnce()).toBe(0);
  });

  it("a batch too large for the receiver (413) is delivered in halves, nothing dropped", async () => {
    const { store, clock } = await setup(20);
    const rx = await webhookReceiver((seqs) => (seqs.length > 6 ? 413 : 204));
    const errors: string[] = [];
    const runner = webhookRunner(store, clock, rx.url, errors);
    expect(await runner.runOnce()).toBe(20);
    expect(rx.taken.sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(errors).toEqual([]);
    expect(await droppedOf(store, "sink:siem")).toBe(0);
  });

  it("a receiver refusing every event (400) drops none: the batch is retried until it is fixed", async () => {
    const { store, clock } = await setup(40);
    let status = 400;
    const rx = await webhookReceiver(() => status);
    const errors: string[] = [];
    const runner = webhookRunner(store, clock, rx.url, errors);
    await expect(runner.runOnce()).rejects.toThrow(/refuses every event/);
    // The probe stops early: far fewer requests than splitting 40 events down to one each.
    expect(rx.posts()).toBeLessThan(20);
    expect(await droppedOf(store, "sink:siem")).toBe(0);
    // Fixed, the receiver gets every event: none was dropped meanwhile.
    status = 204;
    clock.advance(60_000);
    expect(await runner.runOnce()).toBe(40);
    expect(rx.taken).toHaveLength(40);
    expect(await droppedOf(store, "sink:siem")).toBe(0);
  });

  it("a small batch whose every event is refused is kept, not dropped", async () => {
    const { store, clock } = await setup(3);
    const rx = await webhookReceiver(() => 422);
    const runner = webhookRunner(store, clock, rx.url, []);
    await expect(runner.runOnce()).rejects.toThrow(
      /answered 422: the receiver refuses every event/,
    );
    expect(await droppedOf(store, "sink:siem")).toBe(0);
    expect(rx.taken).toEqual([]);
  });
});
