/**
 * `npm run bench:audit`: audit events appended per second with hash chaining and
 * durability (SQLite WAL, synchronous=FULL, one fsync per batch), against raw SQLite
 * inserts of the same rows without chaining, in the same run; and events verified per
 * second over 1,000,000 events, against raw SHA-256 over the same canonical records.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, nproc } from "./audit-sys.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/index.js";
import { systemClock } from "../src/core/clock.js";
import { newId } from "../src/core/ids.js";
import { AuditLog, canonicalRecord, verifyAuditLog } from "../src/audit/index.js";

const APPEND_N = Number(process.env["BENCH_AUDIT_APPEND"] ?? 200_000);
const VERIFY_N = Number(process.env["BENCH_AUDIT_VERIFY"] ?? 1_000_000);
const CHUNK = 5_000;

function sample(i: number) {
  return {
    kind: "decision",
    outcome: i % 7 === 0 ? ("deny" as const) : ("allow" as const),
    subject: `user${i % 100}`,
    sourceIp: `10.0.${(i >> 8) & 255}.${i & 255}`,
    route: `app${i % 10}`,
    action: "GET",
    decisionId: `dec_${i}`,
    policies: ["allow-engineers"],
    reason: i % 7 === 0 ? "no-policy" : "policy-allow",
    data: { mode: "enforce", pep_id: "pep-1", latency_us: 42 },
  };
}

async function benchRawInserts(n: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "zt-bench-audit-raw-"));
  const store = await openStore({ dataDir: dir });
  const db = store.sqlite!;
  const insert = db.prepare(
    "INSERT INTO audit_events (seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash) " +
      "VALUES (@seq, @id, @ts, @kind, @outcome, @subject, @source_ip, @route, @action, @decision_id, @policies, @reason, @data, NULL, NULL)",
  );
  const tx = db.transaction((rows: Record<string, unknown>[]) => {
    for (const r of rows) insert.run(r);
  });
  const t0 = performance.now();
  let seq = 0;
  for (let i = 0; i < n; i += CHUNK) {
    const rows: Record<string, unknown>[] = [];
    for (let j = i; j < Math.min(n, i + CHUNK); j++) {
      const s = sample(j);
      rows.push({
        seq: ++seq,
        id: newId("evt"),
        ts: Date.now(),
        kind: s.kind,
        outcome: s.outcome,
        subject: s.subject,
        source_ip: s.sourceIp,
        route: s.route,
        action: s.action,
        decision_id: s.decisionId,
        policies: JSON.stringify(s.policies),
        reason: s.reason,
        data: JSON.stringify(s.data),
      });
    }
    tx.immediate(rows);
  }
  const secs = (performance.now() - t0) / 1000;
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return n / secs;
}

async function appendChained(dir: string, n: number): Promise<number> {
  const store = await openStore({ dataDir: dir });
  const log = new AuditLog(store, { clock: systemClock, maxBatch: CHUNK });
  const t0 = performance.now();
  for (let i = 0; i < n; i += CHUNK) {
    for (let j = i; j < Math.min(n, i + CHUNK); j++) log.record(sample(j));
    await new Promise((r) => setImmediate(r)); // let the writer run, as a server's event loop would
  }
  await log.flush();
  const secs = (performance.now() - t0) / 1000;
  await log.close();
  await store.close();
  return n / secs;
}

function rawSha256(n: number): number {
  const prev = Buffer.alloc(32);
  const rec = {
    seq: 1,
    id: newId("evt"),
    ts: Date.now(),
    kind: "decision",
    outcome: "allow",
    subject: "user1",
    source_ip: "10.0.0.1",
    route: "app1",
    action: "GET",
    decision_id: "dec_1",
    policies: '["allow-engineers"]',
    reason: "policy-allow",
    data: '{"mode":"enforce","pep_id":"pep-1","latency_us":42}',
  };
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    rec.seq = i + 1;
    createHash("sha256").update(prev).update(canonicalRecord(rec)).digest("hex");
  }
  return n / ((performance.now() - t0) / 1000);
}

const fmt = (x: number) => Math.round(x).toLocaleString("en-US");

async function main(): Promise<void> {
  console.log(
    `zt audit benchmark — ${nproc()} CPUs, ${cpus()}, node ${process.version}, ${new Date().toISOString()}`,
  );

  const raw = await benchRawInserts(APPEND_N);
  const dir1 = mkdtempSync(join(tmpdir(), "zt-bench-audit-"));
  const chained = await appendChained(dir1, APPEND_N);
  rmSync(dir1, { recursive: true, force: true });
  console.log(`append (${fmt(APPEND_N)} events, SQLite WAL synchronous=FULL, batched commits):`);
  console.log(`  raw inserts, no chain (baseline): ${fmt(raw)} events/s`);
  console.log(
    `  AuditLog, hash-chained + durable: ${fmt(chained)} events/s  (ratio ${(chained / raw).toFixed(2)}x baseline; target >= 50,000/s)`,
  );

  const dir2 = mkdtempSync(join(tmpdir(), "zt-bench-audit-verify-"));
  const fill = await appendChained(dir2, VERIFY_N);
  const store = await openStore({ dataDir: dir2 });
  const t0 = performance.now();
  const res = await verifyAuditLog(store);
  const verifySecs = (performance.now() - t0) / 1000;
  await store.close();
  rmSync(dir2, { recursive: true, force: true });
  if (!res.ok || res.checked !== VERIFY_N) throw new Error(`verify failed: ${JSON.stringify(res)}`);
  const sha = rawSha256(VERIFY_N);
  console.log(`verify (${fmt(VERIFY_N)} events; filled at ${fmt(fill)} events/s):`);
  console.log(`  raw SHA-256 over canonical records (baseline): ${fmt(sha)} events/s`);
  console.log(
    `  zt audit verify (read + recompute + compare): ${fmt(VERIFY_N / verifySecs)} events/s, ${verifySecs.toFixed(2)} s total  (ratio ${(VERIFY_N / verifySecs / sha).toFixed(2)}x baseline; target <= 10 s)`,
  );
}

await main();
