/**
 * Device trust, JIT grants and risk signals on both storage engines (SQLite and
 * PostgreSQL at 127.0.0.1:5432): bigint timestamps read back as numbers, grants and
 * devices load into the hot-path caches, expiry marks rows, the re-check reads risk.
 */
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/core/clock.js";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import { EntityStore } from "../src/policy/index.js";
import { AccessService, GrantCache, RiskSignals } from "../src/access/index.js";
import {
  DeviceService,
  DeviceTrust,
  generateDeviceKey,
  parseDevicesConfig,
  signWithDeviceKey,
} from "../src/device/index.js";
import { engines, writeEngineConfig, type Engine, type EngineTarget } from "./store-fixture.js";

const ENGINES = await engines();

describe.each(ENGINES)("continuous verification state on $name", (engine: Engine) => {
  let target: EngineTarget | undefined;
  let ctx: AppContext | undefined;
  afterEach(async () => {
    await ctx?.close();
    await target?.cleanup();
    ctx = undefined;
    target = undefined;
  });

  it("stores and reloads grants, devices and risk signals", async () => {
    target = await engine.fresh();
    const path = writeEngineConfig(
      target,
      `routes:
  - { name: db-admin, from: "http://db.localhost:8443", to: "http://127.0.0.1:9" }
access: { resources: { db-admin: { approvers: dba } } }
devices: { auto_approve_groups: [eng], report_interval: 1h }
`,
    );
    const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    ctx = await openAppContext(loadConfig(path, { env: {} }), { clock, env: {}, create: true });
    const ids = identityService(ctx);
    await ids.addUser({ name: "alice", groups: ["eng"], password: "pw-correct-horse-battery" });
    await ids.addUser({ name: "dana", groups: ["dba"], password: "pw-correct-horse-battery" });

    const access = new AccessService(ctx);
    const r = await access.request({
      user: "alice",
      resource: "db-admin",
      reason: "engine test",
      ttlMs: 600_000,
    });
    const approved = await access.approve(r.id, "dana");
    expect(approved.expiresAt).toBe(clock.now() + 600_000);
    expect(typeof approved.expiresAt).toBe("number");
    const grants = new GrantCache(ctx);
    await grants.load();
    expect(
      grants.contribute({ principal: { type: "User", id: "alice" }, route: "db-admin" }),
    ).toEqual({ grants: ["db-admin"], breakglass: false });
    clock.advance(600_000);
    expect((await access.expireDue()).map((g) => g.id)).toEqual([r.id]);
    await grants.load();
    expect(grants.nextExpiry()).toBeUndefined();

    const devices = new DeviceService(ctx);
    const k = generateDeviceKey();
    const { device } = await devices.enroll({
      userName: "alice",
      name: "laptop",
      publicKeyPem: k.publicPem,
    });
    const payload = JSON.stringify({
      v: 1,
      device_id: device.id,
      collected_at: clock.now(),
      os: "Debian",
      checks: { disk_encryption: true, firewall: true },
    });
    const s = await devices.submitReport(
      device.id,
      payload,
      signWithDeviceKey(k.privatePem, payload),
    );
    expect(s).toMatchObject({
      compliant: true,
      device: { lastReportAt: clock.now(), compliantNow: true },
    });
    const trust = new DeviceTrust(ctx, parseDevicesConfig(ctx.config.devices), new EntityStore());
    await trust.load();
    expect(trust.device(device.id)?.lastReportAt).toBe(clock.now());

    const risk = new RiskSignals(ctx, () => "unknown");
    await expect(
      ids.authenticate({
        username: "alice",
        password: "wrong-password",
        totp: "000000",
        sourceIp: "10.9.9.9",
      }),
    ).rejects.toThrow();
    await risk.refresh();
    expect(
      risk.contribute({ principal: { type: "User", id: "alice" }, sourceIp: "10.9.9.9" }),
    ).toMatchObject({ failed_attempts: 1 });
  }, 60_000);
});
