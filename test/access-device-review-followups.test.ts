/**
 * Regression tests for the follow-ups of the JIT access and device trust review, through
 * the real `bin/zt` (built by `npm run build`) in child processes over a real store
 * (SQLite; PostgreSQL where a race needs a row lock to be made deterministic). Each test
 * is named after what it stops.
 */
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import {
  addUsers,
  expectCleanError,
  expectConfigKeysRefused,
  expectOk,
  masterKeyEnv,
  okJson,
  requestAccess,
  ztStoreForSuite,
} from "./helpers/zt-cli.js";
import { startLockRace, startPostgresZt, type LockRace } from "./helpers/postgres-zt.js";
import { postgresAvailable } from "./store-fixture.js";

const env = masterKeyEnv();

interface AuditLine {
  kind: string;
  outcome: string;
  subject: string;
  route?: string;
  reason?: string;
  data?: Record<string, unknown>;
}

describe("review follow-ups: break-glass, device enrolment, TTL display", () => {
  const store = ztStoreForSuite({
    prefix: "zt-access-followups-",
    env,
    yaml: `routes:
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
  - { name: db-admin, from: "http://db.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    payroll: { approvers: fin }
  breakglass: { accounts: [oncall], resources: [db-admin] }
devices:
  auto_approve_groups: [staff]
`,
    users: [
      ["alice", []],
      ["oncall", []],
      ["fin1", ["fin"]],
      ["dave", ["staff"]],
    ],
  });
  const { zt } = store;

  async function audit(): Promise<AuditLine[]> {
    return expectOk(await zt(["audit", "export"]))
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
    expectOk(await zt(["user", "disable", "dave"]));
    expectCleanError(
      await zt([
        "device",
        "enroll",
        "--as",
        "dave",
        "--key-dir",
        join(store.dir, "dave-key"),
        "--name",
        "d1",
      ]),
      77,
      "ZT_USER_DISABLED",
      /dave is disabled/,
    );
    const devices = JSON.parse(
      expectOk(await zt(["device", "list", "--json"])).stdout,
    ) as unknown[];
    expect(devices).toEqual([]);
    expect(
      (await audit()).filter((e) => e.kind === "device.enroll" && e.outcome === "success"),
    ).toEqual([]);
  }, 60_000);

  it("shows a TTL under a minute in seconds, not as 0m", async () => {
    const r = await requestAccess(zt, {
      as: "alice",
      resource: "payroll",
      reason: "quick look",
      ttl: "20s",
    });
    expect(r["ttl"]).toBe("20s");
  }, 60_000);
});

describe("review follow-ups: config durations that are not durations", () => {
  it("reports an unparsable access or devices duration as ZT_CONFIG_INVALID naming the key, not ZT_BAD_REQUEST", async () => {
    await expectConfigKeysRefused(env, [
      ["access:\n  max_ttl: abc\n", ["access", "list"], "access.max_ttl"],
      ["access:\n  pending_ttl: 5x\n", ["access", "list"], "access.pending_ttl"],
      ["access:\n  breakglass: { ttl: soon }\n", ["access", "list"], "access.breakglass.ttl"],
      [
        'access:\n  resources:\n    "db-admin": { approvers: dba, max_ttl: forever }\n',
        ["access", "list"],
        "access.resources.db-admin.max_ttl",
      ],
      ["devices: { report_interval: often }\n", ["device", "list"], "devices.report_interval"],
    ]);
  }, 60_000);
});

const PG = await postgresAvailable();

describe.runIf(PG)("review follow-ups on PostgreSQL", () => {
  it("never lets an approval through from an approver removed from the group while the approval was under way", async () => {
    const { db, zt, cleanup } = await startPostgresZt({
      prefix: "zt-approve-race-",
      env,
      yaml: `routes:
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    payroll: { approvers: fin }
`,
    });
    let race: LockRace | undefined;
    try {
      race = await startLockRace(db);
      await addUsers(zt, [
        ["alice", []],
        ["fin1", ["fin"]],
      ]);
      const request = await requestAccess(zt, {
        as: "alice",
        resource: "payroll",
        reason: "quarter close",
      });
      const id = request["id"] as string;

      // Hold the request's row: the approval waits on it, and meanwhile fin1 leaves the
      // approver group (committed). The approval must judge fin1's membership after the
      // wait, not before it.
      await race.lock.query("BEGIN");
      await race.lock.query("SELECT id FROM access_requests WHERE id = $1 FOR UPDATE", [id]);
      const approving = zt(["access", "approve", id, "--as", "fin1", "--json"]);
      await race.waitForLockWaiters(
        "the approval to wait on the request's row",
        1,
        "%access_requests%",
      );
      await race.watch.query(
        `DELETE FROM user_groups WHERE group_name = 'fin' AND user_id = (SELECT id FROM users WHERE name = 'fin1')`,
      );
      await race.lock.query("COMMIT");

      expectCleanError(await approving, 77, "ZT_ACCESS_NOT_APPROVER", /fin1/);
      expect(okJson(await zt(["access", "show", id]))).toMatchObject({
        status: "pending",
        approvals: [],
      });
    } finally {
      await race?.end();
      await cleanup();
    }
  }, 120_000);
});
