import { afterEach, describe, expect, it } from "vitest";
import { join } from "node:path";
import Database from "better-sqlite3";
import fc from "fast-check";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import {
  AuditLog,
  chainHash,
  verifyAuditLog,
  type AuditInput,
  type AuditRowChained,
} from "../src/audit/index.js";
import { makeEnv } from "./audit-helpers.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function newStore(): Promise<{ store: Store; file: string }> {
  const t = makeEnv();
  const store = await openStore({ dataDir: t.dataDir });
  cleanups.push(() => store.close());
  return { store, file: join(t.dataDir, "zt.db") };
}

function newLog(store: Store, extra: Partial<ConstructorParameters<typeof AuditLog>[1]> = {}) {
  const log = new AuditLog(store, { clock: new ManualClock(), ...extra });
  cleanups.push(() => log.close().catch(() => undefined));
  return log;
}

/** Collects what the written listeners receive, checking it arrives in sequence order. */
function collect(log: AuditLog): AuditRowChained[] {
  const got: AuditRowChained[] = [];
  log.addWrittenListener((rows) => {
    for (const r of rows) {
      if (r.seq !== (got[got.length - 1]?.seq ?? 0) + 1)
        throw new Error(`seq ${r.seq} out of order`);
      got.push({ ...r });
    }
  });
  return got;
}

function ids(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare("SELECT id FROM audit_events ORDER BY seq").pluck().all() as string[];
  } finally {
    db.close();
  }
}

const decision = (i: number): AuditInput => ({
  kind: "decision",
  outcome: i % 5 === 0 ? "deny" : "allow",
  subject: `user${i % 17}`,
  sourceIp: "10.0.0.1",
  route: "app",
  action: "GET",
  decisionId: `dec_${i}`,
  policies: ["allow-engineers"],
  reason: "policy-allow",
  data: { i },
});

describe("AuditLog writer thread (SQLite)", () => {
  it("chains exactly as audit-chain.ts does, for any record (property; thread and inline)", async () => {
    const text = fc.string({ unit: "binary", maxLength: 12 }); // includes U+0000, surrogates
    const opt = fc.option(text, { nil: undefined });
    const input = fc.record({
      kind: text.filter((s) => s.length > 0),
      outcome: fc.constantFrom("allow", "deny", "info", "success", "failure", "step-up"),
      subject: opt,
      sourceIp: opt,
      route: opt,
      action: opt,
      decisionId: opt,
      policies: fc.option(fc.array(text, { maxLength: 3 }), { nil: undefined }),
      reason: opt,
      data: fc.option(fc.dictionary(text, fc.oneof(text, fc.integer(), fc.boolean())), {
        nil: undefined,
      }),
    }) as fc.Arbitrary<AuditInput>;
    const inputs = fc.sample(input, { numRuns: 400, seed: 7 });
    // Larger than the appender's initial hashing buffer, with 2-, 3- and 4-byte UTF-8.
    inputs.splice(200, 0, {
      kind: "big",
      outcome: "info",
      data: { blob: "é€𝄞\u0000".repeat(20_000) },
    });
    for (const writerThread of [true, false]) {
      const { store } = await newStore();
      const clock = new ManualClock();
      const log = new AuditLog(store, { clock, writerThread, maxBatch: 64 });
      cleanups.push(() => log.close().catch(() => undefined));
      expect(log.writerMode).toBe(writerThread ? "thread" : "inline");
      const got = collect(log);
      inputs.forEach((x, i) => {
        clock.advance(i % 3);
        log.record(x);
      });
      await log.flush();
      expect(got).toHaveLength(inputs.length);
      let prev = "0".repeat(64);
      for (const r of got) {
        expect(r.prev_hash).toBe(prev);
        expect(r.hash).toBe(chainHash(prev, r));
        prev = r.hash;
      }
      // And the verifier, reading the rows back, agrees with what the listeners saw.
      expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: inputs.length });
    }
  });

  it("a batch packed into several strings (over 96 KiB) is stored record for record (thread and inline)", async () => {
    // Sizes around the packing chunk: small records, ones that fill a chunk, one larger than a chunk.
    const sizes = [10, 50_000, 40_000, 30_000, 120_000, 5, 96 * 1024, 1, 70_000, 0];
    const inputs: AuditInput[] = [];
    for (let i = 0; i < 60; i++) {
      const n = sizes[i % sizes.length]!;
      inputs.push({ ...decision(i), data: { i, blob: "é𝄞x".repeat(Math.ceil(n / 4)) } });
      if (i % 7 === 0) inputs.push({ kind: "note", outcome: "info", data: { i } });
    }
    for (const writerThread of [true, false]) {
      const { store, file } = await newStore();
      const clock = new ManualClock();
      const log = new AuditLog(store, { clock, writerThread, maxBatch: 10_000 });
      cleanups.push(() => log.close().catch(() => undefined));
      const got = collect(log);
      const recorded = inputs.map((x) => log.record(x));
      await log.flush();
      expect(got.map((r) => r.id)).toEqual(recorded);
      expect(ids(file)).toEqual(recorded);
      got.forEach((r, i) => {
        expect(JSON.parse(r.data)).toEqual(inputs[i]!.data);
        expect(r.subject).toBe(inputs[i]!.subject ?? null);
        expect(r.decision_id).toBe(inputs[i]!.decisionId ?? null);
      });
      expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: inputs.length });
    }
  });

  it("keeps the caller's event loop turning while a large batch is written (inline does not)", async () => {
    const N = 40_000;
    const ticksDuringFlush = async (writerThread: boolean) => {
      const { store } = await newStore();
      const log = newLog(store, { writerThread, maxBatch: N + 1 });
      for (let i = 0; i < N; i++) log.record(decision(i));
      let ticks = 0;
      let done = false;
      const spin = () => {
        if (done) return;
        ticks++;
        setImmediate(spin);
      };
      setImmediate(spin);
      await log.flush();
      done = true;
      expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: N });
      return { ticks, mode: log.writerMode };
    };
    const inline = await ticksDuringFlush(false);
    const thread = await ticksDuringFlush(true);
    expect(inline.mode).toBe("inline");
    expect(thread.mode).toBe("thread");
    // Inline, the whole append (8 transactions, hashing, fsyncs) runs in one turn of the
    // loop; on the writer thread the loop keeps turning until the commit is acknowledged.
    expect(inline.ticks).toBeLessThanOrEqual(2);
    expect(thread.ticks).toBeGreaterThan(50);
    expect(thread.ticks).toBeGreaterThan(20 * (inline.ticks + 1));
  });

  it("a writer thread dying after its commit, before acknowledging: ZT_STORE, then the retry recognises the batch (no loss, no duplicate)", async () => {
    const { store, file } = await newStore();
    const log = newLog(store, { writerThreadTestHooks: true, maxBatch: 10_000 });
    const got = collect(log);
    const first: string[] = [];
    for (let i = 0; i < 300; i++) first.push(log.record(decision(i)));
    await log.flush();
    log.crashWriterThreadAfterNextCommit();
    const second: string[] = [];
    for (let i = 300; i < 700; i++) second.push(log.record(decision(i)));
    const err = await log.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ZtError);
    expect((err as ZtError).code).toBe("ZT_STORE");
    expect((err as ZtError).message).toMatch(/writer thread exited/);
    expect(log.pending).toBe(400); // kept for the retry
    expect(ids(file)).toEqual([...first, ...second]); // … although they were committed
    // The restarted thread finds them stored and reports their chain; new records follow.
    const third: string[] = [];
    for (let i = 700; i < 750; i++) third.push(log.record(decision(i)));
    await log.flush();
    expect(log.writerMode).toBe("thread");
    expect(log.pending).toBe(0);
    expect(ids(file)).toEqual([...first, ...second, ...third]);
    expect(got.map((r) => r.id)).toEqual([...first, ...second, ...third]);
    expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: 750 });
  });

  it("after repeated writer thread deaths it writes inline, losing nothing", async () => {
    const { store, file } = await newStore();
    const log = newLog(store, { writerThreadTestHooks: true, maxBatch: 10_000 });
    const got = collect(log);
    const all: string[] = [];
    for (let round = 0; round < 3; round++) {
      expect(log.writerMode).toBe("thread");
      log.crashWriterThreadAfterNextCommit();
      for (let i = 0; i < 20; i++) all.push(log.record(decision(i)));
      await expect(log.flush()).rejects.toMatchObject({ code: "ZT_STORE" });
    }
    expect(log.writerMode).toBe("inline");
    for (let i = 0; i < 20; i++) all.push(log.record(decision(i)));
    await log.flush();
    expect(ids(file)).toEqual(all);
    expect(got.map((r) => r.id)).toEqual(all);
    expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: 80 });
  });

  it("a writer thread that cannot open the database: appends run inline, flush() resolves, nothing lost", async () => {
    const { store, file } = await newStore();
    // The thread opens `store.file`; point it at a folder that does not exist while the
    // store's own connection stays valid (as when the file is not reachable from a thread).
    const log = newLog({ ...store, file: join(file, "..", "missing", "zt.db") });
    expect(log.writerMode).toBe("thread");
    const got = collect(log);
    const a = [log.record(decision(1)), log.record(decision(2))];
    await log.flush();
    expect(log.writerMode).toBe("inline");
    const b = [log.record(decision(3))];
    await log.flush();
    expect(ids(file)).toEqual([...a, ...b]);
    expect(got.map((r) => r.id)).toEqual([...a, ...b]);
  });

  it("a locked database: flush rejects with ZT_STORE and keeps the records; they are written once the lock goes", async () => {
    const { store, file } = await newStore();
    store.sqlite!.pragma("busy_timeout = 100"); // the writer thread takes the store's timeout
    const log = newLog(store, { maxBatch: 10_000 });
    const got = collect(log);
    const a = [log.record(decision(1)), log.record(decision(2))];
    await log.flush();
    // Another writer (a separate connection, as another process would be) holds the lock.
    const other = new Database(file);
    other.exec("BEGIN IMMEDIATE");
    const b = [log.record(decision(3)), log.record(decision(4)), log.record(decision(5))];
    await expect(log.flush()).rejects.toMatchObject({
      code: "ZT_STORE",
      message: expect.stringMatching(/SQLITE_BUSY|locked/),
    });
    expect(log.pending).toBe(3);
    other.exec("ROLLBACK");
    other.close();
    const c = [log.record(decision(6))];
    await log.flush();
    expect(ids(file)).toEqual([...a, ...b, ...c]);
    expect(got.map((r) => r.id)).toEqual([...a, ...b, ...c]);
  });

  it("several writers (threads and inline) on one file keep a single gap-free chain", async () => {
    const { store, file } = await newStore();
    const second = await openStore({ dataDir: join(file, "..") });
    cleanups.push(() => second.close());
    const logs = [
      newLog(store, { maxBatch: 37 }),
      newLog(second, { maxBatch: 53 }),
      newLog(second, { maxBatch: 41, writerThread: false }),
    ];
    const flushes: Promise<void>[] = [];
    for (let i = 0; i < 3_000; i++) {
      logs[i % 3]!.record(decision(i));
      if (i % 500 === 499) flushes.push(...logs.map((l) => l.flush()));
    }
    await Promise.all(flushes);
    await Promise.all(logs.map((l) => l.flush()));
    expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: 3_000, lastSeq: 3_000 });
    expect(new Set(ids(file)).size).toBe(3_000);
  });

  it("close() flushes and ends the writer thread; a log that never started one writes inline", async () => {
    const { store, file } = await newStore();
    const log = new AuditLog(store, { clock: new ManualClock() });
    const a = log.record(decision(1));
    await log.flush(); // starts the thread
    const b = log.record(decision(2));
    await log.close();
    expect(log.writerMode).toBe("thread");
    expect(ids(file)).toEqual([a, b]);
    expect(log.pending).toBe(0);

    // A short-lived command: records, then closes — no thread is started for it.
    const short = new AuditLog(store, { clock: new ManualClock() });
    const c = short.record(decision(3));
    await short.close();
    expect(short.writerMode).toBe("inline");
    expect(ids(file)).toEqual([a, b, c]);
  });
});
