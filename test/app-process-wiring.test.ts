/**
 * How `zt up` wires its processes, seen from outside: a real `zt up` (one process, or a
 * primary with `listen.proxy_workers` worker processes), changes made by the real CLI or
 * straight in the store from another process, and what the running zt does with them.
 *
 * - a policy file edited while zt starts is in force in the primary once it is ready
 *   (it loaded the set, then only later began watching the folder);
 * - /readyz is not "ready" when no PEP worker is listening, and a worker slot whose
 *   replacements kept failing is tried again (it was given up for good);
 * - SIGTERM to the whole process group (systemd's default) does not make the primary
 *   start new workers while it shuts down;
 * - the PEP does not answer before the ban cache it consults is loaded (a banned
 *   source was served while zt started);
 * - a certificate revoked while zt starts is refused (the deny list was read before the
 *   event position was taken, so the revocation's event was never delivered).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { join } from "node:path";
import pg from "pg";
import { loadPolicySet } from "../src/policy/index.js";
import { request } from "./helpers/http-client.js";
import { freePort } from "./helpers/free-port.js";
import {
  OPERATOR_AUTH,
  ROOT,
  ZT_BIN,
  runZt,
  tempDir,
  withOperatorToken,
  workerPids,
  writeConfig,
} from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "./store-fixture.js";

const PG = await postgresAvailable();
const HOST = "app.localhost";
const PERMIT_ALL = `@id("all")\npermit (principal, action, resource);\n`;

/** A `zt up` child whose output we follow from its first line (not only from "ready"). */
interface Zt {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

const started: Zt[] = [];

function spawnZt(config: string, env: Record<string, string>, detached = false): Zt {
  const child = spawn(process.execPath, [ZT_BIN, "--config", config, "up"], {
    cwd: ROOT,
    // The operator token opens /readyz's detail.
    env: { ...process.env, ...withOperatorToken(env) },
    stdio: ["ignore", "pipe", "pipe"],
    detached,
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const zt = { child, output: () => out, exited };
  started.push(zt);
  return zt;
}

afterEach(async () => {
  for (const z of started.splice(0)) {
    if (z.child.exitCode === null && z.child.signalCode === null) {
      z.child.kill("SIGTERM");
      await z.exited;
    }
  }
});

async function until<T>(
  what: string,
  f: () => Promise<T | undefined> | T | undefined,
  ms = 30_000,
) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const ready = (z: Zt) =>
  until("zt: ready", () => {
    if (z.child.exitCode !== null) throw new Error(`zt up exited:\n${z.output()}`);
    return z.output().includes("zt: ready") ? true : undefined;
  });

function listening(z: Zt, what: "PEP" | "API"): number {
  const m = new RegExp(`${what} listening on \\S+?:(\\d+)`).exec(z.output());
  return Number(m![1]);
}

async function readyz(apiPort: number) {
  const r = await request(apiPort, { host: "127.0.0.1", path: "/readyz", headers: OPERATOR_AUTH });
  return { status: r.status, body: r.json<{ status: string; policy_version: string }>() };
}

function appConfig(upstreamPort: number, extra = "", scheme = "http"): string {
  return `data_dir: ./data
trust_domain: wiring.test
routes:
  - name: app
    from: ${scheme}://${HOST}
    to: http://127.0.0.1:${upstreamPort}
policies: ./policies
${extra}`;
}

describe("zt up with PEP workers", () => {
  const env = {
    ZT_LISTEN__PROXY: "127.0.0.1:0",
    ZT_LISTEN__API: "127.0.0.1:0",
    ZT_LISTEN__PROXY_WORKERS: "2",
  };
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  beforeAll(async () => {
    upstream = await startRecordingUpstream();
  });
  afterAll(async () => upstream?.close());

  it("puts a policy edited while it starts into force in the primary (the set /readyz reports and ssh:sign uses)", async () => {
    const dir = tempDir();
    const config = writeConfig(dir, appConfig(upstream.port), { "main.cedar": PERMIT_ALL });
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    const zt = spawnZt(config, env);
    // Workers are forked once the primary has loaded its policy set: edit it now.
    await until("the first PEP worker", () =>
      workerPids(zt.child.pid!).length > 0 ? true : undefined,
    );
    writeFileSync(
      join(dir, "policies", "main.cedar"),
      `${PERMIT_ALL}@id("no-ssh")\nforbid (principal, action == Action::"ssh:sign", resource);\n`,
    );
    const edited = loadPolicySet(join(dir, "policies")).version;
    await ready(zt);
    const api = listening(zt, "API");
    await until("the primary to hold the edited set", async () =>
      (await readyz(api)).body.policy_version === edited ? true : undefined,
    );
  });

  it("is not ready while no worker listens, and tries a failing worker slot again later", async () => {
    const dir = tempDir();
    const config = writeConfig(dir, appConfig(upstream.port), { "main.cedar": PERMIT_ALL });
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    // A fixed port: once no worker holds it, port 0 would be a new one.
    const port = await freePort();
    const zt = spawnZt(config, { ...env, ZT_LISTEN__PROXY: `127.0.0.1:${port}` });
    await ready(zt);
    const api = listening(zt, "API");
    expect((await readyz(api)).status).toBe(200);
    // An invalid edit: every running process keeps its last good set, but a worker
    // started now cannot load it.
    writeFileSync(join(dir, "policies", "main.cedar"), "permit (");
    await until("the reload refused in both workers", () =>
      (zt.output().match(/zt\[w\d\]: policy reload refused/g) ?? []).length >= 2 ? true : undefined,
    );
    for (const pid of workerPids(zt.child.pid!)) process.kill(pid, "SIGKILL");
    await until("both worker slots to hit the restart limit", () =>
      (zt.output().match(/too many restarts/g) ?? []).length >= 2 ? true : undefined,
    );
    const r = await readyz(api);
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.status).toBe("degraded");
    // The file is fixed: the slots are tried again once the restart window allows.
    writeFileSync(join(dir, "policies", "main.cedar"), PERMIT_ALL);
    await until(
      "a worker listening again",
      async () => ((await readyz(api)).status === 200 ? true : undefined),
      90_000,
    );
    expect((await request(port, { host: HOST, path: "/.well-known/zt/jwks.json" })).status).toBe(
      200,
    );
  }, 150_000);

  it("starts no new worker when SIGTERM goes to the whole process group", async () => {
    // A webhook witness that never answers keeps the primary's audit shutdown busy.
    const sockets = new Set<Socket>();
    const silent: Server = createServer((s) => {
      sockets.add(s);
      s.on("error", () => undefined);
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const witness = (silent.address() as AddressInfo).port;
    try {
      const dir = tempDir();
      const config = writeConfig(
        dir,
        appConfig(
          upstream.port,
          `audit:\n  witness:\n    webhook: http://127.0.0.1:${witness}/witness\n`,
        ),
        { "main.cedar": PERMIT_ALL },
      );
      expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
      const zt = spawnZt(config, env, true);
      await ready(zt);
      expect(workerPids(zt.child.pid!)).toHaveLength(2);
      // systemd's KillMode=control-group, or kill -TERM -PGID: every process gets it.
      process.kill(-zt.child.pid!, "SIGTERM");
      expect(await zt.exited).toBe(0);
      expect(zt.output()).not.toMatch(/starting a new one/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  }, 60_000);
});

describe.runIf(PG)("zt up starting while the store changes (PostgreSQL)", () => {
  let db: TestDatabase | undefined;
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

  /**
   * Waits until a zt connection to `db` waits for a table lock. (On its own connection:
   * pg_stat_activity is read once per transaction, and the locking one stays open.)
   */
  async function blockedOnLock(url: string, database: string, zt: Zt): Promise<void> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await until("zt to wait for the locked table", async () => {
        if (zt.child.exitCode !== null) throw new Error(`zt up exited:\n${zt.output()}`);
        const r = await client.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = $1 AND wait_event_type = 'Lock' AND application_name = 'zt'`,
          [database],
        );
        return (r.rows[0] as { n: number }).n > 0 ? true : undefined;
      });
    } finally {
      await client.end();
    }
  }

  it("refuses a banned source from its first answer (the PEP listened before the ban cache was read)", async () => {
    db = await createTestDatabase();
    dbs.push(db);
    const upstream = await startRecordingUpstream();
    try {
      const port = await freePort();
      const env = {
        ZT_DATABASE_URL: db.url,
        ZT_LISTEN__PROXY: `127.0.0.1:${port}`,
        ZT_LISTEN__API: "127.0.0.1:0",
        ZT_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
      };
      const dir = tempDir();
      const config = writeConfig(dir, appConfig(upstream.port), { "main.cedar": PERMIT_ALL });
      expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
      const ban = await runZt(["--config", config, "ban", "add", "127.0.0.1", "--for", "1h"], {
        env,
      });
      expect(ban.code, ban.stderr).toBe(0);
      // Hold the bans table: zt starts, and stops where it reads the bans.
      admin = new pg.Client({ connectionString: db.url });
      await admin.connect();
      await admin.query("BEGIN");
      await admin.query("LOCK TABLE audit_bans IN ACCESS EXCLUSIVE MODE");
      const zt = spawnZt(config, env);
      await blockedOnLock(db.url, db.name, zt);
      // Whatever answers now must refuse the banned source.
      const early = await request(port, { host: HOST, path: "/" }).catch(
        (e: NodeJS.ErrnoException) => String(e.code),
      );
      if (typeof early !== "string") expect(early.status, early.body).toBe(403);
      else expect(early).toBe("ECONNREFUSED");
      await admin.query("ROLLBACK");
      await ready(zt);
      expect((await request(port, { host: HOST, path: "/" })).status).toBe(403);
    } finally {
      await upstream.close();
    }
  });

  it("refuses a certificate revoked while it starts", async () => {
    db = await createTestDatabase();
    dbs.push(db);
    const dir = tempDir();
    const env = {
      ZT_DATABASE_URL: db.url,
      ZT_LISTEN__PROXY: "127.0.0.1:0",
      ZT_LISTEN__API: "127.0.0.1:0",
      ZT_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
    };
    const upstream = await startRecordingUpstream();
    try {
      const config = writeConfig(
        dir,
        appConfig(upstream.port, "tls: { from_ca: true, client_certs: optional }\n", "https"),
        { "main.cedar": PERMIT_ALL },
      );
      expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
      const issued = await runZt(
        [
          "--config",
          config,
          "cert",
          "issue",
          "--spiffe-id",
          "spiffe://wiring.test/web",
          "--out",
          dir,
          "--json",
        ],
        { env },
      );
      expect(issued.code, issued.stderr).toBe(0);
      const { serial } = JSON.parse(issued.stdout) as { serial: string };
      // Hold the events table: zt stops where it first reads it.
      admin = new pg.Client({ connectionString: db.url });
      await admin.connect();
      await admin.query("BEGIN");
      await admin.query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE");
      const zt = spawnZt(config, env);
      await blockedOnLock(db.url, db.name, zt);
      // Meanwhile another process revokes the SVID: what `zt cert revoke` commits, the
      // certificate row and its cert.revoked event.
      const now = Date.now();
      const row = await admin.query(
        `UPDATE pki_certs SET revoked_at = $1, revoke_reason = 'key-compromise'
          WHERE serial = $2 RETURNING not_after`,
        [now, serial],
      );
      expect(row.rowCount).toBe(1);
      await admin.query(`INSERT INTO events (ts, kind, data) VALUES ($1, 'cert.revoked', $2)`, [
        now,
        JSON.stringify({
          kind: "x509",
          serials: [serial],
          not_after: [Number((row.rows[0] as { not_after: string }).not_after)],
          reason: "key-compromise",
        }),
      ]);
      await admin.query("COMMIT");
      await ready(zt);
      const pep = listening(zt, "PEP");
      const status = await new Promise<number>((resolve, reject) => {
        const req = https.request(
          {
            host: "127.0.0.1",
            port: pep,
            path: "/",
            servername: "localhost",
            headers: { host: HOST },
            ca: readFileSync(join(dir, "bundle.pem")),
            key: readFileSync(join(dir, "svid.key")),
            cert: readFileSync(join(dir, "chain.pem")),
            agent: false,
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on("error", reject);
        req.end();
      });
      expect(status).toBe(403);
    } finally {
      await upstream.close();
    }
  });
});
