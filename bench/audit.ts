/**
 * `npm run bench:audit`: audit events appended per second with hash chaining and
 * durability (SQLite WAL, synchronous=FULL, one fsync per batch), against raw SQLite
 * inserts of the same rows without chaining, in the same run — both single-row inserts
 * and the multi-row INSERTs the writer itself uses, so the comparison stays honest —
 * and how much of the caller's event loop each append path takes; then events verified
 * per second over 1,000,000 events, against raw SHA-256 over the same canonical records.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, nproc } from "./audit-sys.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/index.js";
import { systemClock } from "../src/core/clock.js";
import { newId } from "../src/core/ids.js";
import { AuditLog, auditHead, canonicalRecord, verifyAuditLog } from "../src/audit/index.js";
import { MAX_MERGED_ROWS } from "../src/audit/sqlite-appender.js";

const APPEND_N = Number(process.env["BENCH_AUDIT_APPEND"] ?? 200_000);
const VERIFY_N = Number(process.env["BENCH_AUDIT_VERIFY"] ?? 1_000_000);
const CHUNK = 5_000;
const BACKLOG = 100_000;

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

/** Raw single-row prepared inserts of the same rows, no chain, `txRows` per transaction. */
async function benchRawInserts(n: number, txRows: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "zt-bench-audit-raw-"));
  const store = await openStore({ dataDir: dir });
  const db = store.sqlite!;
  const insert = db.prepare(
    "INSERT INTO audit_events (seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data, prev_hash, hash) " +
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
  );
  const tx = db.transaction((rows: unknown[][]) => {
    for (const r of rows) insert.run(r);
  });
  const t0 = performance.now();
  let seq = 0;
  for (let i = 0; i < n; i += txRows) {
    const rows: unknown[][] = [];
    for (let j = i; j < Math.min(n, i + txRows); j++) {
      const s = sample(j);
      // seq, id, ts, kind, outcome, subject, source_ip, route, action, decision_id, policies, reason, data
      rows.push([
        ++seq,
        newId("evt"),
        Date.now(),
        s.kind,
        s.outcome,
        s.subject,
        s.sourceIp,
        s.route,
        s.action,
        s.decisionId,
        JSON.stringify(s.policies),
        s.reason,
        JSON.stringify(s.data),
      ]);
    }
    tx.immediate(rows);
  }
  const secs = (performance.now() - t0) / 1000;
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return n / secs;
}

interface AppendRun {
  perSec: number;
  /** Time the caller's event loop was busy, per event (µs): what a proxy loses to the log. */
  loopUsPerEvent: number;
  mode: string;
}

async function appendChained(dir: string, n: number, writerThread = true): Promise<AppendRun> {
  const store = await openStore({ dataDir: dir });
  const log = new AuditLog(store, { clock: systemClock, maxBatch: CHUNK, writerThread });
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  for (let i = 0; i < n; i += CHUNK) {
    for (let j = i; j < Math.min(n, i + CHUNK); j++) log.record(sample(j));
    await new Promise((r) => setImmediate(r)); // let the writer run, as a server's event loop would
    // A bulk producer outrunning the writer thread waits for it rather than overflow the
    // buffer (beyond maxBuffered the oldest records would be dropped and counted).
    if (log.pending > BACKLOG) await log.flush();
  }
  await log.flush();
  const secs = (performance.now() - t0) / 1000;
  const elu = performance.eventLoopUtilization(elu0);
  const mode = log.writerMode;
  if ((await auditHead(store)).seq !== n) throw new Error("not every event was written");
  await log.close();
  await store.close();
  return { perSec: n / secs, loopUsPerEvent: (elu.active * 1000) / n, mode };
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

  const raw = await benchRawInserts(APPEND_N, CHUNK);
  const rawBig = await benchRawInserts(APPEND_N, MAX_MERGED_ROWS);
  const run = async (writerThread: boolean) => {
    const dir = mkdtempSync(join(tmpdir(), "zt-bench-audit-"));
    try {
      return await appendChained(dir, APPEND_N, writerThread);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const inline = await run(false);
  const chained = await run(true);
  if (chained.mode !== "thread") throw new Error(`writer ran ${chained.mode}, not on its thread`);
  console.log(`append (${fmt(APPEND_N)} events, SQLite WAL synchronous=FULL, batched commits):`);
  console.log(
    `  raw inserts, no chain, ${fmt(CHUNK)} rows/transaction (baseline): ${fmt(raw)} events/s`,
  );
  console.log(
    `  raw inserts, no chain, ${fmt(MAX_MERGED_ROWS)} rows/transaction (the writer thread's largest merged transaction): ${fmt(rawBig)} events/s`,
  );
  console.log(
    `  AuditLog inline (writerThread: false), hash-chained + durable: ${fmt(inline.perSec)} events/s; caller's loop busy ${inline.loopUsPerEvent.toFixed(2)} µs/event`,
  );
  console.log(
    `  AuditLog writer thread, hash-chained + durable: ${fmt(chained.perSec)} events/s; caller's loop busy ${chained.loopUsPerEvent.toFixed(2)} µs/event` +
      `  (ratio ${(chained.perSec / raw).toFixed(2)}x the ${fmt(CHUNK)}-row baseline, ${(chained.perSec / rawBig).toFixed(2)}x the ${fmt(MAX_MERGED_ROWS)}-row one; target >= 50,000/s)`,
  );

  const dir2 = mkdtempSync(join(tmpdir(), "zt-bench-audit-verify-"));
  const fill = (await appendChained(dir2, VERIFY_N)).perSec;
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
