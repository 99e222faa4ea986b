import { beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import { openStore } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { AuditLog, verifyAuditLog } from "../src/audit/index.js";
import { ensureBuilt, makeEnv, ROOT, runZt, type TestEnv } from "./audit-helpers.js";

/**
 * A child that writes bursts and prints the ids of each burst once flush() resolved.
 * Runs the compiled dist/ (ensureBuilt builds it only when missing: rebuild after edits).
 */
function writeChild(t: TestEnv, name: string): string {
  const file = join(t.dir, `${name}.mjs`);
  const dist = (p: string) => pathToFileURL(join(ROOT, "dist", "src", p)).href;
  writeFileSync(
    file,
    `import { writeSync } from "node:fs";
import { openStore } from ${JSON.stringify(dist("store/index.js"))};
import { AuditLog } from ${JSON.stringify(dist("audit/index.js"))};
const store = await openStore({ dataDir: ${JSON.stringify(t.dataDir)} });
const log = new AuditLog(store, { clock: { now: () => Date.now() }, maxBatch: 97 });
// The default SQLite writer: appends on the writer thread (its own connection).
if (log.writerMode !== "thread") throw new Error("writer mode " + log.writerMode);
for (let burst = 0; ; burst++) {
  const ids = [];
  for (let i = 0; i < 250; i++) ids.push(log.record({ kind: "decision", outcome: "allow", subject: ${JSON.stringify(name)}, data: { burst, i } }));
  await log.flush();
  writeSync(1, ids.join(" ") + "\\n");
}
`,
  );
  return file;
}

/** Runs the child until it acknowledged at least `min` events, then kill -9. Returns the acked ids. */
function burstAndKill(t: TestEnv, name: string, min: number): Promise<string[]> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [writeChild(t, name)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const acked: string[] = [];
    let buf = "";
    let err = "";
    let killed = false;
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        acked.push(...buf.slice(0, nl).split(" "));
        buf = buf.slice(nl + 1);
      }
      if (!killed && acked.length >= min) {
        killed = true;
        child.kill("SIGKILL");
      }
    });
    child.on("exit", (code, signal) => {
      if (signal === "SIGKILL") res(acked);
      else rej(new Error(`child exited ${code}: ${err}`));
    });
  });
}

describe("durability", () => {
  beforeAll(() => ensureBuilt(), 300_000);

  it("kill -9 of two writers mid-burst: the chain verifies and every acknowledged event is there", async () => {
    const t = makeEnv();
    // Create the schema first so the children do not race on the first migration.
    await (await openStore({ dataDir: t.dataDir })).close();
    const [a, b] = await Promise.all([
      burstAndKill(t, "alpha", 3000),
      burstAndKill(t, "beta", 3000),
    ]);
    expect(a.length).toBeGreaterThanOrEqual(3000);
    expect(b.length).toBeGreaterThanOrEqual(3000);

    const r = await runZt(t, ["audit", "verify", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout) as { ok: boolean; checked: number; lastSeq: number };
    expect(res.ok).toBe(true);
    expect(res.checked).toBe(res.lastSeq);

    const db = new Database(join(t.dataDir, "zt.db"), { readonly: true });
    const present = new Set(db.prepare("SELECT id FROM audit_events").pluck().all() as string[]);
    db.close();
    const lost = [...a, ...b].filter((id) => !present.has(id));
    expect(lost).toEqual([]);
    expect(present.size).toBe(res.lastSeq);
  });
});

const PG_URL = "postgres://postgres@127.0.0.1:5432";

describe("PostgreSQL: replicas append to one chain", () => {
  it("two stores writing concurrently keep a single gap-free chain; tampering is found", async () => {
    const name = `zt_audit_${process.pid}_${Date.now()}`;
    const admin = new pg.Client({ connectionString: `${PG_URL}/postgres` });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      const url = `${PG_URL}/${name}`;
      const s1 = await openStore({ dataDir: "/nonexistent", databaseUrl: url });
      const s2 = await openStore({ dataDir: "/nonexistent", databaseUrl: url });
      const l1 = new AuditLog(s1, { clock: new ManualClock(), maxBatch: 13 });
      const l2 = new AuditLog(s2, { clock: new ManualClock(), maxBatch: 17 });
      // PostgreSQL appends stay on the caller's thread (asynchronous: they do not block it).
      expect([l1.writerMode, l2.writerMode]).toEqual(["postgres", "postgres"]);
      const flushes: Promise<void>[] = [];
      for (let i = 0; i < 400; i++) {
        l1.record({ kind: "decision", outcome: "allow", data: { i } });
        l2.record({ kind: "login", outcome: "success", data: { i } });
        if (i % 40 === 0) flushes.push(l1.flush(), l2.flush());
      }
      await Promise.all(flushes);
      await Promise.all([l1.close(), l2.close()]);
      expect(await verifyAuditLog(s1)).toMatchObject({ ok: true, checked: 800, lastSeq: 800 });
      await s1.pgPool!.query("UPDATE audit_events SET outcome = 'deny' WHERE seq = 321");
      expect((await verifyAuditLog(s1)).problem).toMatchObject({ seq: 321, kind: "altered" });
      await s1.pgPool!.query("DELETE FROM audit_events WHERE seq = 100");
      expect((await verifyAuditLog(s1)).problem).toMatchObject({ seq: 100, kind: "missing" });
      await s1.close();
      await s2.close();
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });
});
