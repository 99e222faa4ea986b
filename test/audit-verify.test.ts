import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { loadMasterKey, KeyStore } from "../src/keys/index.js";
import {
  AuditLog,
  Checkpointer,
  fileWitness,
  verifyAuditLog,
  chainHash,
  GENESIS_HASH,
} from "../src/audit/index.js";
import { ensureBuilt, makeEnv, runZt, type TestEnv } from "./audit-helpers.js";

/** Writes `n` events (and optionally a checkpoint at the end) to the env's database. */
async function seed(
  t: TestEnv,
  n: number,
  opts: { checkpointAt?: number[]; witness?: string } = {},
): Promise<void> {
  const clock = new ManualClock();
  const store = await openStore({ dataDir: t.dataDir });
  const box = loadMasterKey({ dataDir: t.dataDir, envValue: t.env["ZT_MASTER_KEY"] });
  const keys = new KeyStore(store, box, clock);
  const log = new AuditLog(store, { clock });
  const cp = new Checkpointer({
    store,
    keys,
    clock,
    origin: "audit.test/zt/audit",
    every: 1_000_000,
    intervalMs: 3_600_000,
    witnesses: opts.witness ? [fileWitness(opts.witness)] : [],
  });
  for (let i = 1; i <= n; i++) {
    clock.advance(1000);
    log.record({
      kind: i % 3 === 0 ? "login" : "decision",
      outcome: i % 5 === 0 ? "deny" : "allow",
      subject: `user${i % 7}`,
      sourceIp: `10.0.0.${i % 250}`,
      route: "app",
      action: "GET",
      decisionId: `dec_${i}`,
      policies: ["p1"],
      reason: i % 5 === 0 ? "no-policy" : "policy-allow",
      data: { i },
    });
    if (opts.checkpointAt?.includes(i)) {
      await log.flush();
      await cp.checkpointNow();
    }
  }
  await log.close();
  await store.close();
}

function tamper(t: TestEnv, fn: (db: Database.Database) => void): void {
  const db = new Database(join(t.dataDir, "zt.db"));
  try {
    fn(db);
  } finally {
    db.close();
  }
}

describe("zt audit verify (real CLI against a tampered SQLite file)", () => {
  beforeAll(() => ensureBuilt(), 300_000);
  let t: TestEnv;
  afterEach(() => undefined);

  it("passes on an untouched log, checking hashes and checkpoints", async () => {
    t = makeEnv();
    await seed(t, 120, { checkpointAt: [50, 100] });
    const r = await runZt(t, ["audit", "verify", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as {
      ok: boolean;
      checked: number;
      checkpointsChecked: number;
    };
    expect(res).toMatchObject({ ok: true, checked: 120, checkpointsChecked: 2 });
  });

  it("names the first altered event", async () => {
    t = makeEnv();
    await seed(t, 100);
    tamper(t, (db) =>
      db
        .prepare(
          "UPDATE audit_events SET outcome = 'allow', reason = 'policy-allow' WHERE seq = 45",
        )
        .run(),
    );
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("FAILED at seq 45: altered");
  });

  it("names a deleted event as missing", async () => {
    t = makeEnv();
    await seed(t, 100);
    tamper(t, (db) => db.prepare("DELETE FROM audit_events WHERE seq IN (61, 62)").run());
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("FAILED at seq 61: missing");
  });

  it("names reordered events", async () => {
    t = makeEnv();
    await seed(t, 100);
    tamper(t, (db) => {
      db.prepare("UPDATE audit_events SET seq = -1 WHERE seq = 30").run();
      db.prepare("UPDATE audit_events SET seq = 30 WHERE seq = 31").run();
      db.prepare("UPDATE audit_events SET seq = 31 WHERE seq = -1").run();
    });
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("FAILED at seq 30: reordered");
  });

  it("detects truncation past a stored checkpoint", async () => {
    t = makeEnv();
    await seed(t, 100, { checkpointAt: [90] });
    tamper(t, (db) => db.prepare("DELETE FROM audit_events WHERE seq > 80").run());
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("FAILED at seq 81: truncated");
  });

  it("detects truncation with only the witness file left (checkpoints deleted too)", async () => {
    t = makeEnv();
    const witness = join(t.dir, "witness.txt");
    await seed(t, 100, { checkpointAt: [100], witness });
    expect(readFileSync(witness, "utf8")).toMatch(
      /^audit\.test\/zt\/audit\n100\n[A-Za-z0-9+/=]{44}\n\n\u2014 /,
    );
    const key = join(t.dir, "audit.pub");
    const pk = await runZt(t, ["audit", "public-key"]);
    expect(pk.code).toBe(0);
    writeFileSync(key, pk.stdout);
    tamper(t, (db) => {
      db.prepare("DELETE FROM audit_events WHERE seq > 70").run();
      db.prepare("DELETE FROM audit_checkpoints").run();
    });
    // Without the witness the shortened chain is self-consistent …
    expect((await runZt(t, ["audit", "verify"])).code).toBe(0);
    // … the witness's signed checkpoint shows the truncation.
    const r = await runZt(t, ["audit", "verify", "--checkpoint", witness, "--key", key]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("FAILED at seq 71: truncated");
  });

  it("detects a rewritten and fully re-hashed tail through the signed checkpoint", async () => {
    t = makeEnv();
    await seed(t, 100, { checkpointAt: [40, 80] });
    tamper(t, (db) => {
      db.prepare("UPDATE audit_events SET subject = 'mallory' WHERE seq = 60").run();
      const rows = db
        .prepare("SELECT * FROM audit_events WHERE seq >= 60 ORDER BY seq")
        .all() as Parameters<typeof chainHash>[1][];
      let prev = (
        db.prepare("SELECT hash FROM audit_events WHERE seq = 59").get() as { hash: string }
      ).hash;
      const upd = db.prepare("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?");
      for (const row of rows) {
        const h = chainHash(prev, row);
        upd.run(prev, h, row.seq);
        prev = h;
      }
    });
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("FAILED at seq 41: checkpoint-mismatch");
  });

  it("refuses a forged checkpoint signature", async () => {
    t = makeEnv();
    const witness = join(t.dir, "witness.txt");
    await seed(t, 20, { checkpointAt: [20], witness });
    const note = readFileSync(witness, "utf8").replace("\n20\n", "\n19\n");
    writeFileSync(witness, note);
    const r = await runZt(t, ["audit", "verify", "--checkpoint", witness]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("checkpoint-signature");
  });

  it("--from starts mid-chain", async () => {
    t = makeEnv();
    await seed(t, 50);
    tamper(t, (db) => db.prepare("UPDATE audit_events SET data = '{}' WHERE seq = 10").run());
    const full = await runZt(t, ["audit", "verify"]);
    expect(full.stdout).toContain("FAILED at seq 10");
    const r = await runZt(t, ["audit", "verify", "--from", "11", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, fromSeq: 11, checked: 40 });
  });

  it("a --from past the end of the log says where the log ends, instead of reporting the event before it as missing", async () => {
    t = makeEnv();
    await seed(t, 5);
    const last = await runZt(t, ["audit", "verify", "--json"]);
    const lastSeq = (JSON.parse(last.stdout) as { lastSeq: number }).lastSeq;
    for (const from of [lastSeq + 1, 500]) {
      for (const json of [[], ["--json"]]) {
        const r = await runZt(t, ["audit", "verify", "--from", String(from), ...json]);
        expect(r.stderr).toBe(
          `zt: error ZT_USAGE: --from ${from} is past the end of the audit log (last sequence ${lastSeq})\n`,
        );
        expect(r.code).toBe(64);
        expect(r.stdout).toBe("");
      }
    }
    // The last event itself is still a start point.
    const r = await runZt(t, ["audit", "verify", "--from", String(lastSeq), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, fromSeq: lastSeq, checked: 1 });
  });

  it("rejects a bad --from with a usage error, not a stack trace", async () => {
    t = makeEnv();
    await seed(t, 1);
    const r = await runZt(t, ["audit", "verify", "--from", "abc"]);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/^zt: error ZT_USAGE: --from: expected a positive integer/);
  });
});

describe("chain (in process)", () => {
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  it("links each event to the previous one, starting from the genesis hash", async () => {
    const t = makeEnv();
    store = await openStore({ dataDir: t.dataDir });
    const log = new AuditLog(store, { clock: new ManualClock() });
    log.record({ kind: "a", outcome: "info" });
    log.record({
      kind: "b",
      outcome: "info",
      data: { password: "hunter2", nested: { totp_code: "123456" }, code: "ZT_X" },
    });
    await log.flush();
    const rows = store
      .sqlite!.prepare("SELECT * FROM audit_events ORDER BY seq")
      .all() as (Parameters<typeof chainHash>[1] & { prev_hash: string; hash: string })[];
    expect(rows.map((r) => r.seq)).toEqual([1, 2]);
    expect(rows[0]!.prev_hash).toBe(GENESIS_HASH);
    expect(rows[1]!.prev_hash).toBe(rows[0]!.hash);
    expect(rows[1]!.hash).toBe(chainHash(rows[0]!.hash, rows[1]!));
    // Secrets never enter the log; an error code does.
    expect(JSON.parse(rows[1]!.data)).toEqual({
      password: "[redacted]",
      nested: { totp_code: "[redacted]" },
      code: "ZT_X",
    });
    expect((await verifyAuditLog(store)).ok).toBe(true);
    await log.close();
  });

  it("keeps one gap-free chain with several writers on one database", async () => {
    const t = makeEnv();
    store = await openStore({ dataDir: t.dataDir });
    const other = await openStore({ dataDir: t.dataDir });
    const a = new AuditLog(store, { clock: new ManualClock(), maxBatch: 7 });
    const b = new AuditLog(other, { clock: new ManualClock(), maxBatch: 11 });
    for (let i = 0; i < 500; i++) {
      a.record({ kind: "a", outcome: "info", data: { i } });
      b.record({ kind: "b", outcome: "info", data: { i } });
      if (i % 50 === 0) await Promise.all([a.flush(), b.flush()]);
    }
    await Promise.all([a.close(), b.close()]);
    await other.close();
    const res = await verifyAuditLog(store);
    expect(res).toMatchObject({ ok: true, checked: 1000, lastSeq: 1000 });
  });
});
