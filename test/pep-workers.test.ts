/**
 * `listen.proxy_workers`: the real `zt up` runs its PEP in worker processes that share
 * the listening port and nothing but the store. Decisions, denials and audit records
 * work from every worker; a revocation made by another process reaches all of them; a
 * worker that dies is replaced; the audit chain written by several processes verifies;
 * stopping zt stops its workers.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as OTPAuth from "otpauth";
import { login, request } from "./helpers/http-client.js";
import {
  runZt,
  startZtUp,
  tempDir,
  workerPids,
  writeConfig,
  type UpProcess,
} from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";

const POLICY = `
@id("eng-app")
@reason("eng-may-use-app")
permit (principal in Group::"eng", action, resource == App::"app");
`;
const HOST = "app.localhost";

function totp(secret: string, step: number): string {
  return new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret) }).generate({
    timestamp: Date.now() + step * 30_000,
  });
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("zt up with listen.proxy_workers: 2", () => {
  let dir: string;
  let config: string;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let zt: UpProcess;
  let port: number;
  const env = {
    ZT_LISTEN__PROXY: "127.0.0.1:0",
    ZT_LISTEN__API: "127.0.0.1:0",
    ZT_LISTEN__PROXY_WORKERS: "2",
  };
  const secrets: Record<string, string> = {};
  // TOTP codes are single-use and accepted ±1 step: each sign-in uses the next step.
  const steps: Record<string, number> = { alice: -1, bob: -1, carol: -1 };
  const signIn = async (name: string) => {
    const l = await login(
      port,
      HOST,
      name,
      `pw-${name}-correct-horse`,
      totp(secrets[name]!, steps[name]!++),
    );
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    return { cookie: l.cookie!, sessionId: String(l.body["session_id"]) };
  };
  const get = (cookie: string) => request(port, { host: HOST, path: "/", headers: { cookie } });

  beforeAll(async () => {
    dir = tempDir();
    upstream = await startRecordingUpstream();
    config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: workers.test
routes:
  - name: app
    from: http://${HOST}
    to: http://127.0.0.1:${upstream.port}
policies: ./policies
mfa: { max_failures: 50 }
`,
      { "main.cedar": POLICY },
    );
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    for (const [name, group] of [
      ["alice", "eng"],
      ["bob", "ops"],
      ["carol", "eng"],
    ] as const) {
      const r = await runZt(
        ["--config", config, "user", "add", name, "--group", group, "--password-stdin", "--json"],
        { env, input: `pw-${name}-correct-horse\n` },
      );
      expect(r.code, r.stderr).toBe(0);
      secrets[name] = (JSON.parse(r.stdout) as { totp_secret: string }).totp_secret;
    }
    zt = await startZtUp(["--config", config, "up"], { env });
    port = Number(new URL(zt.pepUrl).port);
  });

  afterAll(async () => {
    await zt?.stop();
    await upstream?.close();
  });

  it("serves through two worker processes sharing one port, and audits each decision", async () => {
    expect(zt.output()).toContain("(2 worker processes)");
    expect(workerPids(zt.child.pid!)).toHaveLength(2);
    const alice = await signIn("alice");
    for (let i = 0; i < 30; i++) expect((await get(alice.cookie)).status).toBe(200);
    expect(upstream.seen.at(-1)!.headers["x-zt-assertion"]).toMatch(/^ey/);
    const tail = await runZt(["--config", config, "audit", "tail", "--json", "-n", "100"], {
      env,
    });
    expect(tail.code, tail.stderr).toBe(0);
    const peps = new Set(
      tail.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { kind: string; data?: { pep?: string } })
        .filter((e) => e.kind === "decision")
        .map((e) => e.data?.pep),
    );
    expect(peps.size).toBeGreaterThan(0);
    for (const p of peps) expect(["pep-1", "pep-2"]).toContain(p);
  });

  it("counts the workers' decisions in the API's /metrics", async () => {
    const api = new URL(zt.apiUrl);
    const scrape = async () => {
      const r = await request(Number(api.port), { host: api.host, path: "/metrics" });
      expect(r.status).toBe(200);
      return r.body
        .split("\n")
        .filter((l) => l.startsWith("zt_decisions_total{") && l.includes('verdict="allow"'))
        .reduce((n, l) => n + Number(l.split(" ").at(-1)), 0);
    };
    const before = await scrape();
    const carol = await signIn("carol");
    for (let i = 0; i < 12; i++) expect((await get(carol.cookie)).status).toBe(200);
    // Only the workers decide here: the primary's own registry never counts these.
    expect((await scrape()) - before).toBe(12);
  });

  it("explains a denial made in a worker: 403, decision id, zt audit explain", async () => {
    const bob = await signIn("bob");
    const r = await get(bob.cookie);
    expect(r.status).toBe(403);
    const id = r.json<{ error: { decision_id: string } }>().error.decision_id;
    expect(id).toMatch(/^dec_/);
    const explained = await until("the denial in the audit log", async () => {
      const x = await runZt(["--config", config, "audit", "explain", id], { env });
      return x.code === 0 ? x.stdout : undefined;
    });
    expect(explained).toContain(id);
  });

  it("applies a revocation made by another process in every worker", async () => {
    const alice = await signIn("alice");
    expect((await get(alice.cookie)).status).toBe(200);
    const r = await runZt(["--config", config, "session", "revoke", alice.sessionId], { env });
    expect(r.code, r.stderr).toBe(0);
    // Fresh connections land on either worker: 20 refusals in a row from both.
    await until("every worker to refuse the revoked session", async () => {
      for (let i = 0; i < 20; i++) if ((await get(alice.cookie)).status !== 401) return undefined;
      return true;
    });
  });

  it("replaces a worker that dies, and keeps serving meanwhile", async () => {
    const before = workerPids(zt.child.pid!);
    expect(before).toHaveLength(2);
    process.kill(before[0]!, "SIGKILL");
    const alice = await signIn("alice");
    for (let i = 0; i < 10; i++) expect((await get(alice.cookie)).status).toBe(200);
    const after = await until("a replacement worker", async () => {
      const now = workerPids(zt.child.pid!);
      return now.length === 2 && !now.includes(before[0]!) ? now : undefined;
    });
    expect(after).toContain(before[1]);
    expect(zt.output()).toMatch(/PEP worker \d exited \(SIGKILL\); starting a new one/);
  });

  it("keeps one verifiable audit chain written by several processes", async () => {
    const v = await runZt(["--config", config, "audit", "verify"], { env });
    expect(v.code, v.stdout + v.stderr).toBe(0);
  });

  it("stops its workers when it stops", async () => {
    const pids = workerPids(zt.child.pid!);
    expect(pids).toHaveLength(2);
    await zt.stop();
    await until("the workers to exit", async () =>
      pids.every((p) => {
        try {
          process.kill(p, 0);
          return false;
        } catch {
          return true;
        }
      })
        ? true
        : undefined,
    );
  });
});
