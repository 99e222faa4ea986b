import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openStore, type Store } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { loadMasterKey, KeyStore } from "../src/keys/index.js";
import { parseConfigText } from "../src/config/index.js";
import { openAppContext } from "../src/app/index.js";
import {
  AuditLog,
  CHAIN_BROKEN_RULE,
  Checkpointer,
  chainHash,
  fileWitness,
  INTERNAL_ONLY_WARNING,
  NO_WITNESS_WARNING,
  parseCheckpoint,
  renderMetrics,
  signCheckpoint,
  splitCheckpointNotes,
  startAuditServices,
  type ChainProblem,
  type VerifyAuditResult,
} from "../src/audit/index.js";
import { ensureBuilt, makeEnv, runZt, type TestEnv } from "./audit-helpers.js";

/** zt.yaml lines naming a witness file relative to the config's folder. */
const WITNESS_YAML = "audit:\n  witness:\n    file: witness.txt\n";

function openKeys(t: TestEnv, store: Store, clock: ManualClock): KeyStore {
  return new KeyStore(
    store,
    loadMasterKey({ dataDir: t.dataDir, envValue: t.env["ZT_MASTER_KEY"] }),
    clock,
  );
}

/** Writes `n` events, signing a checkpoint (pushed to `witness`, if given) after each listed seq. */
async function seed(
  t: TestEnv,
  n: number,
  opts: { checkpointAt?: number[]; witness?: string } = {},
): Promise<void> {
  const clock = new ManualClock();
  const store = await openStore({ dataDir: t.dataDir });
  const log = new AuditLog(store, { clock });
  const cp = new Checkpointer({
    store,
    keys: openKeys(t, store, clock),
    clock,
    origin: "audit.test/zt/audit",
    every: 1_000_000,
    intervalMs: 3_600_000,
    witnesses: opts.witness ? [fileWitness(opts.witness)] : [],
  });
  for (let i = 1; i <= n; i++) {
    clock.advance(1000);
    log.record({ kind: "decision", outcome: "allow", subject: `user${i % 7}`, data: { i } });
    if (opts.checkpointAt?.includes(i)) {
      await log.flush();
      await cp.checkpointNow();
    }
  }
  await log.close();
  await store.close();
}

/** Appends `n` events the ordinary way: the appender carries on from whatever head is stored. */
async function append(t: TestEnv, n: number): Promise<void> {
  const store = await openStore({ dataDir: t.dataDir });
  const log = new AuditLog(store, { clock: new ManualClock() });
  for (let i = 0; i < n; i++) log.record({ kind: "decision", outcome: "allow", data: { i } });
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

/** What an attacker with write access does: rewrite one event and re-hash every one after it. */
function rewriteAndRehash(db: Database.Database, seq: number): void {
  db.prepare("UPDATE audit_events SET subject = 'mallory' WHERE seq = ?").run(seq);
  const rows = db
    .prepare("SELECT * FROM audit_events WHERE seq >= ? ORDER BY seq")
    .all(seq) as Parameters<typeof chainHash>[1][];
  let prev = (
    db.prepare("SELECT hash FROM audit_events WHERE seq = ?").get(seq - 1) as { hash: string }
  ).hash;
  const upd = db.prepare("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?");
  for (const row of rows) {
    const h = chainHash(prev, row);
    upd.run(prev, h, row.seq);
    prev = h;
  }
}

function sizes(witness: string): number[] {
  return splitCheckpointNotes(readFileSync(witness, "utf8")).map((n) => parseCheckpoint(n).size);
}

/** What `zt audit verify --json` prints: the verifier's own result. */
type VerifyJson = VerifyAuditResult;

describe("the checkpointer signs only a head that leads on from the last signed one (real CLI)", () => {
  beforeAll(() => ensureBuilt(), 300_000);

  it("tail and its checkpoints deleted: verify names the missing tail, `zt audit checkpoint` refuses and leaves the witness alone", async () => {
    const t = makeEnv(WITNESS_YAML);
    const witness = join(t.dir, "witness.txt");
    await seed(t, 100, { checkpointAt: [40, 80, 100], witness });
    const before = readFileSync(witness, "utf8");
    expect(sizes(witness)).toEqual([40, 80, 100]);
    tamper(t, (db) => {
      db.prepare("DELETE FROM audit_events WHERE seq > 70").run();
      db.prepare("DELETE FROM audit_checkpoints WHERE size > 60").run();
    });
    await append(t, 5); // the head is now a forged 75

    // verify reads the configured witness without being told to.
    const v = await runZt(t, ["audit", "verify"]);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain(
      `FAILED at seq 76: truncated: the log ends at 75 but a signed checkpoint (witness file ${witness}) covers 100 events: events 76..100 are missing`,
    );

    const c = await runZt(t, ["audit", "checkpoint"]);
    expect(c.code).toBe(1);
    expect(c.stdout).toBe("");
    expect(c.stderr).toContain("zt: error ZT_AUDIT_CHAIN_BROKEN: refusing to sign");
    expect(c.stderr).toContain(
      `truncated at seq 76: the log ends at 75 but a checkpoint already signed (witness file:${witness}) covers 100 events`,
    );
    expect(readFileSync(witness, "utf8")).toBe(before);

    // Once the forged log grows past the witnessed size, its hash at 100 gives it away.
    await append(t, 40);
    const c2 = await runZt(t, ["audit", "checkpoint"]);
    expect(c2.code).toBe(1);
    expect(c2.stderr).toContain("checkpoint-mismatch at seq 100");
    expect(readFileSync(witness, "utf8")).toBe(before);

    tamper(t, (db) => {
      expect(db.prepare("SELECT size FROM audit_checkpoints ORDER BY size").pluck().all()).toEqual([
        40,
      ]);
      const alerts = db
        .prepare("SELECT rule, severity, key, seq FROM audit_alerts ORDER BY ts")
        .all() as { rule: string; severity: string; seq: number }[];
      expect(alerts.length).toBeGreaterThanOrEqual(1);
      expect(alerts[0]).toMatchObject({ rule: CHAIN_BROKEN_RULE, severity: "critical", seq: 76 });
    });
    const after = await runZt(t, ["audit", "verify"]);
    expect(after.code).toBe(1);
    expect(after.stdout).toContain("checkpoint-mismatch");
  });

  it("a middle event rewritten and re-hashed (checkpoints deleted): verify fails on the witness, checkpoint refuses", async () => {
    const t = makeEnv(WITNESS_YAML);
    const witness = join(t.dir, "witness.txt");
    await seed(t, 100, { checkpointAt: [100], witness });
    const before = readFileSync(witness, "utf8");
    tamper(t, (db) => {
      rewriteAndRehash(db, 50);
      db.prepare("DELETE FROM audit_checkpoints").run();
    });
    await append(t, 5);

    const v = await runZt(t, ["audit", "verify", "--json"]);
    expect(v.code).toBe(1);
    const res = JSON.parse(v.stdout) as VerifyJson;
    expect(res.problem).toMatchObject({ kind: "checkpoint-mismatch" });
    expect(res.problem!.detail).toContain(`(witness file ${witness})`);

    const c = await runZt(t, ["audit", "checkpoint"]);
    expect(c.code).toBe(1);
    expect(c.stderr).toContain("ZT_AUDIT_CHAIN_BROKEN");
    expect(c.stderr).toContain("checkpoint-mismatch at seq 100");
    expect(readFileSync(witness, "utf8")).toBe(before);
  });
});

describe("a running checkpointer keeps the head it signed in memory (no witness)", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function running(t: TestEnv) {
    const clock = new ManualClock();
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const log = new AuditLog(store, { clock });
    cleanups.push(() => log.close());
    const problems: ChainProblem[] = [];
    const cp = new Checkpointer({
      store,
      keys: openKeys(t, store, clock),
      clock,
      origin: "audit.test/zt/audit",
      every: 1_000_000,
      intervalMs: 3_600_000,
      audit: log,
      onChainBroken: (p) => problems.push(p),
    });
    const write = async (n: number) => {
      for (let i = 0; i < n; i++) log.record({ kind: "decision", outcome: "allow", data: { i } });
      await log.flush();
    };
    return { store, log, cp, problems, write };
  }

  it("a deleted tail (with its checkpoints), then regrown: refused each time, alerted once", async () => {
    const t = makeEnv();
    const { store, cp, problems, write } = await running(t);
    await write(50);
    expect(parseCheckpoint((await cp.checkpointNow())!).size).toBe(50);
    store.sqlite!.prepare("DELETE FROM audit_events WHERE seq > 30").run();
    store.sqlite!.prepare("DELETE FROM audit_checkpoints").run();

    await expect(cp.checkpointNow()).rejects.toMatchObject({
      code: "ZT_AUDIT_CHAIN_BROKEN",
      message: expect.stringContaining("truncated at seq 31") as unknown,
    });
    await write(30);
    await expect(cp.checkpointNow()).rejects.toMatchObject({
      code: "ZT_AUDIT_CHAIN_BROKEN",
      message: expect.stringContaining("checkpoint-mismatch at seq 50") as unknown,
    });
    expect(problems.map((p) => p.kind)).toEqual(["truncated"]);
    expect(store.sqlite!.prepare("SELECT COUNT(*) FROM audit_checkpoints").pluck().get()).toBe(0);
    const alerts = store.sqlite!.prepare("SELECT rule, severity FROM audit_alerts").all();
    expect(alerts).toEqual([{ rule: CHAIN_BROKEN_RULE, severity: "critical" }]);
    // The alert is in the log itself too, and counted.
    const audited = store
      .sqlite!.prepare("SELECT reason FROM audit_events WHERE kind = 'alert'")
      .pluck()
      .all();
    expect(audited).toEqual([CHAIN_BROKEN_RULE]);
    expect((await renderMetrics()).body).toContain(
      `zt_alerts_fired_total{rule="${CHAIN_BROKEN_RULE}",severity="critical"}`,
    );
  });

  it("an event before the signed head rewritten and re-hashed: refused", async () => {
    const t = makeEnv();
    const { store, cp, problems, write } = await running(t);
    await write(50);
    await cp.checkpointNow();
    rewriteAndRehash(store.sqlite!, 20);
    await write(5);
    await expect(cp.checkpointNow()).rejects.toMatchObject({ code: "ZT_AUDIT_CHAIN_BROKEN" });
    expect(problems).toEqual([expect.objectContaining({ kind: "checkpoint-mismatch", seq: 50 })]);
    expect(store.sqlite!.prepare("SELECT size FROM audit_checkpoints").pluck().all()).toEqual([50]);
  });

  it("an untouched chain keeps being checkpointed", async () => {
    const t = makeEnv();
    const { cp, problems, write } = await running(t);
    await write(10);
    await cp.checkpointNow();
    await write(10);
    expect(parseCheckpoint((await cp.checkpointNow())!).size).toBe(20);
    expect(await cp.checkpointNow()).toBeUndefined();
    expect(problems).toEqual([]);
  });
});

describe("zt up wiring: a restarted server takes the last signed head from the witness", () => {
  it("refuses to sign, warns with an error, and leaves the witness alone", async () => {
    const t = makeEnv(WITNESS_YAML);
    const witness = join(t.dir, "witness.txt");
    await seed(t, 60, { checkpointAt: [60], witness });
    const before = readFileSync(witness, "utf8");
    tamper(t, (db) => {
      db.prepare("DELETE FROM audit_events WHERE seq > 30").run();
      db.prepare("DELETE FROM audit_checkpoints").run();
    });
    const ctx = await openAppContext(parseConfigText(readFileSync(t.config, "utf8"), t.config), {
      env: { ZT_MASTER_KEY: t.env["ZT_MASTER_KEY"] },
    });
    const warnings: string[] = [];
    try {
      const services = await startAuditServices(ctx, { warn: (m) => warnings.push(m) });
      try {
        ctx.audit.record({ kind: "decision", outcome: "allow" });
        await ctx.audit.flush();
        await expect(services.checkpointer.checkpointNow()).rejects.toMatchObject({
          code: "ZT_AUDIT_CHAIN_BROKEN",
        });
      } finally {
        await services.stop();
      }
    } finally {
      await ctx.close();
    }
    expect(warnings.filter((w) => w.startsWith("ERROR: not signing audit checkpoints"))).toEqual([
      expect.stringContaining("truncated at seq 32"),
    ]);
    expect(readFileSync(witness, "utf8")).toBe(before);
  });
});

describe("zt audit verify anchors (real CLI)", () => {
  beforeAll(() => ensureBuilt(), 300_000);

  it("the witness file keeps every note, and verify checks each one", async () => {
    const t = makeEnv(WITNESS_YAML);
    const witness = join(t.dir, "witness.txt");
    await seed(t, 30, { checkpointAt: [10, 20, 30], witness });
    expect(sizes(witness)).toEqual([10, 20, 30]);
    // Notes are separated by a blank line.
    expect(readFileSync(witness, "utf8")).toMatch(/\n\naudit\.test\/zt\/audit\n20\n/);

    const ok = await runZt(t, ["audit", "verify", "--json"]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({
      ok: true,
      anchored: true,
      externalCheckpoints: 3,
      anchoredThrough: 30,
      warnings: [],
    });

    // An older note that no longer verifies fails the check, not only the newest.
    writeFileSync(witness, readFileSync(witness, "utf8").replace("\n20\n", "\n19\n"));
    const bad = await runZt(t, ["audit", "verify"]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(
      `FAILED at seq 19: checkpoint-signature: the checkpoint at size 19 (witness file ${witness}) is not signed by a trusted audit key`,
    );
  });

  it("loads the configured witness by default: a deleted tail with all its checkpoints fails without flags", async () => {
    const t = makeEnv(WITNESS_YAML);
    const witness = join(t.dir, "witness.txt");
    await seed(t, 100, { checkpointAt: [100], witness });
    tamper(t, (db) => {
      db.prepare("DELETE FROM audit_events WHERE seq > 70").run();
      db.prepare("DELETE FROM audit_checkpoints").run();
    });
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("FAILED at seq 71: truncated");
    expect(r.stdout).toContain(`(witness file ${witness}) covers 100 events: events 71..100`);
    expect(r.stdout).toContain("anchored by 1 checkpoint notes from outside the database");
  });

  it("audit.checkpoint_public_key: a checkpoint signed by a key planted in the database fails", async () => {
    const t = makeEnv();
    await seed(t, 50, { checkpointAt: [50] });
    const pk = await runZt(t, ["audit", "public-key"]);
    expect(pk.code).toBe(0);
    writeFileSync(join(t.dir, "audit.pub"), pk.stdout);
    // Rewrite the log, plant a key of one's own and re-sign the forged head with it.
    const rogue = generateKeyPairSync("ed25519");
    tamper(t, (db) => {
      rewriteAndRehash(db, 20);
      const head = db.prepare("SELECT seq, hash FROM audit_events WHERE seq = 50").get() as {
        seq: number;
        hash: string;
      };
      db.prepare(
        "INSERT INTO keys (id, purpose, alg, public_jwk, private_sealed, created_at, not_after, status) VALUES ('key_rogue', 'audit-checkpoint', 'EdDSA', ?, 'x', 0, NULL, 'retired')",
      ).run(JSON.stringify(rogue.publicKey.export({ format: "jwk" })));
      const note = signCheckpoint(
        { origin: "audit.test/zt/audit", size: 50, headHash: head.hash },
        rogue.privateKey,
        rogue.publicKey,
      );
      db.prepare("UPDATE audit_checkpoints SET head_hash = ?, note = ? WHERE size = 50").run(
        head.hash,
        note,
      );
    });
    // Trusting the database's keys, the forgery passes (and says it is only internal) …
    const unpinned = await runZt(t, ["audit", "verify"]);
    expect(unpinned.code).toBe(0);
    expect(unpinned.stdout).toContain(`warning: ${INTERNAL_ONLY_WARNING}`);
    // … with the key pinned in zt.yaml, it fails.
    writeFileSync(
      t.config,
      readFileSync(t.config, "utf8") + "audit:\n  checkpoint_public_key: audit.pub\n",
    );
    const pinned = await runZt(t, ["audit", "verify", "--json"]);
    expect(pinned.code).toBe(1);
    const res = JSON.parse(pinned.stdout) as VerifyJson;
    expect(res).toMatchObject({ ok: false, keysPinned: true, anchored: false });
    expect(res.problem).toMatchObject({ kind: "checkpoint-signature", seq: 50 });
    expect(res.warnings).toEqual([NO_WITNESS_WARNING]);
  });

  it("says plainly when nothing outside the database anchors the check (exit 0 for an intact chain)", async () => {
    const t = makeEnv();
    await seed(t, 20, { checkpointAt: [20] });
    const r = await runZt(t, ["audit", "verify"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ok: 20 events verified/);
    expect(r.stdout).toContain("warning: verification is only internal");
    const j = await runZt(t, ["audit", "verify", "--json"]);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({
      ok: true,
      anchored: false,
      externalCheckpoints: 0,
      warnings: [INTERNAL_ONLY_WARNING],
    });

    // A configured witness that is not there anchors nothing, and says so.
    writeFileSync(t.config, readFileSync(t.config, "utf8") + WITNESS_YAML);
    const missing = await runZt(t, ["audit", "verify"]);
    expect(missing.code).toBe(0);
    expect(missing.stdout).toContain(
      `warning: the configured witness file ${join(t.dir, "witness.txt")} does not exist`,
    );
    expect(missing.stdout).toContain("warning: verification is only internal");
  });
});
