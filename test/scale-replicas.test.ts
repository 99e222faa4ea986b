/**
 * Scale-out end to end: two real `zt up` processes (replicas A and B, each with its own
 * data_dir) sharing one real PostgreSQL database, a real upstream, real sockets.
 *
 * - a session created through A works through B;
 * - `zt session revoke` / `zt user disable` issued against the shared database is
 *   enforced by B (the time it took is printed; `npm run bench:scale` measures it);
 * - under a steady request load, `kill -9` of A: requests fail over to B, no
 *   acknowledged audit event is lost, the chain stays gap-free and `zt audit verify`
 *   passes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import pg from "pg";
import * as OTPAuth from "otpauth";
import { login, request } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";
import {
  createTestDatabase,
  postgresAvailable,
  waitFor,
  type TestDatabase,
} from "./store-fixture.js";

const PG = await postgresAvailable();

const POLICY = `
@id("eng-whoami")
permit (principal in Group::"eng", action in [Action::"GET", Action::"POST"], resource == App::"whoami")
when { context.mfa_age_seconds < 3600 };
`;
const HOST = "whoami.localhost";

interface Enrolled {
  totp_secret: string;
}

function totp(secret: string, stepOffset = 0): string {
  const t = new OTPAuth.TOTP({
    secret: OTPAuth.Secret.fromBase32(secret),
    digits: 6,
    period: 30,
    algorithm: "SHA1",
  });
  return t.generate({ timestamp: Date.now() + stepOffset * 30_000 });
}

describe.runIf(PG)("two zt up replicas on one PostgreSQL", () => {
  let db: TestDatabase;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let configA: string;
  let configB: string;
  let a: UpProcess;
  let b: UpProcess;
  let portA: number;
  let portB: number;
  let env: Record<string, string>;
  const users: Record<string, Enrolled> = {};
  const logins: Record<string, number> = {};

  /** Logs in through one replica; each login uses a fresh TOTP step (replay protection is shared). */
  async function loginVia(port: number, name: string): Promise<string> {
    // TOTP replay protection is shared by all replicas: each login of a user needs a
    // later time step than the last (the verifier accepts one step either side).
    const n = (logins[name] = (logins[name] ?? -1) + 1);
    if (n > 2) throw new Error("at most 3 logins per user in this suite");
    const code = totp(users[name]!.totp_secret, n - 1);
    const l = await login(port, HOST, name, `pw-${name}-correct-horse`, code);
    if (l.status !== 200) throw new Error(`login ${name}: ${l.status} ${JSON.stringify(l.body)}`);
    return l.cookie!;
  }
  const get = (port: number, cookie: string) =>
    request(port, { host: HOST, path: "/x", headers: { cookie, accept: "application/json" } });

  beforeAll(async () => {
    db = await createTestDatabase();
    upstream = await startRecordingUpstream();
    env = {
      ZT_DATABASE_URL: db.url,
      ZT_MASTER_KEY: randomBytes(32).toString("base64"),
      ZT_LISTEN__PROXY: "127.0.0.1:0",
      ZT_LISTEN__API: "127.0.0.1:0",
    };
    const yaml = `data_dir: ./data
trust_domain: scale.test
routes:
  - name: whoami
    from: http://${HOST}:8443
    to: http://127.0.0.1:${upstream.port}
policies: ./policies
mfa: { max_failures: 50 }
`;
    configA = writeConfig(tempDir("zt-replica-a-"), yaml, { "main.cedar": POLICY });
    configB = writeConfig(tempDir("zt-replica-b-"), yaml, { "main.cedar": POLICY });
    const init = await runZt(["--config", configA, "init"], { env });
    expect(init.code, init.stderr).toBe(0);
    for (const name of ["alice", "bob", "carol"]) {
      const r = await runZt(
        [
          "--config",
          configA,
          "user",
          "add",
          name,
          "--group",
          "eng",
          "--password-stdin",
          "--no-qr",
          "--json",
        ],
        {
          env,
          input: `pw-${name}-correct-horse\n`,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      users[name] = JSON.parse(r.stdout) as Enrolled;
    }
    [a, b] = await Promise.all([
      startZtUp(["--config", configA, "up"], { env }),
      startZtUp(["--config", configB, "up"], { env }),
    ]);
    portA = Number(new URL(a.pepUrl).port);
    portB = Number(new URL(b.pepUrl).port);
  });

  afterAll(async () => {
    // (a replica killed by a signal has exited already: stop() would wait for ever)
    for (const p of [a, b])
      if (p && p.child.exitCode === null && p.child.signalCode === null) await p.stop();
    await upstream?.close();
    await db?.drop();
  });

  it("a session created through replica A works through replica B", async () => {
    const cookie = await loginVia(portA, "alice");
    expect((await get(portA, cookie)).status).toBe(200);
    const viaB = await get(portB, cookie);
    expect(viaB.status, viaB.body).toBe(200);
    expect(upstream.seen.at(-1)!.headers["x-zt-assertion"]).toBeDefined();
  });

  it("zt session revoke against the shared database is enforced by replica B", async () => {
    const cookie = await loginVia(portA, "alice");
    expect((await get(portB, cookie)).status).toBe(200);
    const t0 = Date.now();
    const r = await runZt(["--config", configA, "session", "revoke", "--user", "alice"], { env });
    expect(r.code, r.stderr).toBe(0);
    const acked = Date.now();
    let status = 0;
    await waitFor(
      async () => {
        status = (await get(portB, cookie)).status;
        return status !== 200;
      },
      "replica B to deny the revoked session",
      60_000,
    );
    expect(status).toBe(401);
    console.info(
      `revocation enforced on B ${Date.now() - acked} ms after the CLI returned (${acked - t0} ms CLI run)`,
    );
    // and A as well
    await waitFor(
      async () => (await get(portA, cookie)).status === 401,
      "replica A to deny it too",
      60_000,
    );
  });

  it("zt user disable is enforced by both replicas", async () => {
    const cookie = await loginVia(portB, "bob");
    expect((await get(portA, cookie)).status).toBe(200);
    const r = await runZt(["--config", configB, "user", "disable", "bob"], { env });
    expect(r.code, r.stderr).toBe(0);
    await waitFor(
      async () => (await get(portA, cookie)).status !== 200,
      "replica A to deny the disabled user",
      60_000,
    );
    await waitFor(
      async () => (await get(portB, cookie)).status !== 200,
      "replica B to deny the disabled user",
      60_000,
    );
  });

  it("kill -9 of replica A under load: requests fail over, no acknowledged audit event is lost, the chain verifies", async () => {
    const cookie = await loginVia(portA, "carol");
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      let stop = false;
      let ok = 0;
      let failedOver = 0;
      const failures: string[] = [];
      // Steady load, round-robin over A and B like a load balancer; a request that
      // cannot reach a replica is retried on the other one (fail over).
      const worker = async (start: number) => {
        let i = start;
        while (!stop) {
          const ports = i++ % 2 ? [portA, portB] : [portB, portA];
          let done = false;
          for (const [n, port] of ports.entries()) {
            try {
              const r = await get(port!, cookie);
              if (r.status === 200) ok++;
              else failures.push(`status ${r.status} from ${port === portA ? "A" : "B"}`);
              if (n > 0) failedOver++;
              done = true;
              break;
            } catch {
              /* replica unreachable: try the next one */
            }
          }
          if (!done) failures.push("no replica answered");
        }
      };
      const workers = [0, 1, 2, 3].map((s) => worker(s));
      await waitFor(() => ok > 200, "load to get going", 60_000);

      // Acknowledged events: a CLI action that returned 0 (its audit record is committed
      // before exit) and every record the database has acknowledged so far.
      const ack = await runZt(
        ["--config", configA, "user", "add", "dave", "--group", "eng", "--no-qr", "--json"],
        { env, input: "" },
      );
      expect(ack.code, ack.stderr).toBe(0);
      const committed = await client.query<{ id: string }>("SELECT id FROM audit_events");
      const acknowledged = new Set(committed.rows.map((r) => r.id));
      expect(acknowledged.size).toBeGreaterThan(0);

      a.child.kill("SIGKILL");
      await new Promise((r) => a.child.once("exit", r));
      const okAtKill = ok;
      await waitFor(
        () => ok > okAtKill + 200 && failedOver > 0,
        "load to continue through B",
        60_000,
      );
      stop = true;
      await Promise.all(workers);
      expect(failures).toEqual([]);

      await b.stop(); // flushes B's buffered audit records
      const after = await client.query<{ id: string; seq: number }>(
        "SELECT id, seq FROM audit_events ORDER BY seq",
      );
      const present = new Set(after.rows.map((r) => r.id));
      const lost = [...acknowledged].filter((id) => !present.has(id));
      expect(lost).toEqual([]);
      // one gap-free chain across both replicas
      expect(after.rows.map((r) => Number(r.seq))).toEqual(after.rows.map((_, i) => i + 1));
      const kinds = await client.query<{ kind: string }>("SELECT DISTINCT kind FROM audit_events");
      expect(kinds.rows.map((r) => r.kind)).toEqual(expect.arrayContaining(["user.add"]));

      const verify = await runZt(["--config", configB, "audit", "verify"], { env });
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    } finally {
      await client.end();
    }
  });
});
