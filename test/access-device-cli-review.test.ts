/**
 * Regression tests for a bad-input and security review of JIT access and device trust,
 * through the real `bin/zt` (built by `npm run build`) in child processes over a real
 * store (SQLite; PostgreSQL where a race needs a row lock to be made deterministic). Each
 * test is named after what it stops.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { loadDeviceKey, signWithDeviceKey } from "../src/device/index.js";
import { runZt, startZtUp, tempDir, writeConfig, type RunResult } from "./helpers/zt-process.js";
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

describe("CLI review: JIT approvals and device reports", () => {
  let dir: string;
  let config: string;
  const zt = (args: string[], input?: string): Promise<RunResult> =>
    runZt(["--config", config, ...args], { env, ...(input !== undefined ? { input } : {}) });

  beforeAll(async () => {
    dir = tempDir("zt-access-device-cli-");
    config = writeConfig(
      dir,
      `data_dir: ./data
routes:
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
access:
  resources:
    payroll: { approvers: fin, approvals: 2 }
`,
      {},
    );
    ok(await zt(["init"]));
    for (const [name, groups] of [
      ["alice", []],
      ["fin1", ["fin"]],
      ["fin2", ["fin"]],
      ["fin3", ["fin"]],
      ["fin4", ["fin"]],
    ] as const) {
      ok(await zt(["user", "add", name, "--password-stdin"], PASSWORD));
      for (const g of groups) ok(await zt(["user", "groups", name, "--add", g]));
    }
  }, 180_000);

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function request(): Promise<string> {
    const r = json(
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
    );
    return r["id"] as string;
  }

  it("does not count toward a two-approval quorum the approval of someone no longer an approver (removed from the group, disabled or deleted)", async () => {
    // fin1 approves, then leaves the approver group: one current approver is not two.
    const a = await request();
    expect(json(await zt(["access", "approve", a, "--as", "fin1", "--json"]))["status"]).toBe(
      "pending",
    );
    ok(await zt(["user", "groups", "fin1", "--remove", "fin"]));
    expectCleanError(
      await zt(["access", "approve", a, "--as", "fin1"]),
      77,
      "ZT_ACCESS_NOT_APPROVER",
      /fin1 is not in the approver group for payroll/,
    );
    const a2 = json(await zt(["access", "approve", a, "--as", "fin2", "--json"]));
    expect(a2).toMatchObject({ status: "pending", approvals: ["fin2"] });
    const a3 = json(await zt(["access", "approve", a, "--as", "fin3", "--json"]));
    expect(a3).toMatchObject({ status: "approved", approvals: ["fin2", "fin3"] });

    // fin3 approves, then is disabled (still in the group).
    const b = await request();
    ok(await zt(["access", "approve", b, "--as", "fin3"]));
    ok(await zt(["user", "disable", "fin3"]));
    expect(json(await zt(["access", "approve", b, "--as", "fin2", "--json"]))).toMatchObject({
      status: "pending",
      approvals: ["fin2"],
    });

    // fin4 approves and is deleted; a new user given the name fin4, in the group, is not
    // the one who approved, and may approve in their own right.
    const c = await request();
    ok(await zt(["access", "approve", c, "--as", "fin4"]));
    ok(await zt(["user", "delete", "fin4"]));
    ok(await zt(["user", "add", "fin4", "--password-stdin"], PASSWORD));
    ok(await zt(["user", "groups", "fin4", "--add", "fin"]));
    expect(json(await zt(["access", "approve", c, "--as", "fin2", "--json"]))).toMatchObject({
      status: "pending",
      approvals: ["fin2"],
    });
    expect(json(await zt(["access", "approve", c, "--as", "fin4", "--json"]))).toMatchObject({
      status: "approved",
      approvals: ["fin2", "fin4"],
    });

    // The approval that no longer counted is on record.
    const dropped = ok(await zt(["audit", "export"]))
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
    const keyDir = join(dir, "key");
    const e = json(
      await zt([
        "device",
        "enroll",
        "--as",
        "alice",
        "--key-dir",
        keyDir,
        "--name",
        "l1",
        "--json",
      ]),
    );
    ok(await zt(["device", "approve", e["id"] as string]));
    for (const [i, text] of ["null", "[1]", '"str"', '{"os":5}', '{"checks":[true]}'].entries()) {
      const f = join(dir, `facts-${i}.json`);
      writeFileSync(f, text);
      for (const extra of [[], ["--dry-run"]]) {
        const r = await zt(["device", "report", "--key-dir", keyDir, "--facts", f, ...extra]);
        expectCleanError(r, 65, "ZT_DEVICE_INVALID", new RegExp(`--facts ${f}: `));
        expect(r.stdout).toBe("");
      }
    }
    // A good one is still sent.
    const good = join(dir, "facts-good.json");
    writeFileSync(good, JSON.stringify({ os: "Debian 12", checks: { firewall: true } }));
    expect(
      json(await zt(["device", "report", "--key-dir", keyDir, "--facts", good, "--dry-run"])),
    ).toMatchObject({ payload: { os: "Debian 12", checks: { firewall: true } } });
  }, 60_000);
});

describe("CLI review: durations in the access, notifications and devices sections", () => {
  let hooks: http.Server;
  const received: { event: string; severity: string }[] = [];
  let hookUrl: string;

  beforeAll(async () => {
    hooks = http.createServer((req, res) => {
      let b = "";
      req.on("data", (d: Buffer) => (b += d.toString()));
      req.on("end", () => {
        received.push(JSON.parse(b) as { event: string; severity: string });
        res.end();
      });
    });
    await new Promise<void>((r) => hooks.listen(0, "127.0.0.1", () => r()));
    hookUrl = `http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hook`;
  });

  afterAll(async () => {
    await new Promise<void>((r) => hooks.close(() => r()));
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
    ok(await runZt(["--config", config, "init"], { env }));
    return { dir, config };
  }

  it("refuses a notifications.timeout that would abort every webhook (0, or past a timer's 24.8-day range), so break-glass alerts are not silently lost", async () => {
    const { dir, config } = await setup(`notifications: { webhook: "${hookUrl}", timeout: 5s }\n`);
    try {
      ok(
        await runZt(["--config", config, "user", "add", "oncall", "--password-stdin"], {
          env,
          input: PASSWORD,
        }),
      );
      const yaml = readFileSync(config, "utf8");
      for (const bad of ["0", "0s", "30d"]) {
        writeFileSync(config, yaml.replace("timeout: 5s", `timeout: ${bad}`));
        const r = await runZt(
          [
            "--config",
            config,
            "breakglass",
            "--as",
            "oncall",
            "--resource",
            "db-admin",
            "--reason",
            "INC-1 outage",
          ],
          { env },
        );
        expectCleanError(r, 78, "ZT_CONFIG_INVALID", /notifications\.timeout: /);
      }
      expect(received).toEqual([]);
      writeFileSync(config, yaml);
      ok(
        await runZt(
          [
            "--config",
            config,
            "breakglass",
            "--as",
            "oncall",
            "--resource",
            "db-admin",
            "--reason",
            "INC-1 outage",
          ],
          { env },
        ),
      );
      expect(received).toMatchObject([{ event: "breakglass.opened", severity: "critical" }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("refuses a zero access.max_ttl, resource max_ttl, devices.report_interval or devices.max_report_skew, naming the key", async () => {
    for (const [section, command, path] of [
      ["access:\n  max_ttl: 0\n", ["access", "list"], "access.max_ttl"],
      [
        'access:\n  resources:\n    "db-admin": { approvers: dba, max_ttl: 0s }\n',
        ["access", "list"],
        "access.resources.db-admin.max_ttl",
      ],
      ["devices: { report_interval: 0 }\n", ["device", "list"], "devices.report_interval"],
      ["devices: { max_report_skew: 0s }\n", ["device", "list"], "devices.max_report_skew"],
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

describe.runIf(PG)("CLI and API review on PostgreSQL", () => {
  it("never turns a device revoked while its approval was under way back into an approved one", async () => {
    const db = await createTestDatabase();
    const dir = tempDir("zt-device-race-");
    const lock = new pg.Client({ connectionString: db.url });
    const watch = new pg.Client({ connectionString: db.url });
    try {
      const config = join(dir, "zt.yaml");
      writeFileSync(config, `data_dir: ${join(dir, "data")}\ndatabase_url: ${db.url}\n`);
      const zt = (args: string[], input?: string) =>
        runZt(["--config", config, ...args], { env, ...(input ? { input } : {}) });
      ok(await zt(["init"]));
      ok(await zt(["user", "add", "bob", "--password-stdin"], PASSWORD));
      const d = json(
        await zt([
          "device",
          "enroll",
          "--as",
          "bob",
          "--key-dir",
          join(dir, "key"),
          "--name",
          "b1",
          "--json",
        ]),
      );
      const id = d["id"] as string;
      expect(d["status"]).toBe("pending");

      // Hold the device's row: the approval reads it as pending, then waits on the lock
      // while the revocation (here, in the lock holder's transaction) commits.
      await lock.connect();
      await watch.connect();
      await lock.query("BEGIN");
      await lock.query("SELECT id FROM devices WHERE id = $1 FOR UPDATE", [id]);
      const approving = zt(["device", "approve", id, "--json"]);
      await waitFor(async () => {
        // Another connection: inside its transaction, the lock holder sees a frozen snapshot.
        const r = await watch.query(
          `SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query ILIKE 'update "devices"%'`,
          [db.name],
        );
        return (r.rowCount ?? 0) > 0;
      }, "the approval to wait on the device's row");
      await lock.query("UPDATE devices SET status = 'revoked', compliant = 0 WHERE id = $1", [id]);
      await lock.query("COMMIT");

      expectCleanError(await approving, 65, "ZT_ACCESS_STATE", /revoked/);
      expect(json(await zt(["device", "show", id]))["status"]).toBe("revoked");
    } finally {
      await lock.end().catch(() => undefined);
      await watch.end().catch(() => undefined);
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("answers a NUL in a device id or in a report's os with a clear 4xx, not a 500 (PostgreSQL text refuses NUL)", async () => {
    const db = await createTestDatabase();
    const dir = tempDir("zt-device-nul-");
    let up: Awaited<ReturnType<typeof startZtUp>> | undefined;
    try {
      const config = join(dir, "zt.yaml");
      writeFileSync(
        config,
        `data_dir: ${join(dir, "data")}\ndatabase_url: ${db.url}\nlisten: { proxy: "127.0.0.1:0", api: "127.0.0.1:0" }\n`,
      );
      const zt = (args: string[], input?: string) =>
        runZt(["--config", config, ...args], { env, ...(input ? { input } : {}) });
      ok(await zt(["init"]));
      ok(await zt(["user", "add", "bob", "--password-stdin"], PASSWORD));
      const keyDir = join(dir, "key");
      const id = json(
        await zt([
          "device",
          "enroll",
          "--as",
          "bob",
          "--key-dir",
          keyDir,
          "--name",
          "b1",
          "--json",
        ]),
      )["id"] as string;
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
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("never lets an older signed report that raced a newer one overwrite it (the replay check and the write are one step per device)", async () => {
    const db = await createTestDatabase();
    const dir = tempDir("zt-device-report-race-");
    const lock = new pg.Client({ connectionString: db.url });
    const watch = new pg.Client({ connectionString: db.url });
    let up: Awaited<ReturnType<typeof startZtUp>> | undefined;
    try {
      const config = join(dir, "zt.yaml");
      writeFileSync(
        config,
        `data_dir: ${join(dir, "data")}\ndatabase_url: ${db.url}\nlisten: { proxy: "127.0.0.1:0", api: "127.0.0.1:0" }\n`,
      );
      const zt = (args: string[], input?: string) =>
        runZt(["--config", config, ...args], { env, ...(input ? { input } : {}) });
      ok(await zt(["init"]));
      ok(await zt(["user", "add", "bob", "--password-stdin"], PASSWORD));
      const keyDir = join(dir, "key");
      const id = json(
        await zt([
          "device",
          "enroll",
          "--as",
          "bob",
          "--key-dir",
          keyDir,
          "--name",
          "b1",
          "--json",
        ]),
      )["id"] as string;
      ok(await zt(["device", "approve", id]));
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
      const waiting = async () =>
        Number(
          (
            await watch.query(
              `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`,
              [db.name],
            )
          ).rows[0].n,
        );

      // Hold new reports back (reads pass): the newer one is checked and waits to be
      // written; then the older one arrives, while the newer is not yet on record.
      await lock.connect();
      await watch.connect();
      await lock.query("BEGIN");
      await lock.query("LOCK TABLE device_reports IN SHARE MODE");
      const first = post(newer);
      await waitFor(async () => (await waiting()) >= 1, "the newer report to wait");
      const second = post(older);
      await waitFor(async () => (await waiting()) >= 2, "the older report to wait");
      await lock.query("COMMIT");

      expect((await first).status).toBe(200);
      const late = await second;
      expect(late.status, JSON.stringify(late.body)).toBe(400);
      expect(JSON.stringify(late.body)).toContain("not newer than the last report");
      const shown = json(await zt(["device", "show", id]));
      expect(shown).toMatchObject({ compliant: false, checks: { firewall: false } });
    } finally {
      await up?.stop();
      await lock.end().catch(() => undefined);
      await watch.end().catch(() => undefined);
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
