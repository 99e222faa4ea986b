/**
 * `npm run bench:scale` — zt scaled out on PostgreSQL.
 *
 * 1. Decisions/s through the PEP (real `zt up` processes, autocannon, an allowed
 *    session, a local upstream): one replica on SQLite (the baseline, the default
 *    deployment), one replica on PostgreSQL, two replicas on one PostgreSQL.
 * 2. Event-to-enforcement delay across replicas: a session in use at replica B is
 *    revoked through the control plane (SessionService.revoke: the row update and the
 *    event, committed); time until B first answers 401. Baseline: a raw PostgreSQL
 *    NOTIFY → LISTEN round trip between two connections, measured in the same run.
 *
 * Needs PostgreSQL: ZT_TEST_DATABASE_URL (admin URL), default
 * postgres://postgres@127.0.0.1:5432/postgres. Writes bench/scale.results.md.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import http from "node:http";
import { createRequire } from "node:module";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { IdentityService } from "../src/identity/index.js";
import { SessionService } from "../src/session/index.js";

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  non2xx: number;
  errors: number;
}
type Autocannon = (o: {
  url: string;
  connections: number;
  duration: number;
  headers: Record<string, string>;
}) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

const ROOT = resolve(import.meta.dirname, "..", "..");
const ZT = join(ROOT, "bin", "zt");
const ADMIN_URL =
  process.env["ZT_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";
const DURATION_S = Number(process.env["BENCH_DURATION_S"] ?? 10);
const CONNECTIONS = Number(process.env["BENCH_CONNECTIONS"] ?? 32);
const DELAY_SAMPLES = Number(process.env["BENCH_DELAY_SAMPLES"] ?? 200);
const HOST = "whoami.localhost";
const MASTER_KEY = randomBytes(32).toString("base64");
const POLICY = `@id("eng")\npermit (principal in Group::"eng", action, resource == App::"whoami");\n`;

async function admin<T>(body: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return await body(c);
  } finally {
    await c.end();
  }
}

async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `zt_bench_${randomBytes(5).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: () =>
      admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

async function startUpstream(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

interface Replica {
  child: ChildProcess;
  port: number;
  stop(): Promise<void>;
}

function startReplica(config: string, env: Record<string, string>): Promise<Replica> {
  return new Promise((resolveStart, reject) => {
    const child = spawn(process.execPath, [ZT, "--config", config, "up"], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /PEP listening on \S+:(\d+)/.exec(out);
      if (out.includes("zt: ready") && m) {
        resolveStart({
          child,
          port: Number(m[1]),
          stop: () =>
            new Promise<void>((r) => {
              if (child.exitCode !== null || child.signalCode !== null) return r();
              child.once("exit", () => r());
              child.kill("SIGTERM");
            }),
        });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`zt up exited (${code}):\n${out}`)));
  });
}

function run(args: string[], env: Record<string, string>): void {
  execFileSync(process.execPath, [ZT, ...args], { env: { ...process.env, ...env }, stdio: "pipe" });
}

interface Deployment {
  env: Record<string, string>;
  configs: string[];
  ctx: AppContext;
  sessions: SessionService;
  userId: string;
  dirs: string[];
  close(): Promise<void>;
}

/** Config dirs for `replicas` replicas, zt init, a user in group eng, a control-plane context here. */
async function deploy(
  replicas: number,
  upstreamPort: number,
  databaseUrl: string | undefined,
): Promise<Deployment> {
  const env: Record<string, string> = {
    ZT_MASTER_KEY: MASTER_KEY,
    ZT_LISTEN__PROXY: "127.0.0.1:0",
    ZT_LISTEN__API: "127.0.0.1:0",
  };
  if (databaseUrl) env["ZT_DATABASE_URL"] = databaseUrl;
  const shared = mkdtempSync(join(tmpdir(), "zt-bench-scale-"));
  const dirs: string[] = [];
  const configs: string[] = [];
  for (let i = 0; i < replicas; i++) {
    const dir = join(shared, `replica-${i}`);
    mkdirSync(join(dir, "policies"), { recursive: true });
    writeFileSync(join(dir, "policies", "main.cedar"), POLICY);
    // SQLite: every process must use the same data_dir; PostgreSQL: each its own.
    const dataDir = databaseUrl ? join(dir, "data") : join(shared, "data");
    writeFileSync(
      join(dir, "zt.yaml"),
      `data_dir: ${dataDir}\ntrust_domain: bench.test\npolicies: ./policies\nroutes:\n  - name: whoami\n    from: http://${HOST}:8443\n    to: http://127.0.0.1:${upstreamPort}\n`,
    );
    dirs.push(dir);
    configs.push(join(dir, "zt.yaml"));
  }
  run(["--config", configs[0]!, "init"], env);
  const config = loadConfig(configs[0]!, { env: { ...env } });
  const ctx = await openAppContext(config, { env });
  const identity = new IdentityService(ctx);
  const added = await identity.addUser({
    name: "bench",
    groups: ["eng"],
    password: "bench-correct-horse-battery",
  });
  const sessions = new SessionService(ctx);
  return {
    env,
    configs,
    ctx,
    sessions,
    userId: added.user.id,
    dirs: [shared],
    async close() {
      sessions.close();
      await ctx.close();
      rmSync(shared, { recursive: true, force: true });
    },
  };
}

async function newCookie(d: Deployment): Promise<{ id: string; cookie: string }> {
  const { session, token } = await d.sessions.create({
    userId: d.userId,
    sourceIp: "127.0.0.1",
    userAgent: "bench",
  });
  return { id: session.id, cookie: `zt_session=${token}` };
}

function get(port: number, cookie: string): Promise<number> {
  return new Promise((res, rej) => {
    const req = http.request(
      { host: "127.0.0.1", port, path: "/bench", headers: { host: HOST, cookie }, agent: false },
      (r) => {
        r.resume();
        r.on("end", () => res(r.statusCode ?? 0));
      },
    );
    req.on("error", rej);
    req.end();
  });
}

interface Throughput {
  label: string;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
}

async function throughput(label: string, ports: number[], cookie: string): Promise<Throughput> {
  for (const p of ports)
    if ((await get(p, cookie)) !== 200)
      throw new Error(`${label}: warm-up request was not allowed`);
  const per = Math.max(1, Math.floor(CONNECTIONS / ports.length));
  const results = await Promise.all(
    ports.map((p) =>
      autocannon({
        url: `http://127.0.0.1:${p}/bench`,
        connections: per,
        duration: DURATION_S,
        headers: { host: HOST, cookie },
      }),
    ),
  );
  const out: Throughput = {
    label,
    rps: results.reduce((s, r) => s + r.requests.average, 0),
    p50: Math.max(...results.map((r) => r.latency.p50)),
    p99: Math.max(...results.map((r) => r.latency.p99)),
    non2xx: results.reduce((s, r) => s + r.non2xx + r.errors, 0),
  };
  console.log(
    `${label}: ${out.rps.toFixed(0)} decisions/s (p50 ${out.p50} ms, p99 ${out.p99} ms, non-2xx ${out.non2xx})`,
  );
  return out;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Raw PostgreSQL NOTIFY → LISTEN round trip between two connections (the floor). */
async function notifyBaseline(url: string, n: number): Promise<number[]> {
  const listener = new pg.Client({ connectionString: url });
  const sender = new pg.Client({ connectionString: url });
  await Promise.all([listener.connect(), sender.connect()]);
  await listener.query("LISTEN zt_bench");
  const out: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const got = new Promise<void>((r) => listener.once("notification", () => r()));
      const t0 = performance.now();
      await sender.query("SELECT pg_notify('zt_bench', $1)", [String(i)]);
      await got;
      out.push(performance.now() - t0);
    }
  } finally {
    await Promise.all([listener.end(), sender.end()]);
  }
  return out;
}

/** Revoke a session in use at `port` through the control plane; ms until that PEP denies it. */
async function enforcementDelays(d: Deployment, port: number, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = await newCookie(d);
    if ((await get(port, s.cookie)) !== 200)
      throw new Error("session not accepted before revocation");
    await d.sessions.revoke([s.id], "bench");
    const t0 = performance.now();
    for (;;) {
      // A request in flight when the revocation lands may be cut by the PEP (it closes
      // a revoked session's connections): that is enforcement too, if a retry says 401.
      const status = await get(port, s.cookie).catch(() => get(port, s.cookie));
      if (status === 401) break;
      if (status !== 200) throw new Error(`unexpected status ${status}`);
      if (performance.now() - t0 > 10_000) throw new Error("revocation not enforced within 10 s");
    }
    out.push(performance.now() - t0);
  }
  return out;
}

function cpuModel(): string {
  try {
    return (
      /model name\s*:\s*(.+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ??
      cpus()[0]?.model ??
      "unknown"
    );
  } catch {
    return cpus()[0]?.model ?? "unknown";
  }
}

async function freePortCheck(): Promise<void> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  await new Promise((r) => s.close(r));
}

async function main(): Promise<void> {
  await freePortCheck();
  await admin((c) => c.query("SELECT 1")).catch((e: Error) => {
    throw new Error(
      `PostgreSQL at ${new URL(ADMIN_URL).host} is needed for bench:scale: ${e.message}`,
    );
  });
  const upstream = await startUpstream();
  const rows: Throughput[] = [];
  let delays: number[] = [];
  let notify: number[] = [];
  try {
    // Baseline: one replica, SQLite.
    {
      const d = await deploy(1, upstream.port, undefined);
      const r = await startReplica(d.configs[0]!, d.env);
      try {
        rows.push(
          await throughput("1 replica, SQLite (baseline)", [r.port], (await newCookie(d)).cookie),
        );
      } finally {
        await r.stop();
        await d.close();
      }
    }
    // One replica, PostgreSQL.
    {
      const db = await createDatabase();
      const d = await deploy(1, upstream.port, db.url);
      const r = await startReplica(d.configs[0]!, d.env);
      try {
        rows.push(await throughput("1 replica, PostgreSQL", [r.port], (await newCookie(d)).cookie));
      } finally {
        await r.stop();
        await d.close();
        await db.drop();
      }
    }
    // Two replicas, one PostgreSQL; then the event-to-enforcement delay across them.
    {
      const db = await createDatabase();
      const d = await deploy(2, upstream.port, db.url);
      const [a, b] = await Promise.all(d.configs.map((c) => startReplica(c, d.env)));
      try {
        rows.push(
          await throughput(
            "2 replicas, one PostgreSQL",
            [a!.port, b!.port],
            (await newCookie(d)).cookie,
          ),
        );
        notify = await notifyBaseline(db.url, DELAY_SAMPLES);
        delays = await enforcementDelays(d, b!.port, DELAY_SAMPLES);
      } finally {
        await Promise.all([a!.stop(), b!.stop()]);
        await d.close();
        await db.drop();
      }
    }
  } finally {
    await upstream.close();
  }

  const base = rows[0]!.rps;
  const p = (xs: number[], q: number) => percentile(xs, q).toFixed(1);
  console.log(`raw NOTIFY round trip: p50 ${p(notify, 50)} ms, p99 ${p(notify, 99)} ms`);
  console.log(
    `revocation enforced across replicas: p50 ${p(delays, 50)} ms, p99 ${p(delays, 99)} ms (target p99 <= 200 ms)`,
  );
  for (const r of rows) console.log(`${r.label}: ratio to baseline ${(r.rps / base).toFixed(2)}`);

  const md = `# bench:scale results

Machine: ${cpus().length} CPUs (\`nproc\` ${execFileSync("nproc").toString().trim()}), ${cpuModel()}
Date: ${new Date().toISOString()} (load average at the end: ${loadavg()
    .map((l) => l.toFixed(1))
    .join(", ")})
PostgreSQL: ${await admin((c) => c.query<{ v: string }>("SELECT current_setting('server_version') AS v").then((r) => r.rows[0]!.v))} on the same machine (loopback, no TLS)
Load: autocannon, ${CONNECTIONS} connections in total, ${DURATION_S} s per run, one allowed session,
GET through the PEP to a local upstream (each request: authenticate, Cedar decision, signed
assertion, audit record). Everything — replicas, PostgreSQL, the load generator and the upstream —
shares the same ${cpus().length} CPUs, so the two-replica figure shows overhead, not scale-out
gain; on separate machines replicas add capacity until PostgreSQL (audit appends) saturates.

## Decisions per second

| deployment | decisions/s | p50 ms | p99 ms | non-2xx | ratio to baseline |
|---|---:|---:|---:|---:|---:|
${rows.map((r) => `| ${r.label} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.non2xx} | ${(r.rps / base).toFixed(2)} |`).join("\n")}

## Event-to-enforcement delay across replicas

A session in use at replica B is revoked through the control plane (row update + event,
committed); the delay is from that commit until B first answers 401 (B polled back to back).
${DELAY_SAMPLES} samples each.

| path | p50 ms | p99 ms | max ms |
|---|---:|---:|---:|
| raw PostgreSQL NOTIFY → LISTEN (baseline) | ${p(notify, 50)} | ${p(notify, 99)} | ${Math.max(...notify).toFixed(1)} |
| zt revoke → enforced at another replica | ${p(delays, 50)} | ${p(delays, 99)} | ${Math.max(...delays).toFixed(1)} |

Ratio (p50, zt / raw NOTIFY): ${(percentile(delays, 50) / percentile(notify, 50)).toFixed(1)}. Target p99 ≤ 200 ms: ${percentile(delays, 99) <= 200 ? "met" : "NOT met"}.
`;
  const outFile = join(ROOT, "bench", "scale.results.md");
  writeFileSync(outFile, md);
  console.log(`wrote ${outFile}`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench:scale failed: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
