/**
 * The audit writer, against the real stores: text every engine stores as hashed (lone
 * surrogates, U+0000), and `whenDurable()` — the group-commit wait behind
 * `audit.durable_before_forward`.
 */
import { afterEach, describe, expect, it } from "vitest";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { isZtError } from "../src/core/errors.js";
import {
  AuditLog,
  durableBeforeForward,
  parseAuditConfig,
  verifyAuditLog,
  type AuditInput,
  type AuditLogOptions,
  type AuditRowChained,
} from "../src/audit/index.js";
import { makeEnv } from "./audit-helpers.js";
import { postgresAvailable, postgresEngine } from "./store-fixture.js";

const PG = await postgresAvailable();
type Mode = "thread" | "inline" | "postgres";
const MODES: Mode[] = PG ? ["thread", "inline", "postgres"] : ["thread", "inline"];

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A fresh store for the mode and an AuditLog on it (only `whenDurable()` or `flush()` write). */
async function openLog(
  mode: Mode,
  extra: Partial<AuditLogOptions> = {},
  busyTimeoutMs?: number,
): Promise<{ store: Store; log: AuditLog; file: string }> {
  let store: Store;
  let file = "";
  if (mode === "postgres") {
    const target = await postgresEngine.fresh();
    cleanups.push(() => target.cleanup());
    store = await openStore(target.storeOptions);
  } else {
    const t = makeEnv();
    store = await openStore({ dataDir: t.dataDir });
    file = join(t.dataDir, "zt.db");
    // The writer thread takes the store's busy_timeout when it starts.
    if (busyTimeoutMs !== undefined) store.sqlite!.pragma(`busy_timeout = ${busyTimeoutMs}`);
  }
  cleanups.push(() => store.close());
  const log = new AuditLog(store, {
    clock: new ManualClock(),
    writerThread: mode === "thread",
    // Neither the timer nor a full batch writes during a test: what is written, is
    // written because something asked for it.
    flushIntervalMs: 1e9,
    maxBatch: 100_000,
    ...extra,
  });
  cleanups.push(() => log.close().catch(() => undefined));
  expect(log.writerMode).toBe(mode);
  return { store, log, file };
}

async function storedRows(store: Store): Promise<AuditRowChained[]> {
  const rows = await store.db.selectFrom("audit_events").selectAll().orderBy("seq").execute();
  return rows.map((r) => ({ ...r, seq: Number(r.seq), ts: Number(r.ts) }) as AuditRowChained);
}

const decision = (i: number): AuditInput => ({
  kind: "decision",
  outcome: "allow",
  subject: `user${i}`,
  route: "app",
  action: "POST",
  decisionId: `dec_${i}`,
  reason: "policy-allow",
  data: { i },
});

describe("audit text is stored as it was hashed", () => {
  for (const mode of MODES) {
    it(`stops a lone UTF-16 surrogate in a plain column from failing verify of an untampered log (${mode})`, async () => {
      const { store, log } = await openLog(mode);
      const heard: AuditRowChained[] = [];
      log.addWrittenListener((rows) => heard.push(...rows.map((r) => ({ ...r }))));
      log.record({ kind: "session.revoke", outcome: "info", reason: "before" });
      log.record({
        kind: "kind\ud800",
        outcome: "info",
        subject: "alice\udfff",
        sourceIp: "\ud83d",
        route: "r\ud83d\ude00ok", // a valid pair stays as it is
        action: "GET\udc00",
        decisionId: "dec_\ud800x",
        reason: "oops \ud800 lone surrogate",
        data: { note: "json escapes it: \ud800" },
      });
      log.record({ kind: "session.revoke", outcome: "info", reason: "after" });
      await log.flush();
      expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: 3 });
      const stored = await storedRows(store);
      expect(heard).toEqual(stored); // the written listeners get what was stored and hashed
      const r = stored[1]!;
      expect([r.kind, r.subject, r.source_ip, r.route, r.action, r.decision_id, r.reason]).toEqual([
        "kind\ufffd",
        "alice\ufffd",
        "\ufffd",
        "r\ud83d\ude00ok",
        "GET\ufffd",
        "dec_\ufffdx",
        "oops \ufffd lone surrogate",
      ]);
    });

    it(`stops a record holding U+0000 from stalling the log at its head (${mode})`, async () => {
      const { store, log } = await openLog(mode);
      // PostgreSQL refuses U+0000 in text: such a batch used to be retried forever,
      // every flush failing and the PEP shedding every request once the backlog filled.
      log.record({ kind: "login", outcome: "failure", subject: "ev\u0000il", reason: "a\u0000b" });
      log.record({
        kind: "decision\u0000",
        outcome: "deny",
        route: "\u0000",
        data: { x: "\u0000" },
      });
      await log.flush();
      log.record(decision(1));
      await log.flush();
      expect(log.pending).toBe(0);
      expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: 3 });
      const rows = await storedRows(store);
      expect([rows[0]!.subject, rows[0]!.reason, rows[1]!.kind, rows[1]!.route]).toEqual([
        "ev\ufffdil",
        "a\ufffdb",
        "decision\ufffd",
        "\ufffd",
      ]);
      expect(JSON.parse(rows[1]!.data)).toEqual({ x: "\u0000" }); // JSON text keeps it, escaped
    });
  }
});

describe("AuditLog.whenDurable (audit.durable_before_forward)", () => {
  for (const mode of MODES) {
    it(`resolves only once the record is committed, without waiting for the timer (${mode})`, async () => {
      const { store, log } = await openLog(mode);
      const seen: string[] = [];
      log.addWrittenListener((rows) => seen.push(...rows.map((r) => r.id)));
      const id = log.record(decision(1));
      const stored = await log.whenDurable().then(() => storedRows(store));
      expect(seen).toEqual([id]);
      expect(stored.map((r) => r.id)).toEqual([id]);
      expect(log.pending).toBe(0);
      // Nothing recorded since: already durable.
      await log.whenDurable();
    });

    it(`many waiters in one turn share one commit (${mode})`, async () => {
      const { store, log } = await openLog(mode);
      const commits: number[] = [];
      log.addWrittenListener((rows) => commits.push(rows.length));
      const waits: Promise<void>[] = [];
      const ids: string[] = [];
      for (let i = 0; i < 200; i++) {
        ids.push(log.record(decision(i)));
        waits.push(log.whenDurable());
      }
      // Callers with nothing recorded in between get the same promise.
      expect(log.whenDurable()).toBe(waits[waits.length - 1]);
      await Promise.all(waits);
      expect(commits).toEqual([200]);
      expect((await storedRows(store)).map((r) => r.id)).toEqual(ids);
    });

    it(`waiters over many turns are all answered, in fewer commits than waiters (${mode})`, async () => {
      const { store, log } = await openLog(mode);
      let commits = 0;
      log.addWrittenListener(() => commits++);
      const waits: Promise<void>[] = [];
      const ids: string[] = [];
      for (let turn = 0; turn < 40; turn++) {
        for (let i = 0; i < 5; i++) {
          ids.push(log.record(decision(turn * 5 + i)));
          const committedBefore = commits;
          const id = ids[ids.length - 1]!;
          waits.push(
            log.whenDurable().then(async () => {
              // Answered after a commit that covers this record.
              expect(commits).toBeGreaterThan(committedBefore);
              expect((await storedRows(store)).some((r) => r.id === id)).toBe(true);
            }),
          );
        }
        await new Promise((r) => setImmediate(r));
      }
      await Promise.all(waits);
      expect(commits).toBeLessThan(waits.length);
      expect((await storedRows(store)).map((r) => r.id)).toEqual(ids);
      expect(await verifyAuditLog(store)).toMatchObject({ ok: true, checked: 200 });
    });
  }

  for (const mode of ["thread", "inline"] as const) {
    it(`rejects with ZT_STORE while the store cannot be written, keeping the record for later (${mode})`, async () => {
      const { store, log, file } = await openLog(mode, {}, 100);
      const a = log.record(decision(1));
      await log.whenDurable();
      const other = new Database(file);
      other.exec("BEGIN IMMEDIATE"); // another writer holds the lock
      const b = log.record(decision(2));
      const err = await log.whenDurable().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isZtError(err) && err.code).toBe("ZT_STORE");
      expect(log.pending).toBe(1);
      other.exec("ROLLBACK");
      other.close();
      const c = log.record(decision(3));
      await log.whenDurable();
      expect((await storedRows(store)).map((r) => r.id)).toEqual([a, b, c]);
    });
  }

  it("rejects with ZT_STORE when the record is dropped from a full backlog", async () => {
    const { log } = await openLog("inline", { maxBuffered: 3 });
    log.record(decision(1));
    const waiting = log.whenDurable();
    for (let i = 2; i <= 5; i++) log.record(decision(i)); // the oldest two are dropped
    await expect(waiting).rejects.toMatchObject({ code: "ZT_STORE" });
    await log.whenDurable(); // the newest three are still written
    expect(log.pending).toBe(0);
  });
});

describe("audit.durable_before_forward", () => {
  it("is off by default; unsafe-methods holds all but GET, HEAD, OPTIONS and TRACE", () => {
    expect(parseAuditConfig({}, "t.test").durable_before_forward).toBe(false);
    expect(durableBeforeForward(undefined)).toBeUndefined();
    expect(durableBeforeForward({ durable_before_forward: false })).toBeUndefined();
    const unsafe = durableBeforeForward({ durable_before_forward: "unsafe-methods" })!;
    const methods = ["GET", "HEAD", "OPTIONS", "TRACE", "POST", "PUT", "PATCH", "DELETE", "get"];
    expect(methods.map(unsafe)).toEqual([false, false, false, false, true, true, true, true, true]);
    const all = durableBeforeForward({ durable_before_forward: "all" })!;
    expect(methods.every(all)).toBe(true);
  });

  it("refuses any other value, naming the key", () => {
    for (const v of [true, "yes", "unsafe", 1]) {
      expect(() => durableBeforeForward({ durable_before_forward: v })).toThrow(
        /audit\.durable_before_forward: expected false, "unsafe-methods" or "all"/,
      );
    }
  });
});
