/**
 * Regression tests for an adversarial review of device enrolment and posture. The CLI
 * suite drives the real `bin/zt` (built by `npm run build`) against a real `zt up` over
 * real sockets; the store suite runs on both engines (SQLite and PostgreSQL at
 * 127.0.0.1:5432), with two AppContexts on one store standing for two processes or
 * replicas (their own clocks), and AfterFirstRead putting another process's change in the
 * window between a read and the write relying on it. Each test is named after what it stops.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import { EntityStore } from "../src/policy/index.js";
import {
  DEVICE_REPORTS_KEPT,
  DeviceService,
  DeviceTrust,
  generateDeviceKey,
  parseDevicesConfig,
  signWithDeviceKey,
} from "../src/device/index.js";
import { AfterFirstRead } from "./helpers/after-first-read.js";
import {
  engines,
  openStoreMigratedUpTo,
  perTestTargets,
  writeEngineConfig,
  type Engine,
} from "./store-fixture.js";
import { migrateStore } from "../src/store/index.js";
import { insertTestUser } from "../src/pki/pki-testing.js";
import { runZt, startZtUp, type UpProcess } from "./helpers/zt-process.js";
import {
  enrollDevice,
  expectCleanError,
  expectOk,
  masterKeyEnv,
  okJson,
  TEST_PASSWORD,
  ztStoreForSuite,
} from "./helpers/zt-cli.js";

const env = masterKeyEnv();

describe("device review: zt device report / bind --server", () => {
  const store = ztStoreForSuite({
    prefix: "zt-device-review-",
    env,
    yaml: `listen: { proxy: "127.0.0.1:0", api: "127.0.0.1:0" }
devices:
  required: [disk_encryption, firewall]
`,
    users: [
      ["alice", []],
      ["bob", []],
    ],
  });
  const { zt } = store;
  let up: UpProcess | undefined;
  /** A server answering every request 200 with an HTML page (a front proxy's). */
  let garbage: http.Server | undefined;
  let garbageUrl = "";

  beforeAll(async () => {
    up = await startZtUp(["--config", store.config, "up"], { env });
    garbage = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>maintenance</html>");
    });
    await new Promise<void>((r) => garbage!.listen(0, "127.0.0.1", r));
    garbageUrl = `http://127.0.0.1:${(garbage.address() as { port: number }).port}`;
  }, 120_000);

  afterAll(async () => {
    await up?.stop();
    garbage?.close();
  });

  function facts(name: string, checks: Record<string, boolean | null>): string {
    const f = join(store.dir, `${name}.json`);
    writeFileSync(f, JSON.stringify({ os: "Debian 12", checks }));
    return f;
  }

  /** `zt device bind --server` with a session token of the right form (no such session). */
  const bind = (keyDir: string, server: string) =>
    runZt(["--config", store.config, "device", "bind", "--key-dir", keyDir, "--server", server], {
      env: { ...env, ZT_SESSION_TOKEN: "x".repeat(43) },
    });

  it("exits 3 for a non-compliant device through the API as it does against the store, and passes on the server's refusal code (not ZT_UNAVAILABLE)", async () => {
    const keyDir = join(store.dir, "k1");
    const id = (await enrollDevice(zt, { as: "alice", keyDir, name: "l1" }))["id"] as string;
    expectOk(await zt(["device", "approve", id]));
    const report = (f: string, server = up!.apiUrl) =>
      zt(["device", "report", "--key-dir", keyDir, "--facts", f, "--server", server, "--json"]);

    const bad = facts("fw-off", { disk_encryption: true, firewall: false });
    const r1 = await report(bad);
    expect(r1.code, r1.stderr).toBe(3);
    expect(JSON.parse(r1.stdout)).toMatchObject({
      device_id: id,
      compliant: false,
      failures: ["required-check-failed:firewall"],
    });

    const good = facts("ok", { disk_encryption: true, firewall: true });
    expect(okJson(await report(good))).toMatchObject({ device_id: id, compliant: true });

    // A refusal keeps the server's code (and so its exit code): a revoked device is a
    // state to act on, not a server to retry.
    expectOk(await zt(["device", "revoke", id]));
    expectCleanError(await report(good), 65, "ZT_ACCESS_STATE", /revoked/);
    expectCleanError(await bind(keyDir, up!.apiUrl), 65, "ZT_ACCESS_STATE", /revoked/);
  }, 120_000);

  it("refuses to approve a device whose owner is disabled (ZT_USER_DISABLED, exit 77); it stays pending", async () => {
    const keyDir = join(store.dir, "k3");
    const id = (await enrollDevice(zt, { as: "bob", keyDir, name: "b1" }))["id"] as string;
    expectOk(await zt(["user", "disable", "bob"]));
    expectCleanError(
      await zt(["device", "approve", id]),
      77,
      "ZT_USER_DISABLED",
      /its owner bob is disabled/,
    );
    expect(okJson(await zt(["device", "show", id]))["status"]).toBe("pending");
  }, 120_000);

  it("does not report success when the server's 200 answer is not zt's (a front proxy's page)", async () => {
    const keyDir = join(store.dir, "k2");
    const id = (await enrollDevice(zt, { as: "alice", keyDir, name: "l2" }))["id"] as string;
    expectOk(await zt(["device", "approve", id]));
    const good = facts("ok2", { disk_encryption: true, firewall: true });
    expectCleanError(
      await zt(["device", "report", "--key-dir", keyDir, "--facts", good, "--server", garbageUrl]),
      69,
      "ZT_UNAVAILABLE",
      /not a posture verdict/,
    );
    expectCleanError(await bind(keyDir, garbageUrl), 69, "ZT_UNAVAILABLE", /not a binding/);
  }, 120_000);
});

const ENGINES = await engines();

describe.each(ENGINES)("device review: approval and posture rules on $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);

  /** A zt process on the test's store (zt.yaml at `path`): its own context and clock. */
  async function processOn(path: string, clock: ManualClock): Promise<AppContext> {
    const c = await openAppContext(loadConfig(path, { env: {} }), { clock, env: {}, create: true });
    cleanups.push(() => c.close());
    return c;
  }

  /**
   * A device of `userName` enrolled (approved unless `pending`), and a signer of its
   * reports: `signed(fields)` is [payload, signature] for a report with those fields over
   * compliant defaults, or for a raw payload string.
   */
  async function deviceOf(ctx: AppContext, userName: string, opts: { pending?: boolean } = {}) {
    const key = generateDeviceKey();
    const svc = new DeviceService(ctx);
    const { device } = await svc.enroll({ userName, name: "laptop", publicKeyPem: key.publicPem });
    if (!opts.pending) await svc.approve(device.id, "admin");
    const signed = (fields: Record<string, unknown> | string) => {
      const payload =
        typeof fields === "string"
          ? fields
          : JSON.stringify({
              v: 1,
              device_id: device.id,
              collected_at: ctx.clock.now(),
              os: "Debian 12",
              checks: { disk_encryption: true, firewall: true },
              ...fields,
            });
      return [payload, signWithDeviceKey(key.privatePem, payload)] as const;
    };
    return { id: device.id, signed };
  }

  it("never approves the device of an owner disabled while the approval was under way, nor one whose owner was deleted", async () => {
    const path = writeEngineConfig(await target(), "");
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const approving = await processOn(path, clock);
    const admin = await processOn(path, clock);
    const ids = identityService(admin);
    for (const name of ["dave", "fay"]) await ids.addUser({ name, password: TEST_PASSWORD });
    const daves = (await deviceOf(admin, "dave", { pending: true })).id;
    const fays = (await deviceOf(admin, "fay", { pending: true })).id;

    // The approving process reads the (pending) device; dave is disabled right then.
    let disabledMeanwhile = false;
    const store = approving.store as { db: typeof approving.store.db };
    store.db = approving.store.db.withPlugin(
      new AfterFirstRead("devices", async () => {
        await ids.setDisabled("dave", true);
        disabledMeanwhile = true;
      }),
    );
    await expect(new DeviceService(approving).approve(daves, "admin")).rejects.toMatchObject({
      code: "ZT_USER_DISABLED",
    });
    expect(disabledMeanwhile).toBe(true);

    // A device left pending by its owner's deletion in a version before deletion revoked
    // devices (the user's row removed, the device's kept).
    await admin.store.db.deleteFrom("users").where("name", "=", "fay").execute();
    await expect(new DeviceService(admin).approve(fays, "admin")).rejects.toMatchObject({
      code: "ZT_USER_NOT_FOUND",
    });
    const rows = await admin.store.db
      .selectFrom("devices")
      .select(["id", "status"])
      .orderBy("id")
      .execute();
    expect(rows.map((r) => r.status)).toEqual(["pending", "pending"]);
    await approving.audit.flush();
    await admin.audit.flush();
    const refusals = await admin.store.db
      .selectFrom("audit_events")
      .select(["outcome", "reason"])
      .where("kind", "=", "device.approve")
      .orderBy("reason")
      .execute();
    expect(refusals).toEqual([
      { outcome: "failure", reason: "user-deleted" },
      { outcome: "failure", reason: "user-disabled" },
    ]);
  });

  it("never lets a held-back older report overwrite a newer one received by a replica whose clock is behind (the replay check follows the order reports were accepted in)", async () => {
    const path = writeEngineConfig(
      await target(),
      "devices: { required: [disk_encryption, firewall] }\n",
    );
    const t = Date.UTC(2026, 5, 1, 12);
    // Two control-plane replicas on one store, their clocks a minute apart (within skew).
    const ahead = await processOn(path, new ManualClock(t + 60_000));
    const behind = await processOn(path, new ManualClock(t));
    await identityService(ahead).addUser({ name: "gus", password: TEST_PASSWORD });
    const { id, signed: report } = await deviceOf(ahead, "gus");
    const device = { id };
    const signed = (collectedAt: number, firewall: boolean) =>
      report({ collected_at: collectedAt, checks: { disk_encryption: true, firewall } });
    // A compliant report (through the replica ahead); then one collected 20 s later that
    // says the firewall is off (through the replica behind); a compliant report collected
    // in between was held back, and is now replayed.
    const heldBack = signed(t - 20_000, true);
    await new DeviceService(ahead).submitReport(device.id, ...signed(t - 30_000, true));
    const off = await new DeviceService(behind).submitReport(device.id, ...signed(t, false));
    expect(off.compliant).toBe(false);
    await expect(
      new DeviceService(behind).submitReport(device.id, ...heldBack),
    ).rejects.toMatchObject({ code: "ZT_DEVICE_INVALID", message: /not newer than the last/ });
    const shown = await new DeviceService(behind).get(device.id);
    expect(shown).toMatchObject({ compliant: false, checks: { firewall: false } });
  });

  it("keeps a bounded history of each device's reports: the newest DEVICE_REPORTS_KEPT are kept, older ones go, other devices' are untouched, and the replay check still holds", async () => {
    const path = writeEngineConfig(await target(), "devices: { required: [disk_encryption] }\n");
    const t = Date.UTC(2026, 5, 1, 12);
    const clock = new ManualClock(t);
    const ctx = await processOn(path, clock);
    await identityService(ctx).addUser({ name: "hal", password: TEST_PASSWORD });
    const devices = new DeviceService(ctx);
    const enrolled = async () => {
      const { id, signed } = await deviceOf(ctx, "hal");
      const report = (collectedAt: number) =>
        devices.submitReport(id, ...signed({ collected_at: collectedAt }));
      return { id, report };
    };
    const chatty = await enrolled();
    const quiet = await enrolled();
    await quiet.report(t - 1);
    const sent = DEVICE_REPORTS_KEPT + 5;
    for (let i = 0; i < sent; i++) {
      clock.advance(1);
      await chatty.report(clock.now());
    }
    const kept = (id: string) =>
      ctx.store.db
        .selectFrom("device_reports")
        .select(["report"])
        .where("device_id", "=", id)
        .execute()
        .then((rows) =>
          rows
            .map(
              (r) =>
                (JSON.parse(JSON.parse(r.report).payload) as { collected_at: number }).collected_at,
            )
            .sort((a, b) => a - b),
        );
    const chattyKept = await kept(chatty.id);
    // The newest ones, oldest first: the first five sent are gone.
    expect(chattyKept).toEqual(Array.from({ length: DEVICE_REPORTS_KEPT }, (_, i) => t + 6 + i));
    expect(await kept(quiet.id)).toEqual([t - 1]);
    // A report older than the newest kept is still a replay.
    await expect(chatty.report(t + 3)).rejects.toMatchObject({
      code: "ZT_DEVICE_INVALID",
      message: /not newer than the last/,
    });
  });

  it("leaves no live device behind a deleted user: deleting the user revokes their devices (no report is accepted from them after), says which in user.delete, and publishes device.changed for each", async () => {
    const path = writeEngineConfig(await target(), "");
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const ctx = await processOn(path, clock);
    const ids = identityService(ctx);
    await ids.addUser({ name: "lee", password: TEST_PASSWORD });
    await ids.addUser({ name: "max", password: TEST_PASSWORD });
    const approved = await deviceOf(ctx, "lee");
    const pending = await deviceOf(ctx, "lee", { pending: true });
    const others = await deviceOf(ctx, "max");
    const devices = new DeviceService(ctx);
    await devices.submitReport(approved.id, ...approved.signed({}));

    await ids.deleteUser("lee");
    clock.advance(1000);
    for (const d of [approved, pending])
      await expect(devices.submitReport(d.id, ...d.signed({}))).rejects.toMatchObject({
        code: "ZT_ACCESS_STATE",
        message: /revoked/,
      });
    const status = await ctx.store.db
      .selectFrom("devices")
      .select(["id", "status", "compliant"])
      .execute();
    expect(new Map(status.map((r) => [r.id, [r.status, Number(r.compliant)]]))).toEqual(
      new Map([
        [approved.id, ["revoked", 0]],
        [pending.id, ["revoked", 0]],
        [others.id, ["approved", 0]],
      ]),
    );
    // max's device is untouched: it still reports.
    expect((await devices.submitReport(others.id, ...others.signed({}))).compliant).toBe(true);
    await ctx.audit.flush();
    const [deleted] = await ctx.store.db
      .selectFrom("audit_events")
      .select("data")
      .where("kind", "=", "user.delete")
      .execute();
    expect(JSON.parse(deleted!.data ?? "{}").devices_revoked.sort()).toEqual(
      [approved.id, pending.id].sort(),
    );
    const changed = await ctx.store.db
      .selectFrom("events")
      .select("data")
      .where("kind", "=", "device.changed")
      .execute();
    const revokedEvents = changed
      .map((e) => JSON.parse(e.data) as { deviceId: string; status?: string; reason?: string })
      .filter((d) => d.status === "revoked");
    expect(revokedEvents.map((d) => [d.deviceId, d.reason]).sort()).toEqual(
      [
        [approved.id, "user-deleted"],
        [pending.id, "user-deleted"],
      ].sort(),
    );
  });

  it("revokes, on upgrade, the devices an earlier version left behind deleted users (migration 0013); other devices are untouched", async () => {
    const t = await target();
    const store = await openStoreMigratedUpTo(t, "0012-cert-key-type");
    cleanups.push(() => store.close());
    await insertTestUser(store.db, { id: "usr_kept", name: "kept" });
    const device = (id: string, userId: string, status: string) => ({
      id,
      user_id: userId,
      name: "laptop",
      public_key: "-",
      status,
      created_at: 1,
      compliant: status === "approved" ? 1 : 0,
      score: 100,
      checks: "{}",
    });
    await store.db
      .insertInto("devices")
      .values([
        device("dev_kept", "usr_kept", "approved"),
        device("dev_orphan_approved", "usr_gone", "approved"),
        device("dev_orphan_pending", "usr_gone", "pending"),
        device("dev_orphan_revoked", "usr_gone", "revoked"),
      ])
      .execute();
    await migrateStore(store);
    const rows = await store.db
      .selectFrom("devices")
      .select(["id", "status", "compliant"])
      .orderBy("id")
      .execute();
    expect(rows.map((r) => [r.id, r.status, Number(r.compliant)])).toEqual([
      ["dev_kept", "approved", 1],
      ["dev_orphan_approved", "revoked", 0],
      ["dev_orphan_pending", "revoked", 0],
      ["dev_orphan_revoked", "revoked", 0],
    ]);
  });

  it("takes only the last report's collected_at for the replay check: a last report that a later version's rules would refuse does not block every new report", async () => {
    const path = writeEngineConfig(
      await target(),
      "devices: { required: [disk_encryption, firewall] }\n",
    );
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const ctx = await processOn(path, clock);
    await identityService(ctx).addUser({ name: "hal", password: TEST_PASSWORD });
    const svc = new DeviceService(ctx);
    const { id, signed: report } = await deviceOf(ctx, "hal");
    const device = { id };
    const signed = (collectedAt: number, os: string, firewall: boolean) =>
      report({ collected_at: collectedAt, os, checks: { disk_encryption: true, firewall } });
    // A report stored by an earlier version, whose rules let a BEL in os through.
    const [legacy, legacySig] = signed(clock.now() - 1000, "Debian\u0007 12", true);
    await ctx.store.db
      .insertInto("device_reports")
      .values({
        id: "rep_legacy",
        device_id: device.id,
        received_at: clock.now() - 1000,
        report: JSON.stringify({ payload: legacy, signature: legacySig }),
        score: 100,
        compliant: 1,
      })
      .execute();
    const off = await svc.submitReport(device.id, ...signed(clock.now(), "Debian 12", false));
    expect(off).toMatchObject({ compliant: false, device: { compliantNow: false } });
    // The replay check still holds against it.
    clock.advance(1000);
    await expect(
      svc.submitReport(device.id, ...signed(clock.now() - 1500, "Debian 12", true)),
    ).rejects.toMatchObject({ code: "ZT_DEVICE_INVALID", message: /not newer than the last/ });
  });

  it("turns a Device entity's compliant attribute false when its report ages out (the periodic pass), not only context.device", async () => {
    const path = writeEngineConfig(await target(), "devices: { report_interval: 1h }\n");
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const ctx = await processOn(path, clock);
    await identityService(ctx).addUser({ name: "ivy", password: TEST_PASSWORD });
    const { id, signed } = await deviceOf(ctx, "ivy");
    const device = { id };
    await new DeviceService(ctx).submitReport(device.id, ...signed({}));
    const entities = new EntityStore();
    const trust = new DeviceTrust(ctx, parseDevicesConfig(ctx.config.devices), entities);
    await trust.load();
    const attr = () => entities.get({ type: "Device", id: device.id })?.attrs["compliant"];
    expect(attr()).toBe(true);
    // No report for over an hour; the periodic pass runs.
    const since = clock.now();
    clock.advance(3_600_001);
    expect(trust.expiredSince(since, clock.now()).map((d) => d.id)).toEqual([device.id]);
    expect(attr()).toBe(false);
  });

  it("refuses (and stores nothing of) a report for a device revoked while the report was under way, rather than answering it compliant", async () => {
    const path = writeEngineConfig(
      await target(),
      "devices: { required: [disk_encryption, firewall] }\n",
    );
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const reporting = await processOn(path, clock);
    const admin = await processOn(path, clock);
    await identityService(admin).addUser({ name: "jo", password: TEST_PASSWORD });
    const { id, signed } = await deviceOf(admin, "jo");
    const device = { id };
    // The reporting process reads the (approved) device; an admin revokes it right then.
    const store = reporting.store as { db: typeof reporting.store.db };
    store.db = reporting.store.db.withPlugin(
      new AfterFirstRead("devices", async () => {
        await new DeviceService(admin).revoke(device.id, "admin");
      }),
    );
    await expect(
      new DeviceService(reporting).submitReport(device.id, ...signed({})),
    ).rejects.toMatchObject({ code: "ZT_ACCESS_STATE", message: /revoked/ });
    expect(await admin.store.db.selectFrom("device_reports").select("id").execute()).toEqual([]);
    await reporting.audit.flush();
    const records = await admin.store.db
      .selectFrom("audit_events")
      .select(["outcome", "reason"])
      .where("kind", "=", "device.report")
      .execute();
    expect(records).toEqual([{ outcome: "failure", reason: "device-revoked" }]);
  });

  it("audits a replayed, stale, mis-addressed or malformed signed report as a device.report failure naming why (they were refused unrecorded)", async () => {
    const path = writeEngineConfig(await target(), "");
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const ctx = await processOn(path, clock);
    await identityService(ctx).addUser({ name: "kim", password: TEST_PASSWORD });
    const svc = new DeviceService(ctx);
    const { id, signed } = await deviceOf(ctx, "kim", { pending: true });
    const submit = (report: Record<string, unknown> | string) =>
      svc.submitReport(id, ...signed(report), "198.51.100.9");
    await submit({});
    for (const bad of [
      {}, // the same report again
      { collected_at: clock.now() - 3_600_000 },
      { device_id: "dev_someoneelse" },
      '{"v":1,"checks":"all good"}',
    ])
      await expect(submit(bad)).rejects.toMatchObject({ code: "ZT_DEVICE_INVALID" });
    await ctx.audit.flush();
    const records = await ctx.store.db
      .selectFrom("audit_events")
      .select(["outcome", "reason", "source_ip"])
      .where("kind", "=", "device.report")
      .where("outcome", "=", "failure")
      .execute();
    expect(records.map((r) => r.reason).sort()).toEqual([
      "report-device-mismatch",
      "report-invalid",
      "report-replayed",
      "report-stale",
    ]);
    expect(new Set(records.map((r) => r.source_ip))).toEqual(new Set(["198.51.100.9"]));
  });

  it("scores a device's last report under the devices: rules in force, so a tightened required list or min_score applies at once, not at its next report", async () => {
    const t = await target();
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    const open = async (devices: string) => {
      return processOn(writeEngineConfig(t, `devices:\n${devices}`), clock);
    };
    const before = await open("  required: [disk_encryption, firewall]\n");
    await identityService(before).addUser({ name: "erin", password: TEST_PASSWORD });
    const { id, signed } = await deviceOf(before, "erin");
    const device = { id };
    const r = await new DeviceService(before).submitReport(
      device.id,
      ...signed({
        checks: { disk_encryption: true, firewall: true, screen_lock: false, os_updates: false },
      }),
    );
    expect(r).toMatchObject({ compliant: true, score: 50 });

    // The operator tightens the rules and restarts: the screen lock is now required, and
    // the last report said it was off.
    for (const rules of [
      "  required: [disk_encryption, firewall, screen_lock]\n",
      "  required: [disk_encryption, firewall]\n  min_score: 60\n",
    ]) {
      const after = await open(rules);
      expect((await new DeviceService(after).get(device.id)).compliantNow).toBe(false);
      const trust = new DeviceTrust(
        after,
        parseDevicesConfig(after.config.devices),
        new EntityStore(),
      );
      await trust.load();
      expect(trust.compliantNow(trust.device(device.id)!)).toBe(false);
    }
    // Weights the operator changed count too (the score policies compare).
    const reweighed = await open("  weights: { screen_lock: 0, os_updates: 0, antivirus: 0 }\n");
    expect(await new DeviceService(reweighed).get(device.id)).toMatchObject({
      compliantNow: true,
      score: 100,
    });
  });
});
