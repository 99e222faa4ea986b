/**
 * `zt up` with PEP worker processes runs one config and one policy set, and says so:
 *
 * - /readyz names each worker's refused policy reload and a worker slot that cannot
 *   start (it showed the primary's policy error only);
 * - a listening worker that does not answer makes /readyz 503, naming it (readiness
 *   looked at the primary only);
 * - a worker restarted after a crash runs the primary's config, not zt.yaml as edited
 *   on disk since (the cluster ran two configs);
 * - a worker still starting when SIGHUP comes gets the reload once it listens (it kept
 *   the old policy set).
 *
 * Real `zt up` processes with real workers; waits poll for a condition, never for time.
 */
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { loadPolicySet } from "../src/policy/index.js";
import { request } from "./helpers/http-client.js";
import { freePort } from "./pep-fixture.js";
import {
  OPERATOR_AUTH,
  runZt,
  startZtUp,
  tempDir,
  withOperatorToken,
  workerPids,
  writeConfig,
  type UpProcess,
} from "./helpers/zt-process.js";
import {
  createTestDatabase,
  postgresAvailable,
  waitFor,
  type TestDatabase,
} from "./store-fixture.js";

const PG = await postgresAvailable();
const HOST = "app.localhost";
const PERMIT_ALL = `@id("all")\npermit (principal, action, resource);\n`;
const NO_SSH = `${PERMIT_ALL}@id("no-ssh")\nforbid (principal, action == Action::"ssh:sign", resource);\n`;

interface WorkerStatus {
  worker: number;
  state: string;
  policy_version?: string;
  policy_error?: string | null;
  last_error?: string | null;
}
interface Readyz {
  status: string;
  policy_version: string;
  policy_error: string | null;
  proxy_workers_listening: number;
  proxy_worker_status?: WorkerStatus[];
  proxy_workers_not_ready?: string[];
}

function appConfig(host = HOST): string {
  return `data_dir: ./data
trust_domain: consistency.test
routes:
  - name: app
    from: http://${host}
    to: http://127.0.0.1:9
policies: ./policies
`;
}

const running: UpProcess[] = [];
afterEach(async () => {
  for (const z of running.splice(0)) await z.stop();
});

async function up(config: string, env: Record<string, string>): Promise<UpProcess> {
  // The operator token opens /readyz's detail.
  const zt = await startZtUp(["--config", config, "up"], { env: withOperatorToken(env) });
  running.push(zt);
  return zt;
}

async function readyz(zt: UpProcess): Promise<{ status: number; body: Readyz }> {
  const api = new URL(zt.apiUrl);
  const r = await request(Number(api.port), {
    host: api.host,
    path: "/readyz",
    headers: OPERATOR_AUTH,
  });
  return { status: r.status, body: r.json<Readyz>() };
}

/** Polls /readyz until `ok` holds; its last answer. */
async function readyzUntil(
  zt: UpProcess,
  what: string,
  ok: (r: { status: number; body: Readyz }) => boolean,
  timeoutMs = 20_000,
): Promise<{ status: number; body: Readyz }> {
  let last: { status: number; body: Readyz } | undefined;
  try {
    await waitFor(async () => ok((last = await readyz(zt))), what, timeoutMs);
  } catch (e) {
    throw new Error(`${(e as Error).message}; last /readyz: ${JSON.stringify(last)}`);
  }
  return last!;
}

/** Kills these workers and waits until as many new ones listen. */
async function replaceWorkers(zt: UpProcess, pids: number[]): Promise<void> {
  for (const pid of pids) process.kill(pid, "SIGKILL");
  await waitFor(() => {
    const now = workerPids(zt.child.pid!);
    return now.length === 2 && pids.every((p) => !now.includes(p));
  }, "the replacement workers");
  await readyzUntil(zt, "both replacements listening", (r) => r.body.proxy_workers_listening === 2);
}

describe("zt up with listen.proxy_workers: 2 (SQLite)", () => {
  const env = {
    ZT_LISTEN__PROXY: "127.0.0.1:0",
    ZT_LISTEN__API: "127.0.0.1:0",
    ZT_LISTEN__PROXY_WORKERS: "2",
  };

  async function started() {
    const dir = tempDir();
    const config = writeConfig(dir, appConfig(), { "main.cedar": PERMIT_ALL });
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    // A fixed port: once no worker holds it, port 0 would be a new one.
    const proxy = `127.0.0.1:${await freePort()}`;
    return { dir, config, zt: await up(config, { ...env, ZT_LISTEN__PROXY: proxy }) };
  }

  it("names each worker's refused policy reload and a worker that cannot start in /readyz (it showed the primary's error only)", async () => {
    const { dir, zt } = await started();
    const good = await readyz(zt);
    expect(good.status, JSON.stringify(good.body)).toBe(200);
    expect(good.body.proxy_worker_status).toHaveLength(2);
    for (const w of good.body.proxy_worker_status!) {
      expect(w.state).toBe("listening");
      expect(w.policy_version).toBe(good.body.policy_version);
      expect(w.policy_error).toBeNull();
    }

    // An invalid edit: every process refuses it and keeps the last good set.
    writeFileSync(join(dir, "policies", "main.cedar"), "permit (");
    const refused = await readyzUntil(zt, "every worker's refused reload", (r) =>
      (r.body.proxy_worker_status ?? []).every((w) => typeof w.policy_error === "string"),
    );
    expect(refused.body.proxy_worker_status!.map((w) => w.worker).sort()).toEqual([1, 2]);
    for (const w of refused.body.proxy_worker_status!)
      expect(w.policy_error).toMatch(/main\.cedar/);
    // The same last good set everywhere, as one process would: reported, still ready.
    expect(refused.status).toBe(200);

    // A replacement cannot load the set: its slot is named with the reason.
    process.kill(workerPids(zt.child.pid!)[0]!, "SIGKILL");
    const failing = await readyzUntil(zt, "the failing slot named", (r) =>
      (r.body.proxy_worker_status ?? []).some((w) => /ZT_POLICY_INVALID/.test(w.last_error ?? "")),
    );
    const slot = failing.body.proxy_worker_status!.find((w) => w.state !== "listening")!;
    expect(slot.last_error).toMatch(/^ZT_POLICY_INVALID: .*main\.cedar/);
  }, 120_000);

  it("answers 503 naming a listening worker that does not answer (readiness looked at the primary only)", async () => {
    const { zt } = await started();
    expect((await readyz(zt)).status).toBe(200);
    const [pid] = workerPids(zt.child.pid!);
    process.kill(pid!, "SIGSTOP");
    try {
      const r = await readyz(zt);
      expect(r.status, JSON.stringify(r.body)).toBe(503);
      expect(r.body.proxy_workers_not_ready).toEqual([
        expect.stringMatching(/^worker [12] \(pep-[12]\) did not answer$/),
      ]);
    } finally {
      process.kill(pid!, "SIGCONT");
    }
    await readyzUntil(zt, "ready again", (r) => r.status === 200);
  }, 120_000);

  it("runs the primary's config in a restarted worker, not zt.yaml edited since (the cluster ran two configs)", async () => {
    const { config, zt } = await started();
    const port = Number(new URL(zt.pepUrl).port);
    const get = async () => (await request(port, { host: HOST, path: "/" })).status;
    const served = await get();
    expect(served).not.toBe(404);
    // An operator edits zt.yaml without restarting zt; then both workers crash.
    writeFileSync(config, appConfig("moved.localhost"));
    await replaceWorkers(zt, workerPids(zt.child.pid!));
    // Fresh connections, spread over both replacements: the route zt started with.
    for (let i = 0; i < 20; i++) expect(await get()).toBe(served);
    expect((await request(port, { host: "moved.localhost", path: "/" })).status).toBe(404);
  }, 120_000);
});

describe.runIf(PG)("zt up with listen.proxy_workers: 2 (PostgreSQL)", () => {
  const dbs: TestDatabase[] = [];
  let admin: pg.Client | undefined;
  afterEach(async () => {
    await admin?.query("ROLLBACK").catch(() => undefined);
    await admin?.end().catch(() => undefined);
    admin = undefined;
  });
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });

  it("reloads a worker that was starting when SIGHUP came (it kept the old policy set)", async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    const env = {
      ZT_DATABASE_URL: db.url,
      ZT_LISTEN__PROXY: "127.0.0.1:0",
      ZT_LISTEN__API: "127.0.0.1:0",
      ZT_LISTEN__PROXY_WORKERS: "2",
      ZT_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
    };
    // The policy file is a symlink (as a Kubernetes ConfigMap's are): an edit of its
    // target is not seen by the folder watch, SIGHUP is how it is applied.
    const dir = tempDir();
    const config = writeConfig(dir, appConfig(), {});
    mkdirSync(join(dir, "policy-src"));
    writeFileSync(join(dir, "policy-src", "main.cedar"), PERMIT_ALL);
    symlinkSync(join(dir, "policy-src", "main.cedar"), join(dir, "policies", "main.cedar"));
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    const zt = await up(config, env);
    const before = await readyz(zt);
    expect(before.status, JSON.stringify(before.body)).toBe(200);

    // Hold the users table: a worker started now stops where it reads it, after it
    // has loaded its policy set.
    admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    await admin.query("BEGIN");
    const t0 = (await admin.query("SELECT clock_timestamp() AS t")).rows[0] as { t: Date };
    await admin.query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    process.kill(workerPids(zt.child.pid!)[0]!, "SIGKILL");
    const watcher = new pg.Client({ connectionString: db.url });
    await watcher.connect();
    try {
      await waitFor(async () => {
        const r = await watcher.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = $1 AND wait_event_type = 'Lock' AND backend_start > $2
              AND query LIKE '%"users"%'`,
          [db.name, t0.t],
        );
        return (r.rows[0] as { n: number }).n > 0;
      }, "the new worker to wait for the users table");
    } finally {
      await watcher.end();
    }

    // Meanwhile the operator changes the policy and reloads.
    writeFileSync(join(dir, "policy-src", "main.cedar"), NO_SSH);
    const edited = loadPolicySet(join(dir, "policies")).version;
    expect(edited).not.toBe(before.body.policy_version);
    zt.child.kill("SIGHUP");
    await waitFor(() => /zt: policies reloaded/.test(zt.output()), "the primary's reload");
    await admin.query("ROLLBACK");

    const after = await readyzUntil(
      zt,
      "every worker on the reloaded set",
      (r) => r.status === 200 && r.body.proxy_workers_listening === 2,
    );
    expect(after.body.policy_version).toBe(edited);
    for (const w of after.body.proxy_worker_status!) expect(w.policy_version).toBe(edited);
  }, 120_000);
});
