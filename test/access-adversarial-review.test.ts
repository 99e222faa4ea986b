/**
 * Regression tests for the adversarial review of just-in-time access and break-glass,
 * through the real `bin/zt` (built by `npm run build`) in child processes, over a real
 * store (SQLite, and PostgreSQL where the store's locking is what is under test) and a
 * real webhook receiver on a loopback socket. Each test is named after what it stops.
 */
import { rmSync, writeFileSync } from "node:fs";
import pg_ from "pg";
import { afterEach, describe, expect, it } from "vitest";
import {
  addUsers,
  expectCleanError,
  expectConfigKeysRefused,
  expectOk,
  masterKeyEnv,
  okJson,
  requestAccess,
  ztCli,
  ztStoreForSuite,
  type ZtCli,
} from "./helpers/zt-cli.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { startWebhookReceiver } from "./helpers/webhook-receiver.js";
import { startLockRace, startPostgresZt, type LockRace } from "./helpers/postgres-zt.js";
import { postgresAvailable } from "./store-fixture.js";
import type { RunResult } from "./helpers/zt-process.js";
import { parseNotificationsConfig } from "../src/access/index.js";

const env = masterKeyEnv();

interface AuditLine {
  kind: string;
  outcome: string;
  subject: string | null;
  route?: string | null;
  reason?: string | null;
  data?: Record<string, unknown> | null;
}

async function auditOf(zt: ZtCli): Promise<AuditLine[]> {
  return expectOk(await zt(["audit", "export"]))
    .stdout.split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as AuditLine);
}

const ACCESS_YAML = `routes:
  - { name: db-admin, from: "http://db.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    db-admin: { approvers: leads }
  breakglass: { accounts: [oncall], resources: [db-admin] }
`;

describe("notifications.webhook with credentials in the URL", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("is refused at config load, naming the key and not echoing the password (it was accepted, every notification failed and the password went into the audit log)", async () => {
    const dir = tempDir("zt-webhook-userinfo-");
    dirs.push(dir);
    const config = writeConfig(dir, `data_dir: ./data\n${ACCESS_YAML}`, {});
    const zt = ztCli(config, env);
    expectOk(await zt(["init"]));
    await addUsers(zt, [["oncall", []]]);
    writeFileSync(
      config,
      `data_dir: ./data\n${ACCESS_YAML}notifications:\n  webhook: "http://hook:S3CRET-PW@127.0.0.1:9/hook"\n`,
    );
    const r = await zt([
      "breakglass",
      "--as",
      "oncall",
      "--resource",
      "db-admin",
      "--reason",
      "INC-7 outage",
    ]);
    expect(r.stdout + r.stderr).not.toContain("S3CRET-PW");
    expectCleanError(r, 78, "ZT_CONFIG_INVALID", /notifications\.webhook: .*credentials/);
    // Nothing was opened, and nothing anywhere in the audit log carries the password.
    writeFileSync(config, `data_dir: ./data\n${ACCESS_YAML}`);
    const audit = await auditOf(zt);
    expect(JSON.stringify(audit)).not.toContain("S3CRET-PW");
    expect(audit.filter((e) => e.kind === "breakglass.opened")).toEqual([]);
  }, 60_000);

  it("still says a webhook that is not a URL at all is not one (the credentials check does not throw on it)", () => {
    for (const webhook of ["not a url", "ftp://h/x", "http://user@127.0.0.1/x"])
      expect(() => parseNotificationsConfig({ webhook })).toThrow(
        expect.objectContaining({
          code: "ZT_CONFIG_INVALID",
          context: { path: "notifications.webhook" },
        }) as Error,
      );
  });
});

describe("disabling a user", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("ends their grants and pending requests, so enabling them again does not bring a grant back (a break-glass or JIT grant came back live)", async () => {
    const hook = await startWebhookReceiver();
    try {
      const dir = tempDir("zt-disable-grants-");
      dirs.push(dir);
      const config = writeConfig(
        dir,
        `data_dir: ./data\n${ACCESS_YAML}notifications: { webhook: "${hook.url}" }\n`,
        {},
      );
      const zt = ztCli(config, env);
      expectOk(await zt(["init"]));
      await addUsers(zt, [
        ["alice", []],
        ["lead", ["leads"]],
        ["oncall", []],
      ]);
      const bg = okJson(
        await zt([
          "breakglass",
          "--as",
          "oncall",
          "--resource",
          "db-admin",
          "--reason",
          "INC-7 outage",
          "--json",
        ]),
      );
      const granted = await requestAccess(zt, {
        as: "alice",
        resource: "db-admin",
        reason: "INC-8 schema fix",
      });
      expectOk(await zt(["access", "approve", granted["id"] as string, "--as", "lead"]));
      const pending = await requestAccess(zt, {
        as: "alice",
        resource: "db-admin",
        reason: "INC-9 follow-up",
      });

      for (const u of ["oncall", "alice"]) {
        expectOk(await zt(["user", "disable", u]));
        expectOk(await zt(["user", "enable", u]));
      }

      for (const id of [bg["id"], granted["id"], pending["id"]] as string[])
        expect(okJson(await zt(["access", "show", id]))).toMatchObject({
          status: "revoked",
          decided_by: "zt",
        });
      const active = JSON.parse(
        expectOk(await zt(["access", "list", "--status", "approved", "--json"])).stdout,
      ) as unknown[];
      expect(active).toEqual([]);
      const revoked = (await auditOf(zt))
        .filter((e) => e.kind === "access.revoked")
        .map((e) => [e.data?.["request_id"], e.reason]);
      expect(revoked).toEqual(
        expect.arrayContaining([
          [bg["id"], "user-disabled"],
          [granted["id"], "user-disabled"],
          [pending["id"], "user-disabled"],
        ]),
      );
      expect(revoked).toHaveLength(3);
      await hook.waitFor(
        (b) =>
          b["event"] === "access.revoked" &&
          (b["data"] as Record<string, unknown>)["request_id"] === bg["id"],
      );
      // Re-enabled, the break-glass account is still inside the cooldown of the one it had.
      expectCleanError(
        await zt([
          "breakglass",
          "--as",
          "oncall",
          "--resource",
          "db-admin",
          "--reason",
          "INC-7 again",
        ]),
        65,
        "ZT_ACCESS_STATE",
        /started less than 1h ago/,
      );
    } finally {
      await hook.close();
    }
  }, 120_000);
});

const PG = await postgresAvailable();

/**
 * Races made deterministic on PostgreSQL: a third connection holds the request's row, the
 * two commands queue behind it (seen waiting in pg_stat_activity), then it lets go.
 */
describe.runIf(PG)("concurrent decisions on one request (PostgreSQL)", () => {
  const yaml = `routes:
  - { name: one, from: "http://one.localhost:8443", to: "http://127.0.0.1:9" }
  - { name: two, from: "http://two.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    one: { approvers: leads }
    two: { approvers: leads, approvals: 2 }
`;

  async function race(
    o: { resource: string },
    commands: (id: string) => string[][],
  ): Promise<{ id: string; results: RunResult[]; zt: ZtCli; cleanup: () => Promise<void> }> {
    const pg = await startPostgresZt({ prefix: "zt-access-race-", env, yaml });
    let lock: LockRace | undefined;
    try {
      await addUsers(pg.zt, [
        ["alice", []],
        ["lead1", ["leads"]],
        ["lead2", ["leads"]],
      ]);
      const id = (
        await requestAccess(pg.zt, { as: "alice", resource: o.resource, reason: "INC-3 fix" })
      )["id"] as string;
      lock = await startLockRace(pg.db);
      await lock.lock.query("BEGIN");
      await lock.lock.query("SELECT id FROM access_requests WHERE id = $1 FOR UPDATE", [id]);
      const cmds = commands(id);
      const running = cmds.map((c) => pg.zt(c));
      await lock.waitForLockWaiters("both commands to wait on the request", cmds.length);
      await lock.lock.query("COMMIT");
      const results = await Promise.all(running);
      return { id, results, zt: pg.zt, cleanup: pg.cleanup };
    } catch (e) {
      await pg.cleanup();
      throw e;
    } finally {
      await lock?.end();
    }
  }

  function oneWinner(results: RunResult[]): number {
    const ok = results.flatMap((r, i) => (r.code === 0 ? [i] : []));
    expect(ok, results.map((r) => r.stderr).join("\n")).toHaveLength(1);
    for (const r of results) if (r.code !== 0) expectCleanError(r, 65, "ZT_ACCESS_STATE", /./);
    return ok[0]!;
  }

  it("counts one approver once when they approve twice at the same time (two sessions)", async () => {
    const approve = (id: string) => ["access", "approve", id, "--as", "lead1", "--json"];
    const { id, results, zt, cleanup } = await race({ resource: "two" }, (id) => [
      approve(id),
      approve(id),
    ]);
    try {
      oneWinner(results);
      expect(okJson(await zt(["access", "show", id]))).toMatchObject({
        status: "pending",
        approvals: ["lead1"],
      });
      const audit = (await auditOf(zt)).filter((e) => e.data?.["request_id"] === id);
      expect(audit.filter((e) => e.kind === "access.approval")).toHaveLength(1);
      expect(audit.filter((e) => e.kind === "access.approved")).toEqual([]);
    } finally {
      await cleanup();
    }
  }, 180_000);

  it("grants once when two approvers approve a one-approval request at the same time", async () => {
    const { id, results, zt, cleanup } = await race({ resource: "one" }, (id) => [
      ["access", "approve", id, "--as", "lead1", "--json"],
      ["access", "approve", id, "--as", "lead2", "--json"],
    ]);
    try {
      const w = oneWinner(results);
      expect(okJson(await zt(["access", "show", id]))).toMatchObject({
        status: "approved",
        approvals: [w === 0 ? "lead1" : "lead2"],
      });
      const audit = (await auditOf(zt)).filter((e) => e.data?.["request_id"] === id);
      expect(audit.filter((e) => e.kind === "access.approved")).toHaveLength(1);
    } finally {
      await cleanup();
    }
  }, 180_000);

  it("has one outcome, audited once, when an approval and a withdrawal race", async () => {
    const { id, results, zt, cleanup } = await race({ resource: "one" }, (id) => [
      ["access", "approve", id, "--as", "lead1", "--json"],
      ["access", "revoke", id, "--as", "alice", "--json"],
    ]);
    try {
      const w = oneWinner(results);
      const status = w === 0 ? "approved" : "revoked";
      expect(okJson(await zt(["access", "show", id]))).toMatchObject({ status });
      const audit = (await auditOf(zt)).filter((e) => e.data?.["request_id"] === id);
      expect(
        audit
          .filter((e) => e.kind === "access.approved" || e.kind === "access.revoked")
          .map((e) => e.kind),
      ).toEqual([w === 0 ? "access.approved" : "access.revoked"]);
    } finally {
      await cleanup();
    }
  }, 180_000);
});

describe.runIf(PG)(
  "a break-glass whose grant.changed event cannot be published (PostgreSQL)",
  () => {
    it("still sends its critical webhook alert (the failed publish skipped the notification of a grant already open)", async () => {
      const hook = await startWebhookReceiver();
      const pg = await startPostgresZt({
        prefix: "zt-bg-publish-",
        env,
        yaml: `${ACCESS_YAML}notifications: { webhook: "${hook.url}" }\n`,
      });
      try {
        await addUsers(pg.zt, [["oncall", []]]);
        // The event bus fails for grant events only, after the grant's row has committed.
        const c = new pg_.Client({ connectionString: pg.db.url });
        await c.connect();
        try {
          await c.query(`CREATE FUNCTION refuse_grant_events() RETURNS trigger AS $$
          BEGIN IF NEW.kind = 'grant.changed' THEN RAISE EXCEPTION 'events unavailable'; END IF;
          RETURN NEW; END $$ LANGUAGE plpgsql`);
          await c.query(`CREATE TRIGGER refuse_grant_events BEFORE INSERT ON events
          FOR EACH ROW EXECUTE FUNCTION refuse_grant_events()`);
        } finally {
          await c.end();
        }
        const r = await pg.zt([
          "breakglass",
          "--as",
          "oncall",
          "--resource",
          "db-admin",
          "--reason",
          "INC-7 outage",
        ]);
        // The failure is still said (the PEPs were not told; their next reload heals it).
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(/^zt: error ZT_[A-Z_]+: /);
        expect(r.stderr).not.toMatch(/\n\s+at /);
        // zt waits for the webhook's answer before it exits: whatever it sent is in by now.
        expect(hook.received.filter((b) => b["event"] === "breakglass.opened")).toEqual([
          expect.objectContaining({ severity: "critical" }),
        ]);
        const opened = (await auditOf(pg.zt)).filter((e) => e.kind === "breakglass.opened");
        expect(opened).toHaveLength(1);
      } finally {
        await hook.close();
        await pg.cleanup();
      }
    }, 120_000);
  },
);

describe("access names that no user or group can have", () => {
  it("are refused at config load, naming the key (a break-glass account or approver group written OnCall or Leads matched nobody, found out only when refused)", async () => {
    const list = ["access", "list"];
    await expectConfigKeysRefused(env, [
      [
        "access:\n  breakglass: { accounts: [OnCall], resources: [db] }\n",
        list,
        "access.breakglass.accounts.0",
      ],
      [
        "access:\n  resources:\n    db: { approvers: Leads }\n",
        list,
        "access.resources.db.approvers",
      ],
      ["access:\n  admins: [sec, 'Sec Ops']\n", list, "access.admins.1"],
    ]);
  }, 120_000);
});

describe("concurrent decisions on one request (SQLite, separate processes)", () => {
  const store = ztStoreForSuite({
    prefix: "zt-access-race-sqlite-",
    env,
    yaml: `routes:
  - { name: one, from: "http://one.localhost:8443", to: "http://127.0.0.1:9" }
  - { name: two, from: "http://two.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    one: { approvers: leads }
    two: { approvers: leads, approvals: 2 }
`,
    users: [
      ["alice", []],
      ["lead1", ["leads"]],
      ["lead2", ["leads"]],
    ],
  });

  // Whichever process gets the write lock first wins; what must hold is the same either way.
  it("counts one approver once, grants once, and never approves a request after its withdrawal", async () => {
    const { zt } = store;
    const ask = async (resource: string) =>
      (await requestAccess(zt, { as: "alice", resource, reason: "INC-4 fix" }))["id"] as string;
    const [twice, both, withdrawn] = [await ask("two"), await ask("one"), await ask("one")];
    const results = await Promise.all([
      zt(["access", "approve", twice, "--as", "lead1"]),
      zt(["access", "approve", twice, "--as", "lead1"]),
      zt(["access", "approve", both, "--as", "lead1"]),
      zt(["access", "approve", both, "--as", "lead2"]),
      zt(["access", "approve", withdrawn, "--as", "lead1"]),
      zt(["access", "revoke", withdrawn, "--as", "alice"]),
    ]);
    for (const r of results) if (r.code !== 0) expectCleanError(r, 65, "ZT_ACCESS_STATE", /./);
    const wins = (i: number) => [results[i]!.code, results[i + 1]!.code].filter((c) => c === 0);
    expect(wins(0)).toHaveLength(1);
    expect(wins(2)).toHaveLength(1);
    expect(okJson(await zt(["access", "show", twice]))).toMatchObject({
      status: "pending",
      approvals: ["lead1"],
    });
    expect(okJson(await zt(["access", "show", both]))).toMatchObject({ status: "approved" });
    // The holder may withdraw a pending request and revoke a grant: both succeed when the
    // approval commits before the revocation reads the request. Never the other way round
    // (an approval after the withdrawal), and each success is audited once.
    const approved = results[4]!.code === 0;
    const revoked = results[5]!.code === 0;
    expect(approved || revoked).toBe(true);
    expect(okJson(await zt(["access", "show", withdrawn]))).toMatchObject({
      status: revoked ? "revoked" : "approved",
    });
    const audit = await auditOf(zt);
    const of = (id: string, kind: string) =>
      audit.filter((e) => e.kind === kind && e.data?.["request_id"] === id);
    expect(of(twice, "access.approval")).toHaveLength(1);
    expect(of(both, "access.approved")).toHaveLength(1);
    expect(of(withdrawn, "access.approved")).toHaveLength(approved ? 1 : 0);
    expect(of(withdrawn, "access.revoked")).toHaveLength(revoked ? 1 : 0);
    if (approved && revoked)
      expect(audit.indexOf(of(withdrawn, "access.approved")[0]!)).toBeLessThan(
        audit.indexOf(of(withdrawn, "access.revoked")[0]!),
      );
  }, 180_000);
});
