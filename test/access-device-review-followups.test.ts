/**
 * Regression tests for the follow-ups of the JIT access and device trust review, through
 * the real `bin/zt` (built by `npm run build`) in child processes over a real store
 * (SQLite; PostgreSQL where a race needs a row lock to be made deterministic). Each test
 * is named after what it stops.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { runZt, tempDir, writeConfig, type RunResult } from "./helpers/zt-process.js";
import { createTestDatabase, postgresAvailable, waitFor } from "./store-fixture.js";

const PASSWORD = "pw-correct-horse-battery";
const env = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };

function expectCleanError(r: RunResult, exit: number, code: string, message: RegExp): void {
  expect(r.code, r.stderr).toBe(exit);
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

function ok(r: RunResult): RunResult {
  expect(r.code, r.stderr).toBe(0);
  return r;
}

function json(r: RunResult): Record<string, unknown> {
  return JSON.parse(ok(r).stdout) as Record<string, unknown>;
}

interface AuditLine {
  kind: string;
  outcome: string;
  subject: string;
  route?: string;
  reason?: string;
  data?: Record<string, unknown>;
}

describe("review follow-ups: break-glass, device enrolment, TTL display", () => {
  let dir: string;
  let config: string;
  const zt = (args: string[], input?: string): Promise<RunResult> =>
    runZt(["--config", config, ...args], { env, ...(input !== undefined ? { input } : {}) });

  beforeAll(async () => {
    dir = tempDir("zt-access-followups-");
    config = writeConfig(
      dir,
      `data_dir: ./data
routes:
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
  - { name: db-admin, from: "http://db.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    payroll: { approvers: fin }
  breakglass: { accounts: [oncall], resources: [db-admin] }
devices:
  auto_approve_groups: [staff]
`,
      {},
    );
    ok(await zt(["init"]));
    for (const [name, groups] of [
      ["alice", []],
      ["oncall", []],
      ["fin1", ["fin"]],
      ["dave", ["staff"]],
    ] as const) {
      ok(await zt(["user", "add", name, "--password-stdin"], PASSWORD));
      for (const g of groups) ok(await zt(["user", "groups", name, "--add", g]));
    }
  }, 180_000);

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function audit(): Promise<AuditLine[]> {
    return ok(await zt(["audit", "export"]))
      .stdout.split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as AuditLine);
  }

  it("audits every refused break-glass attempt, including one on a resource not in access.breakglass.resources", async () => {
    const attempt = (as: string, resource: string, reason = "INC-7 outage") =>
      zt(["breakglass", "--as", as, "--resource", resource, "--reason", reason]);
    expectCleanError(
      await attempt("oncall", "payroll"),
      64,
      "ZT_BAD_REQUEST",
      /payroll is not in access\.breakglass\.resources/,
    );
    expectCleanError(await attempt("oncall", "db-admin", "x"), 64, "ZT_BAD_REQUEST", /--reason/);
    expectCleanError(await attempt("alice", "db-admin"), 77, "ZT_ACCESS_NOT_APPROVER", /alice/);
    const refused = (await audit())
      .filter((e) => e.kind === "breakglass" && e.outcome === "failure")
      .map((e) => [e.subject, e.route, e.reason, e.data?.["severity"]]);
    expect(refused).toEqual([
      ["oncall", "payroll", "resource-not-breakglass", "critical"],
      ["oncall", "db-admin", "reason-invalid", "critical"],
      ["alice", "db-admin", "not-a-breakglass-account", "critical"],
    ]);
  }, 60_000);

  it("refuses to enrol (and auto-approve) a device for a disabled user", async () => {
    ok(await zt(["user", "disable", "dave"]));
    expectCleanError(
      await zt([
        "device",
        "enroll",
        "--as",
        "dave",
        "--key-dir",
        join(dir, "dave-key"),
        "--name",
        "d1",
      ]),
      77,
      "ZT_USER_DISABLED",
      /dave is disabled/,
    );
    const devices = JSON.parse(ok(await zt(["device", "list", "--json"])).stdout) as unknown[];
    expect(devices).toEqual([]);
    expect(
      (await audit()).filter((e) => e.kind === "device.enroll" && e.outcome === "success"),
    ).toEqual([]);
  }, 60_000);

  it("shows a TTL under a minute in seconds, not as 0m", async () => {
    const r = json(
      await zt([
        "access",
        "request",
        "--as",
        "alice",
        "--resource",
        "payroll",
        "--reason",
        "quick look",
        "--ttl",
        "20s",
        "--json",
      ]),
    );
    expect(r["ttl"]).toBe("20s");
  }, 60_000);
});

describe("review follow-ups: config durations that are not durations", () => {
  it("reports an unparsable access or devices duration as ZT_CONFIG_INVALID naming the key, not ZT_BAD_REQUEST", async () => {
    for (const [section, command, path] of [
      ["access:\n  max_ttl: abc\n", ["access", "list"], "access.max_ttl"],
      ["access:\n  pending_ttl: 5x\n", ["access", "list"], "access.pending_ttl"],
      ["access:\n  breakglass: { ttl: soon }\n", ["access", "list"], "access.breakglass.ttl"],
      [
        'access:\n  resources:\n    "db-admin": { approvers: dba, max_ttl: forever }\n',
        ["access", "list"],
        "access.resources.db-admin.max_ttl",
      ],
      ["devices: { report_interval: often }\n", ["device", "list"], "devices.report_interval"],
    ] as const) {
      const dir = tempDir("zt-durations-");
      try {
        const config = writeConfig(dir, `data_dir: ./data\n`, {});
        ok(await runZt(["--config", config, "init"], { env }));
        writeFileSync(config, `data_dir: ./data\n${section}`);
        const r = await runZt(["--config", config, ...command], { env });
        expectCleanError(r, 78, "ZT_CONFIG_INVALID", new RegExp(`${path.replace(/\./g, "\\.")}: `));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }, 60_000);
});

const PG = await postgresAvailable();

describe.runIf(PG)("review follow-ups on PostgreSQL", () => {
  it("never lets an approval through from an approver removed from the group while the approval was under way", async () => {
    const db = await createTestDatabase();
    const dir = tempDir("zt-approve-race-");
    const lock = new pg.Client({ connectionString: db.url });
    const watch = new pg.Client({ connectionString: db.url });
    try {
      const config = join(dir, "zt.yaml");
      writeFileSync(
        config,
        `data_dir: ${join(dir, "data")}
database_url: ${db.url}
routes:
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    payroll: { approvers: fin }
`,
      );
      const zt = (args: string[], input?: string) =>
        runZt(["--config", config, ...args], { env, ...(input ? { input } : {}) });
      ok(await zt(["init"]));
      ok(await zt(["user", "add", "alice", "--password-stdin"], PASSWORD));
      ok(await zt(["user", "add", "fin1", "--password-stdin"], PASSWORD));
      ok(await zt(["user", "groups", "fin1", "--add", "fin"]));
      const id = json(
        await zt([
          "access",
          "request",
          "--as",
          "alice",
          "--resource",
          "payroll",
          "--reason",
          "quarter close",
          "--json",
        ]),
      )["id"] as string;

      // Hold the request's row: the approval waits on it, and meanwhile fin1 leaves the
      // approver group (committed). The approval must judge fin1's membership after the
      // wait, not before it.
      await lock.connect();
      await watch.connect();
      await lock.query("BEGIN");
      await lock.query("SELECT id FROM access_requests WHERE id = $1 FOR UPDATE", [id]);
      const approving = zt(["access", "approve", id, "--as", "fin1", "--json"]);
      await waitFor(async () => {
        const r = await watch.query(
          `SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query ILIKE '%access_requests%'`,
          [db.name],
        );
        return (r.rowCount ?? 0) > 0;
      }, "the approval to wait on the request's row");
      await watch.query(
        `DELETE FROM user_groups WHERE group_name = 'fin' AND user_id = (SELECT id FROM users WHERE name = 'fin1')`,
      );
      await lock.query("COMMIT");

      expectCleanError(await approving, 77, "ZT_ACCESS_NOT_APPROVER", /fin1/);
      expect(json(await zt(["access", "show", id]))).toMatchObject({
        status: "pending",
        approvals: [],
      });
    } finally {
      await lock.end().catch(() => undefined);
      await watch.end().catch(() => undefined);
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
