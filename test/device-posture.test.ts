/**
 * Device trust: Ed25519 device keys in 0600 files, enrolment (pending / auto-approved),
 * signed posture reports (tampered, replayed, stale and foreign-key reports refused),
 * the compliance score, expiry of a missing report (injected clock), session binding,
 * and posture collection on this real Linux machine.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, statSync } from "node:fs";
import { ManualClock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import { SessionService } from "../src/session/index.js";
import { EntityStore } from "../src/policy/index.js";
import {
  bindPayload,
  collectPosture,
  DEFAULT_WEIGHTS,
  DeviceService,
  DeviceTrust,
  generateDeviceKey,
  isCompliantAt,
  loadDeviceKey,
  parseDevicesConfig,
  POSTURE_CHECKS,
  saveDeviceKey,
  scorePosture,
  signWithDeviceKey,
  verifyDeviceSignature,
  type PostureChecks,
} from "../src/device/index.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ZtError);
  expect((err as ZtError).code).toBe(code);
}

const ALL_OK: PostureChecks = {
  os_updates: true,
  disk_encryption: true,
  firewall: true,
  screen_lock: true,
  antivirus: true,
};

describe("posture score (pure)", () => {
  const cfg = {
    weights: DEFAULT_WEIGHTS,
    required: ["disk_encryption", "firewall"] as ("disk_encryption" | "firewall")[],
    minScore: 0,
  };

  it("scores the share of weights that passed; unknown counts as failed", () => {
    expect(scorePosture(ALL_OK, cfg)).toEqual({ score: 100, compliant: true, failures: [] });
    expect(scorePosture({ ...ALL_OK, screen_lock: null, antivirus: false }, cfg)).toMatchObject({
      score: 70,
      compliant: true,
    });
    expect(scorePosture({}, cfg).score).toBe(0);
  });

  it("is non-compliant when a required check fails or is unknown, whatever the score", () => {
    expect(scorePosture({ ...ALL_OK, firewall: false }, cfg)).toMatchObject({
      score: 80,
      compliant: false,
      failures: ["required-check-failed:firewall"],
    });
    expect(scorePosture({ ...ALL_OK, disk_encryption: null }, cfg).failures).toEqual([
      "required-check-failed:disk_encryption",
    ]);
    expect(
      scorePosture({ ...ALL_OK, antivirus: false }, { ...cfg, minScore: 90 }).failures,
    ).toEqual(["score-below-minimum"]);
  });

  it("expires compliance when no report arrived within the interval", () => {
    const d = { status: "approved", compliant: true, lastReportAt: 1000 };
    expect(isCompliantAt(d, 1000 + 500, 500)).toBe(true);
    expect(isCompliantAt(d, 1000 + 501, 500)).toBe(false);
    expect(isCompliantAt({ ...d, status: "pending" }, 1000, 500)).toBe(false);
    expect(isCompliantAt({ ...d, lastReportAt: null }, 1000, 500)).toBe(false);
  });

  it("validates the devices: section, naming the key path", () => {
    expect(() => parseDevicesConfig({ required: ["firewal"] })).toThrow(/devices\.required\.0/);
    expect(() => parseDevicesConfig({ weights: { firewall: -1 } })).toThrow(
      /devices\.weights\.firewall/,
    );
    expect(() => parseDevicesConfig({ report_interval: "soon" })).toThrow(
      /devices\.report_interval/,
    );
    expect(parseDevicesConfig(undefined).required).toEqual(["disk_encryption", "firewall"]);
  });
});

describe("device keys", () => {
  it("signs and verifies with Ed25519, refusing tampering and other keys", () => {
    const a = generateDeviceKey();
    const b = generateDeviceKey();
    const sig = signWithDeviceKey(a.privatePem, "hello");
    expect(verifyDeviceSignature(a.publicPem, "hello", sig)).toBe(true);
    expect(verifyDeviceSignature(a.publicPem, "hellO", sig)).toBe(false);
    expect(verifyDeviceSignature(b.publicPem, "hello", sig)).toBe(false);
    expect(verifyDeviceSignature(a.publicPem, "hello", "not base64!")).toBe(false);
    expect(verifyDeviceSignature("garbage", "hello", sig)).toBe(false);
  });

  it("keeps the key in a 0600 file and refuses one others can read", () => {
    const dir = tempDir("zt-devkey-");
    const k = generateDeviceKey();
    const path = saveDeviceKey(dir, {
      device_id: "dev_abc",
      name: "laptop",
      user: "alice",
      private_key: k.privatePem,
    });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadDeviceKey(dir).device_id).toBe("dev_abc");
    chmodSync(path, 0o644);
    expect(() => loadDeviceKey(dir)).toThrow(/chmod 600/);
  });
});

describe("device service", () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 2, 10, 0, 0));
  let ctx: AppContext;
  let devices: DeviceService;

  beforeAll(async () => {
    const dir = tempDir("zt-device-");
    const path = writeConfig(
      dir,
      `data_dir: ./data
devices:
  auto_approve_groups: [corp-laptops]
  report_interval: 1h
  required: [disk_encryption, firewall]
  min_score: 50
`,
      {},
    );
    ctx = await openAppContext(loadConfig(path, { env: {} }), { clock, env: {}, create: true });
    const ids = identityService(ctx);
    await ids.addUser({
      name: "alice",
      groups: ["corp-laptops"],
      password: "pw-correct-horse-battery",
    });
    await ids.addUser({ name: "bob", groups: ["eng"], password: "pw-correct-horse-battery" });
    devices = new DeviceService(ctx);
  }, 60_000);

  afterAll(async () => {
    await ctx?.close();
  });

  function report(deviceId: string, checks: PostureChecks, at = clock.now()): string {
    return JSON.stringify({
      v: 1,
      device_id: deviceId,
      collected_at: at,
      os: "Debian GNU/Linux 12",
      checks,
    });
  }

  it("auto-approves devices of users in the configured group, and leaves others pending for an admin", async () => {
    const k = generateDeviceKey();
    const a = await devices.enroll({
      userName: "alice",
      name: "alice-laptop",
      publicKeyPem: k.publicPem,
    });
    expect(a).toMatchObject({
      autoApproved: true,
      device: { status: "approved", userName: "alice" },
    });
    const b = await devices.enroll({
      userName: "bob",
      name: "bob-laptop",
      publicKeyPem: generateDeviceKey().publicPem,
    });
    expect(b.device.status).toBe("pending");
    const approved = await devices.approve(b.device.id, "admin");
    expect(approved.status).toBe("approved");
    await expectCode(devices.approve(b.device.id, "admin"), "ZT_ACCESS_STATE");
    await expectCode(
      devices.enroll({
        userName: "bob",
        name: "x",
        publicKeyPem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
      }),
      "ZT_DEVICE_INVALID",
    );
    await expectCode(
      devices.enroll({ userName: "bob", name: "../etc", publicKeyPem: k.publicPem }),
      "ZT_DEVICE_INVALID",
    );
  });

  it("accepts a signed report, scores it, and refuses forged, tampered, replayed and stale ones", async () => {
    const k = generateDeviceKey();
    const { device } = await devices.enroll({
      userName: "alice",
      name: "alice-desktop",
      publicKeyPem: k.publicPem,
    });
    const p1 = report(device.id, ALL_OK);
    const r1 = await devices.submitReport(device.id, p1, signWithDeviceKey(k.privatePem, p1));
    expect(r1).toMatchObject({
      score: 100,
      compliant: true,
      device: { compliantNow: true, os: "Debian GNU/Linux 12" },
    });

    const forged = report(device.id, ALL_OK, clock.now() + 1);
    await expectCode(
      devices.submitReport(
        device.id,
        forged,
        signWithDeviceKey(generateDeviceKey().privatePem, forged),
      ),
      "ZT_DEVICE_SIGNATURE",
    );
    const sig = signWithDeviceKey(k.privatePem, forged);
    await expectCode(
      devices.submitReport(device.id, forged.replace('"firewall":true', '"firewall":false'), sig),
      "ZT_DEVICE_SIGNATURE",
    );
    await expectCode(
      devices.submitReport(device.id, p1, signWithDeviceKey(k.privatePem, p1)),
      "ZT_DEVICE_INVALID",
    ); // replay
    const stale = report(device.id, ALL_OK, clock.now() - 3_600_000);
    await expectCode(
      devices.submitReport(device.id, stale, signWithDeviceKey(k.privatePem, stale)),
      "ZT_DEVICE_INVALID",
    );
    const bad = JSON.stringify({
      v: 1,
      device_id: device.id,
      collected_at: clock.now() + 2,
      os: "x",
      checks: { firewall: "yes" },
    });
    await expectCode(
      devices.submitReport(device.id, bad, signWithDeviceKey(k.privatePem, bad)),
      "ZT_DEVICE_INVALID",
    );

    clock.advance(1000);
    const p2 = report(device.id, { ...ALL_OK, firewall: false });
    const r2 = await devices.submitReport(device.id, p2, signWithDeviceKey(k.privatePem, p2));
    expect(r2).toMatchObject({ compliant: false, failures: ["required-check-failed:firewall"] });
  });

  it("exposes context.device and a Device entity owned by the user; a missing report expires compliance", async () => {
    const k = generateDeviceKey();
    const { device } = await devices.enroll({
      userName: "alice",
      name: "alice-tablet",
      publicKeyPem: k.publicPem,
    });
    const p = report(device.id, ALL_OK);
    await devices.submitReport(device.id, p, signWithDeviceKey(k.privatePem, p));
    const sessions = new SessionService(ctx);
    const user = await ctx.store.db
      .selectFrom("users")
      .select("id")
      .where("name", "=", "alice")
      .executeTakeFirstOrThrow();
    const { session } = await sessions.create({
      userId: user.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    const at = clock.now();
    await devices.bindSession(
      session.id,
      device.id,
      at,
      signWithDeviceKey(k.privatePem, bindPayload(session.id, device.id, at)),
    );

    const entities = new EntityStore();
    const trust = new DeviceTrust(ctx, parseDevicesConfig(ctx.config.devices), entities);
    await trust.load();
    expect(trust.contribute({ sessionId: session.id })).toEqual({
      device: { compliant: true, score: 100, os: "Debian GNU/Linux 12" },
    });
    expect(trust.contribute({ sessionId: "ses_other" })).toBeUndefined();
    const entity = entities.get({ type: "Device", id: device.id });
    expect(entity?.attrs).toMatchObject({
      owner: { __entity: { type: "User", id: "alice" } },
      compliant: true,
      score: 100,
    });

    const before = clock.now();
    clock.advance(3_600_001);
    expect(trust.contribute({ sessionId: session.id })).toMatchObject({
      device: { compliant: false },
    });
    expect(trust.expiredSince(before, clock.now()).map((d) => d.id)).toContain(device.id);

    // Binding: only with the device's key, only the owner's sessions.
    const bob = await ctx.store.db
      .selectFrom("users")
      .select("id")
      .where("name", "=", "bob")
      .executeTakeFirstOrThrow();
    const other = await sessions.create({
      userId: bob.id,
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    const t = clock.now();
    await expectCode(
      devices.bindSession(
        other.session.id,
        device.id,
        t,
        signWithDeviceKey(k.privatePem, bindPayload(other.session.id, device.id, t)),
      ),
      "ZT_DEVICE_INVALID",
    );
    await expectCode(
      devices.bindSession(
        session.id,
        device.id,
        t,
        signWithDeviceKey(generateDeviceKey().privatePem, bindPayload(session.id, device.id, t)),
      ),
      "ZT_DEVICE_SIGNATURE",
    );
    sessions.close();
  });
});

describe("posture collection on this machine", () => {
  it("asks the real system and reports every check as true, false or null", async () => {
    const p = await collectPosture();
    expect(p.os.length).toBeGreaterThan(0);
    for (const c of POSTURE_CHECKS) {
      expect([true, false, null]).toContain(p.checks[c]);
      expect(typeof p.evidence[c]).toBe("string");
    }
  }, 60_000);
});
