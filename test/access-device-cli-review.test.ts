/**
 * Regression tests for a bad-input and security review of JIT access and device trust,
 * through the real `bin/zt` (built by `npm run build`) in child processes over a real
 * store (SQLite; PostgreSQL where a race needs a row lock to be made deterministic). Each
 * test is named after what it stops.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { loadDeviceKey, signWithDeviceKey } from "../src/device/index.js";
import { startZtUp, tempDir, writeConfig } from "./helpers/zt-process.js";
import {
  addUsers,
  enrollDevice,
  expectCleanError,
  expectConfigKeysRefused,
  expectOk,
  masterKeyEnv,
  okJson,
  requestAccess,
  ztCli,
  ztStoreForSuite,
} from "./helpers/zt-cli.js";
import { startLockRace, startPostgresZt, type LockRace } from "./helpers/postgres-zt.js";
import { startWebhookReceiver, type WebhookReceiver } from "./helpers/webhook-receiver.js";
import { postgresAvailable } from "./store-fixture.js";

const env = masterKeyEnv();

describe("CLI review: JIT approvals and device reports", () => {
  const store = ztStoreForSuite({
    prefix: "zt-access-device-cli-",
    env,
    yaml: `routes:
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    payroll: { approvers: fin, approvals: 2 }
`,
    users: [
      ["alice", []],
      ["fin1", ["fin"]],
      ["fin2", ["fin"]],
      ["fin3", ["fin"]],
      ["fin4", ["fin"]],
    ],
  });
  const { zt } = store;

  async function request(): Promise<string> {
    const r = await requestAccess(zt, {
      as: "alice",
      resource: "payroll",
      reason: "quarter close",
    });
    return r["id"] as string;
  }

  it("does not count toward a two-approval quorum the approval of someone no longer an approver (removed from the group, disabled or deleted)", async () => {
    // fin1 approves, then leaves the approver group: one current approver is not two.
    const a = await request();
    expect(okJson(await zt(["access", "approve", a, "--as", "fin1", "--json"]))["status"]).toBe(
      "pending",
    );
    expectOk(await zt(["user", "groups", "fin1", "--remove", "fin"]));
    expectCleanError(
      await zt(["access", "approve", a, "--as", "fin1"]),
      77,
      "ZT_ACCESS_NOT_APPROVER",
      /fin1 is not in the approver group for payroll/,
    );
    const a2 = okJson(await zt(["access", "approve", a, "--as", "fin2", "--json"]));
    expect(a2).toMatchObject({ status: "pending", approvals: ["fin2"] });
    const a3 = okJson(await zt(["access", "approve", a, "--as", "fin3", "--json"]));
    expect(a3).toMatchObject({ status: "approved", approvals: ["fin2", "fin3"] });

    // fin3 approves, then is disabled (still in the group).
    const b = await request();
    expectOk(await zt(["access", "approve", b, "--as", "fin3"]));
    expectOk(await zt(["user", "disable", "fin3"]));
    expect(okJson(await zt(["access", "approve", b, "--as", "fin2", "--json"]))).toMatchObject({
      status: "pending",
      approvals: ["fin2"],
    });

    // fin4 approves and is deleted; a new user given the name fin4, in the group, is not
    // the one who approved, and may approve in their own right.
    const c = await request();
    expectOk(await zt(["access", "approve", c, "--as", "fin4"]));
    expectOk(await zt(["user", "delete", "fin4"]));
    await addUsers(zt, [["fin4", ["fin"]]]);
    expect(okJson(await zt(["access", "approve", c, "--as", "fin2", "--json"]))).toMatchObject({
      status: "pending",
      approvals: ["fin2"],
    });
    expect(okJson(await zt(["access", "approve", c, "--as", "fin4", "--json"]))).toMatchObject({
      status: "approved",
      approvals: ["fin2", "fin4"],
    });

    // The approval that no longer counted is on record.
    const dropped = expectOk(await zt(["audit", "export"]))
      .stdout.split("\n")
      .filter((l) => l.includes('"approvals_dropped"'))
      .map((l) => JSON.parse(l) as { kind: string; data: { approvals_dropped: string[] } });
    expect(dropped.map((e) => [e.kind, e.data.approvals_dropped])).toEqual([
      ["access.approval", ["fin1"]],
      ["access.approval", ["fin3"]],
      ["access.approval", ["fin4"]],
    ]);
  }, 120_000);

  it("refuses a --facts file that is not a JSON object of { os, checks } with a clear error, not an internal one", async () => {
    const keyDir = join(store.dir, "key");
    const e = await enrollDevice(zt, { as: "alice", keyDir, name: "l1" });
    expectOk(await zt(["device", "approve", e["id"] as string]));
    for (const [i, text] of ["null", "[1]", '"str"', '{"os":5}', '{"checks":[true]}'].entries()) {
      const f = join(store.dir, `facts-${i}.json`);
      writeFileSync(f, text);
      for (const extra of [[], ["--dry-run"]]) {
        const r = await zt(["device", "report", "--key-dir", keyDir, "--facts", f, ...extra]);
        expectCleanError(r, 65, "ZT_DEVICE_INVALID", new RegExp(`--facts ${f}: `));
        expect(r.stdout).toBe("");
      }
    }
    // A good one is still sent.
    const good = join(store.dir, "facts-good.json");
    writeFileSync(good, JSON.stringify({ os: "Debian 12", checks: { firewall: true } }));
    expect(
      okJson(await zt(["device", "report", "--key-dir", keyDir, "--facts", good, "--dry-run"])),
    ).toMatchObject({ payload: { os: "Debian 12", checks: { firewall: true } } });
    // Thirteen CLI runs (a Node start each): up to a minute on a loaded 2-CPU machine.
  }, 180_000);
});

describe("CLI review: durations in the access, notifications and devices sections", () => {
  let hooks: WebhookReceiver<{ event: string; severity: string }>;

  beforeAll(async () => {
    hooks = await startWebhookReceiver();
  });

  afterAll(async () => {
    await hooks.close();
  });

  async function setup(extra: string): Promise<{ dir: string; config: string }> {
    const dir = tempDir("zt-durations-");
    const config = writeConfig(
      dir,
      `data_dir: ./data
routes:
  - { name: db-admin, from: "http://db.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    db-admin: { approvers: dba }
  breakglass: { accounts: [oncall], resources: [db-admin] }
${extra}`,
      {},
    );
    expectOk(await ztCli(config, env)(["init"]));
    return { dir, config };
  }

  it("refuses a notifications.timeout that would abort every webhook (0, or past a timer's 24.8-day range), so break-glass alerts are not silently lost", async () => {
    const { dir, config } = await setup(
      `notifications: { webhook: "${hooks.url}", timeout: 5s }\n`,
    );
    try {
      const zt = ztCli(config, env);
      const breakglass = () =>
        zt(["breakglass", "--as", "oncall", "--resource", "db-admin", "--reason", "INC-1 outage"]);
      await addUsers(zt, [["oncall", []]]);
      const yaml = readFileSync(config, "utf8");
      for (const bad of ["0", "0s", "30d"]) {
        writeFileSync(config, yaml.replace("timeout: 5s", `timeout: ${bad}`));
        expectCleanError(await breakglass(), 78, "ZT_CONFIG_INVALID", /notifications\.timeout: /);
      }
      expect(hooks.received).toEqual([]);
      writeFileSync(config, yaml);
      expectOk(await breakglass());
      expect(hooks.received).toMatchObject([{ event: "breakglass.opened", severity: "critical" }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("refuses a zero access.max_ttl, resource max_ttl, devices.report_interval or devices.max_report_skew, naming the key", async () => {
    await expectConfigKeysRefused(env, [
      ["access:\n  max_ttl: 0\n", ["access", "list"], "access.max_ttl"],
      [
        'access:\n  resources:\n    "db-admin": { approvers: dba, max_ttl: 0s }\n',
        ["access", "list"],
        "access.resources.db-admin.max_ttl",
      ],
      ["devices: { report_interval: 0 }\n", ["device", "list"], "devices.report_interval"],
      ["devices: { max_report_skew: 0s }\n", ["device", "list"], "devices.max_report_skew"],
    ]);
  }, 60_000);
});

const PG = await postgresAvailable();

describe.runIf(PG)("CLI and API review on PostgreSQL", () => {
  /** A PostgreSQL store with bob, who enrols a device (its key in `keyDir`). */
  async function withBobsDevice(o: { prefix: string; listen?: boolean }) {
    const store = await startPostgresZt({ ...o, env });
    try {
      await addUsers(store.zt, [["bob", []]]);
      const keyDir = join(store.dir, "key");
      const device = await enrollDevice(store.zt, { as: "bob", keyDir, name: "b1" });
      return { ...store, keyDir, device, id: device["id"] as string };
    } catch (e) {
      await store.cleanup();
      throw e;
    }
  }

  it("never turns a device revoked while its approval was under way back into an approved one", async () => {
    const { db, zt, id, device, cleanup } = await withBobsDevice({ prefix: "zt-device-race-" });
    let race: LockRace | undefined;
    try {
      race = await startLockRace(db);
      expect(device["status"]).toBe("pending");

      // Hold the device's row: the approval reads it as pending, then waits on the lock
      // while the revocation (here, in the lock holder's transaction) commits.
      await race.lock.query("BEGIN");
      await race.lock.query("SELECT id FROM devices WHERE id = $1 FOR UPDATE", [id]);
      const approving = zt(["device", "approve", id, "--json"]);
      await race.waitForLockWaiters(
        "the approval to wait on the device's row",
        1,
        'update "devices"%',
      );
      await race.lock.query("UPDATE devices SET status = 'revoked', compliant = 0 WHERE id = $1", [
        id,
      ]);
      await race.lock.query("COMMIT");

      expectCleanError(await approving, 65, "ZT_ACCESS_STATE", /revoked/);
      expect(okJson(await zt(["device", "show", id]))["status"]).toBe("revoked");
    } finally {
      await race?.end();
      await cleanup();
    }
  }, 120_000);

  it("answers a NUL in a device id or in a report's os with a clear 4xx, not a 500 (PostgreSQL text refuses NUL)", async () => {
    const { db, config, keyDir, id, cleanup } = await withBobsDevice({
      prefix: "zt-device-nul-",
      listen: true,
    });
    let up: Awaited<ReturnType<typeof startZtUp>> | undefined;
    try {
      up = await startZtUp(["--config", config, "up"], { env });
      const post = async (path: string, body: unknown) => {
        const res = await fetch(new URL(path, up!.apiUrl), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        return {
          status: res.status,
          body: (await res.json()) as { error?: { code: string; message: string } },
        };
      };

      for (const path of ["/v1/devices/%00/reports", `/v1/devices/${id}%00/reports`]) {
        const r = await post(path, { payload: "{}", signature: "AAAA" });
        expect(r.status, JSON.stringify(r.body)).toBe(404);
        expect(r.body.error?.code).toBe("ZT_NOT_FOUND");
      }
      const b = await post("/v1/devices/%00/bind", { at: 1, signature: "AAAA" });
      expect(b.status, JSON.stringify(b.body)).toBe(404);
      expect(b.body.error?.code).toBe("ZT_NOT_FOUND");

      // Signed by the device itself: a bad report, refused before anything is stored.
      const key = loadDeviceKey(keyDir);
      const payload = JSON.stringify({
        v: 1,
        device_id: id,
        collected_at: Date.now(),
        os: "Debian\u0000 12",
        checks: { firewall: true },
      });
      const r = await post(`/v1/devices/${id}/reports`, {
        payload,
        signature: signWithDeviceKey(key.private_key, payload),
      });
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.error).toMatchObject({ code: "ZT_DEVICE_INVALID" });
      expect(r.body.error?.message).toMatch(/^report\.os: /);
      expect(up.output()).not.toContain("ZT_INTERNAL");
      const stored = new pg.Client({ connectionString: db.url });
      await stored.connect();
      try {
        expect((await stored.query("SELECT id FROM device_reports")).rowCount).toBe(0);
      } finally {
        await stored.end();
      }
    } finally {
      await up?.stop();
      await cleanup();
    }
  }, 120_000);

  it("never lets an older signed report that raced a newer one overwrite it (the replay check and the write are one step per device)", async () => {
    const { db, config, zt, keyDir, id, cleanup } = await withBobsDevice({
      prefix: "zt-device-report-race-",
      listen: true,
    });
    let race: LockRace | undefined;
    let up: Awaited<ReturnType<typeof startZtUp>> | undefined;
    try {
      race = await startLockRace(db);
      expectOk(await zt(["device", "approve", id]));
      up = await startZtUp(["--config", config, "up"], { env });
      const key = loadDeviceKey(keyDir);
      const signed = (collectedAt: number, firewall: boolean) => {
        const payload = JSON.stringify({
          v: 1,
          device_id: id,
          collected_at: collectedAt,
          os: "Debian 12",
          checks: { disk_encryption: true, firewall },
        });
        return { payload, signature: signWithDeviceKey(key.private_key, payload) };
      };
      // A compliant report, collected first but held back (a captured or delayed one),
      // and the newer one saying the firewall is now off.
      const now = Date.now();
      const older = signed(now - 1000, true);
      const newer = signed(now, false);
      const post = (body: unknown) =>
        fetch(new URL(`/v1/devices/${id}/reports`, up!.apiUrl), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown }));

      // Hold new reports back (reads pass): the newer one is checked and waits to be
      // written; then the older one arrives, while the newer is not yet on record.
      await race.lock.query("BEGIN");
      await race.lock.query("LOCK TABLE device_reports IN SHARE MODE");
      const first = post(newer);
      await race.waitForLockWaiters("the newer report to wait", 1);
      const second = post(older);
      await race.waitForLockWaiters("the older report to wait", 2);
      await race.lock.query("COMMIT");

      expect((await first).status).toBe(200);
      const late = await second;
      expect(late.status, JSON.stringify(late.body)).toBe(400);
      expect(JSON.stringify(late.body)).toContain("not newer than the last report");
      const shown = okJson(await zt(["device", "show", id]));
      expect(shown).toMatchObject({ compliant: false, checks: { firewall: false } });
    } finally {
      await up?.stop();
      await race?.end();
      await cleanup();
    }
  }, 120_000);
});
