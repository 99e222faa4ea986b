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
  type CommandResult,
  type CommandRunner,
  type PostureChecks,
} from "../src/device/index.js";
import { createApiServer } from "../src/api/index.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { testSession } from "./helpers/test-session.js";

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
    const { session, token } = await testSession(sessions, user.id);
    const at = clock.now();
    await devices.bindSession({
      deviceId: device.id,
      sessionToken: token,
      at,
      signature: signWithDeviceKey(
        k.privatePem,
        bindPayload({ deviceId: device.id, sessionToken: token, at }),
      ),
    });

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
    const other = await testSession(sessions, bob.id);
    const t = clock.now();
    await expectCode(
      devices.bindSession({
        deviceId: device.id,
        sessionToken: other.token,
        at: t,
        signature: signWithDeviceKey(
          k.privatePem,
          bindPayload({ deviceId: device.id, sessionToken: other.token, at: t }),
        ),
      }),
      "ZT_DEVICE_INVALID",
    );
    await expectCode(
      devices.bindSession({
        deviceId: device.id,
        sessionToken: token,
        at: t,
        signature: signWithDeviceKey(
          generateDeviceKey().privatePem,
          bindPayload({ deviceId: device.id, sessionToken: token, at: t }),
        ),
      }),
      "ZT_DEVICE_SIGNATURE",
    );
    sessions.close();
  });

  /** A compliant, approved device of alice's, and a way to open alice's sessions. */
  async function aliceDevice(name: string) {
    const k = generateDeviceKey();
    const { device } = await devices.enroll({ userName: "alice", name, publicKeyPem: k.publicPem });
    clock.advance(1);
    const p = report(device.id, ALL_OK);
    await devices.submitReport(device.id, p, signWithDeviceKey(k.privatePem, p));
    const user = await ctx.store.db
      .selectFrom("users")
      .select("id")
      .where("name", "=", "alice")
      .executeTakeFirstOrThrow();
    const sessions = new SessionService(ctx);
    const login = () => testSession(sessions, user.id);
    const sign = (sessionToken: string, at = clock.now()) => ({
      at,
      signature: signWithDeviceKey(
        k.privatePem,
        bindPayload({ deviceId: device.id, sessionToken, at }),
      ),
    });
    const boundTo = async (sessionId: string) =>
      (
        await ctx.store.db
          .selectFrom("sessions")
          .select("device_id")
          .where("id", "=", sessionId)
          .executeTakeFirstOrThrow()
      ).device_id;
    return { k, device, sessions, login, sign, boundTo };
  }

  it("binds a session only for the client holding its token: a session id alone binds nothing (API)", async () => {
    const d = await aliceDevice("alice-managed");
    const app = await createApiServer(ctx);
    try {
      const url = `/v1/devices/${d.device.id}/bind`;
      // The attack: the managed laptop knows only the id of a session opened elsewhere.
      const victim = await d.login();
      const at = clock.now();
      const v1 = signWithDeviceKey(
        d.k.privatePem,
        `zt-device-bind:v1:${d.device.id}:${victim.session.id}:${at}`,
      );
      const idOnly = await app.inject({
        method: "POST",
        url,
        payload: { session_id: victim.session.id, at, signature: v1 },
      });
      expect(idOnly.statusCode).toBe(401);
      expect(idOnly.json().error.code).toBe("ZT_AUTH_REQUIRED");
      const idOnlyV2 = await app.inject({
        method: "POST",
        url,
        payload: { session_id: victim.session.id, ...d.sign(victim.session.id) },
      });
      expect(idOnlyV2.statusCode).toBe(401);
      expect(await d.boundTo(victim.session.id)).toBeNull();

      // The session's own client binds it: Bearer token, or the session cookie.
      const a = await d.login();
      const ok = await app.inject({
        method: "POST",
        url,
        headers: { authorization: `Bearer ${a.token}` },
        payload: d.sign(a.token),
      });
      expect(ok.statusCode, ok.body).toBe(200);
      expect(ok.json()).toEqual({ bound: true, session_id: a.session.id, device_id: d.device.id });
      expect(await d.boundTo(a.session.id)).toBe(d.device.id);
      const b = await d.login();
      const viaCookie = await app.inject({
        method: "POST",
        url,
        headers: { cookie: `other=1; ${ctx.config.session.cookie_name}=${b.token}` },
        payload: { session_id: b.session.id, ...d.sign(b.token) },
      });
      expect(viaCookie.statusCode, viaCookie.body).toBe(200);
      expect(await d.boundTo(b.session.id)).toBe(d.device.id);

      // A signature made for one session's token cannot bind another session.
      const c = await d.login();
      const replay = await app.inject({
        method: "POST",
        url,
        headers: { authorization: `Bearer ${c.token}` },
        payload: d.sign(a.token),
      });
      expect(replay.statusCode).toBe(401);
      expect(replay.json().error.code).toBe("ZT_DEVICE_SIGNATURE");
      // session_id, when sent, must be the token's session.
      const mismatch = await app.inject({
        method: "POST",
        url,
        headers: { authorization: `Bearer ${c.token}` },
        payload: { session_id: victim.session.id, ...d.sign(c.token) },
      });
      expect(mismatch.statusCode).toBe(400);
      expect(mismatch.json().error.code).toBe("ZT_DEVICE_INVALID");
      // Two different tokens: which session is meant is not guessed.
      const both = await app.inject({
        method: "POST",
        url,
        headers: {
          authorization: `Bearer ${c.token}`,
          cookie: `${ctx.config.session.cookie_name}=${a.token}`,
        },
        payload: d.sign(c.token),
      });
      expect(both.statusCode).toBe(400);
      // Two session cookies (one planted by a sibling app of the site): refused over a
      // real socket, whichever comes first; nothing bound.
      await app.listen({ host: "127.0.0.1", port: 0 });
      const port = (app.server.address() as { port: number }).port;
      const name = ctx.config.session.cookie_name;
      for (const cookie of [
        `${name}=${c.token}; ${name}=${a.token}`,
        `${name}=${c.token}; ${name}=${c.token}`,
      ]) {
        const tossed = await fetch(`http://127.0.0.1:${port}${url}`, {
          method: "POST",
          headers: { "content-type": "application/json", cookie },
          body: JSON.stringify(d.sign(c.token)),
        });
        expect(tossed.status).toBe(400);
        const err = ((await tossed.json()) as { error: { code: string; reason?: string } }).error;
        expect(err.code).toBe("ZT_REQUEST_AMBIGUOUS");
        expect(err.reason).toBe("session-cookie-duplicate");
      }
      // An unknown token is no session.
      const forged = "A".repeat(43);
      const unknown = await app.inject({
        method: "POST",
        url,
        headers: { authorization: `Bearer ${forged}` },
        payload: d.sign(forged),
      });
      expect(unknown.statusCode).toBe(401);
      expect(unknown.json().error.code).toBe("ZT_SESSION_INVALID");
      expect(await d.boundTo(c.session.id)).toBeNull();
      expect(await d.boundTo(victim.session.id)).toBeNull();
    } finally {
      await app.close();
      d.sessions.close();
    }
  });

  it("refuses to bind an expired or revoked session", async () => {
    const d = await aliceDevice("alice-managed-2");
    try {
      const expired = await d.login();
      await ctx.store.db
        .updateTable("sessions")
        .set({ expires_at: clock.now() - 1 })
        .where("id", "=", expired.session.id)
        .execute();
      await expectCode(
        devices.bindSession({
          deviceId: d.device.id,
          sessionToken: expired.token,
          ...d.sign(expired.token),
        }),
        "ZT_SESSION_EXPIRED",
      );
      expect(await d.boundTo(expired.session.id)).toBeNull();

      const revoked = await d.login();
      await d.sessions.revoke([revoked.session.id], "test");
      await expectCode(
        devices.bindSession({
          deviceId: d.device.id,
          sessionToken: revoked.token,
          ...d.sign(revoked.token),
        }),
        "ZT_SESSION_REVOKED",
      );
      expect(await d.boundTo(revoked.session.id)).toBeNull();

      await expectCode(
        devices.bindSession({
          deviceId: d.device.id,
          sessionToken: undefined,
          sessionId: revoked.session.id,
          ...d.sign(""),
        }),
        "ZT_AUTH_REQUIRED",
      );
      const live = await d.login();
      await expect(
        devices.bindSession({
          deviceId: d.device.id,
          sessionToken: live.token,
          ...d.sign(live.token),
        }),
      ).resolves.toEqual({ sessionId: live.session.id });
    } finally {
      d.sessions.close();
    }
  });
});

/** A fake system: answers by "cmd args…"; anything else is a command that is not there. */
function fakeSystem(answers: Record<string, Partial<CommandResult>>): {
  run: CommandRunner;
  asked: string[];
} {
  const asked: string[] = [];
  return {
    asked,
    run: async (cmd, args) => {
      const line = [cmd, ...args].join(" ");
      asked.push(line);
      const a = answers[line];
      if (!a) return { ok: false, code: -1, out: "" };
      const code = a.code ?? 0;
      return { ok: code === 0, code, out: a.out ?? "" };
    },
  };
}

const APT = "apt-get -s -o Debug::NoLocking=1 dist-upgrade";
const APT_SUMMARY = "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
const FINDMNT = "findmnt -n -v -o SOURCE /";

describe("posture collector fails closed (fake command runner)", () => {
  it("os_updates: a failing or unreadable apt run is unknown, never 0 pending", async () => {
    const failing = fakeSystem({ [APT]: { code: 100, out: "" } });
    expect((await collectPosture({ run: failing.run })).checks.os_updates).toBeNull();
    expect(failing.asked).toContain(APT);
    const garbage = fakeSystem({ [APT]: { out: "E: something odd\n" } });
    expect((await collectPosture({ run: garbage.run })).checks.os_updates).toBeNull();
    const clean = fakeSystem({ [APT]: { out: "Reading package lists...\n" + APT_SUMMARY } });
    expect((await collectPosture({ run: clean.run })).checks.os_updates).toBe(true);
    const pending = fakeSystem({
      [APT]: {
        out:
          "Inst libssl3 [3.0.11-1] (3.0.13-1 Debian-Security:12/stable-security [amd64])\n" +
          "1 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n",
      },
    });
    expect((await collectPosture({ run: pending.run })).checks.os_updates).toBe(false);
  });

  it("firewall: an active nftables unit without a readable ruleset is unknown, not active", async () => {
    const nonRoot = fakeSystem({
      "ufw status": { code: 1, out: "" },
      "nft list ruleset": { code: 1, out: "" },
      "systemctl is-active nftables": { out: "active\n" },
    });
    expect((await collectPosture({ run: nonRoot.run })).checks.firewall).toBeNull();
    expect(nonRoot.asked).toContain("nft list ruleset");
    const empty = fakeSystem({ "nft list ruleset": { out: "" } });
    expect((await collectPosture({ run: empty.run })).checks.firewall).toBe(false);
    const ruleset = fakeSystem({
      "nft list ruleset": {
        out: "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n",
      },
    });
    expect((await collectPosture({ run: ruleset.run })).checks.firewall).toBe(true);
    const ufw = fakeSystem({ "ufw status": { out: "Status: active\n" } });
    expect((await collectPosture({ run: ufw.run })).checks.firewall).toBe(true);
  });

  it("disk_encryption: only a crypt layer under / counts, not any mapped crypt device", async () => {
    const usbStick = fakeSystem({
      [FINDMNT]: { out: "/dev/nvme0n1p2\n" },
      "lsblk -n -s -o TYPE /dev/nvme0n1p2": { out: "part\ndisk\n" },
      // every block device: an unlocked LUKS USB stick is mapped, but / is not on it
      "lsblk -n -o TYPE": { out: "disk\npart\npart\ndisk\npart\ncrypt\n" },
    });
    expect((await collectPosture({ run: usbStick.run })).checks.disk_encryption).toBe(false);
    expect(usbStick.asked).toContain(FINDMNT);
    const luksLvm = fakeSystem({
      [FINDMNT]: { out: "/dev/mapper/vg-root\n" },
      "lsblk -n -s -o TYPE /dev/mapper/vg-root": { out: "lvm\ncrypt\npart\ndisk\n" },
    });
    expect((await collectPosture({ run: luksLvm.run })).checks.disk_encryption).toBe(true);
    const overlay = fakeSystem({ [FINDMNT]: { out: "overlay\n" } });
    expect((await collectPosture({ run: overlay.run })).checks.disk_encryption).toBeNull();
    const noFindmnt = fakeSystem({ "lsblk -n -o TYPE": { out: "crypt\n" } });
    expect((await collectPosture({ run: noFindmnt.run })).checks.disk_encryption).toBeNull();
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
