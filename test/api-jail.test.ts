/**
 * The control-plane API's refusals of unauthenticated callers are regulated as sign-ins
 * are: a join token that names nothing (or is reused), a device signature that does not
 * verify, a session token that names no session — each counted by the default `api-ip`
 * jail (`match: api-refused`), whose ban the API then enforces on every route for that
 * source; what a legitimate client meets in normal use is not counted. A wrong operator
 * token on `/metrics` is audited and counted the same way; a missing one is audited
 * only. And the device routes answer a caller who has not proven the device's key the
 * same whatever the device's status. `zt up` in process; requests over real sockets from distinct loopback
 * addresses (127.0.0.x stand for distinct clients); SQLite and PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { pkiService } from "../src/pki/index.js";
import {
  bindPayload,
  DeviceService,
  generateDeviceKey,
  signWithDeviceKey,
} from "../src/device/index.js";
import { requestFrom, type ClientResponse } from "./helpers/http-client.js";
import { opensslRequest } from "./helpers/tls.js";
import { auditRows } from "./helpers/audit-rows.js";
import { writeConfig } from "./helpers/zt-process.js";
import { engineConfigYaml, engines, type Engine, type EngineTarget } from "./store-fixture.js";
import { addUsers, runUpInProcess } from "./helpers/zt-up-in-process.js";
import { testSession } from "./helpers/test-session.js";

const POLICIES = `
permit (principal in Group::"eng", action == Action::"ssh:sign", resource == HostGroup::"prod");
`;

const ENGINES = await engines();

/** The operator token (`audit.metrics_token_file`) that opens `/metrics`. */
const OPERATOR_TOKEN = "op-scrape-token-5f0c1d";

describe.each(ENGINES)("the API's unauthenticated refusals on $name", (engine: Engine) => {
  let zt: RunningZt;
  let target: EngineTarget;
  let dir: string;
  let aliceToken: string;
  let pub: string;
  let csr: string;
  let devices: DeviceService;
  let userIds: Record<string, string>;
  const key = generateDeviceKey();
  const otherKey = generateDeviceKey();

  beforeAll(async () => {
    target = await engine.fresh();
    dir = target.storeOptions.dataDir;
    writeFileSync(join(dir, "metrics.token"), `${OPERATOR_TOKEN}\n`, { mode: 0o600 });
    zt = await runUpInProcess(
      writeConfig(
        dir,
        engineConfigYaml(
          target,
          [
            "trust_domain: jail.test",
            "devices:",
            "  auto_approve_groups: [eng]",
            // Loopback is allow-listed by default; here 127.0.0.x stand for real clients.
            "alerts:",
            "  allow_list: { ips: [] }",
            // The operator token opens /metrics (written below, before zt starts).
            "audit:",
            "  metrics_token_file: ./metrics.token",
            "",
          ].join("\n"),
        ),
        { "ssh.cedar": POLICIES },
      ),
      new ManualClock(Date.now()),
    );
    const users = await addUsers(zt, [
      ["alice", ["eng"]],
      ["bob", []],
    ]);
    userIds = { alice: users["alice"]!.id, bob: users["bob"]!.id };
    aliceToken = await newSession("alice");
    await (await pkiService(zt.ctx)).addRegistration({ spiffeId: "spiffe://jail.test/w" }, "t");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
    pub = readFileSync(join(dir, "id.pub"), "utf8");
    csr = opensslRequest({
      keyOut: join(dir, "w.key"),
      out: join(dir, "w.csr"),
      subj: "/CN=w",
      san: "URI:spiffe://jail.test/w",
      csr: true,
    });
    devices = new DeviceService(zt.ctx);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await target?.cleanup();
  });

  async function newSession(name: string): Promise<string> {
    return (await testSession(zt.services.sessions, userIds[name]!)).token;
  }

  async function enroll(user: string, name: string): Promise<string> {
    return (await devices.enroll({ userName: user, name, publicKeyPem: key.publicPem })).device.id;
  }

  async function joinToken(): Promise<string> {
    return (await (await pkiService(zt.ctx)).createJoinToken("spiffe://jail.test/w", "t")).token;
  }

  /** A request to the API from the loopback address `from`. */
  const api = (
    from: string,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => requestFrom(zt.apiAddress.port, from, method, path, body, headers);

  const join_ = (from: string, token: string) =>
    api(from, "POST", "/api/v1/svid", { csr }, { authorization: `Bearer ${token}` });
  const sshSign = (from: string, token: string | undefined, hostGroup = "prod") =>
    api(
      from,
      "POST",
      "/api/v1/ssh/sign",
      { public_key: pub, principals: ["alice"], host_group: hostGroup },
      token === undefined ? {} : { authorization: `Bearer ${token}` },
    );
  const report = (from: string, deviceId: string, privatePem: string, at = zt.ctx.clock.now()) => {
    const payload = JSON.stringify({
      v: 1,
      device_id: deviceId,
      collected_at: at,
      os: "linux",
      checks: { disk_encryption: true },
    });
    return api(from, "POST", `/v1/devices/${deviceId}/reports`, {
      payload,
      signature: signWithDeviceKey(privatePem, payload),
    });
  };
  const bind = (from: string, deviceId: string, privatePem: string, token?: string) => {
    const at = zt.ctx.clock.now();
    const signed = bindPayload({ deviceId, sessionToken: token ?? "none", at });
    return api(
      from,
      "POST",
      `/v1/devices/${deviceId}/bind`,
      { at, signature: signWithDeviceKey(privatePem, signed) },
      token === undefined ? {} : { authorization: `Bearer ${token}` },
    );
  };

  const metrics = (from: string, token?: string) =>
    api(
      from,
      "GET",
      "/metrics",
      undefined,
      token === undefined ? {} : { authorization: `Bearer ${token}` },
    );

  /** Polls the API (not the clock) from `from` until it is refused as banned. */
  async function untilBanned(from: string): Promise<ClientResponse> {
    for (let i = 0; i < 400; i++) {
      const r = await api(from, "GET", "/pki/bundle");
      if (r.status === 403) return r;
      await new Promise((res) => setTimeout(res, 25));
    }
    throw new Error(`${from} was never banned`);
  }

  async function bansOf(ip: string) {
    return (await auditRows(zt.ctx, "ban.add", ["source_ip", "reason", "data"])).filter(
      (r) => r.source_ip === ip,
    );
  }

  it("stops a join-token guesser from guessing forever: 10 unknown tokens from one source ban it, its next request — a valid join — is refused ZT_BANNED, another source is served, and the ban is audited", async () => {
    for (let i = 0; i < 10; i++) {
      const r = await join_("127.0.0.21", `ztjoin_guess${i}`);
      expect(r.status, r.body).toBe(401);
      expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_PKI_TOKEN_INVALID");
    }
    const banned = await untilBanned("127.0.0.21");
    expect(banned.json<{ error: Record<string, unknown> }>().error).toMatchObject({
      code: "ZT_BANNED",
      reason: "source-banned",
    });
    const token = await joinToken();
    const refused = await join_("127.0.0.21", token);
    expect(refused.status).toBe(403);
    expect(refused.json<{ error: { code: string } }>().error.code).toBe("ZT_BANNED");
    const signed = await sshSign("127.0.0.21", aliceToken);
    expect(signed.status).toBe(403);
    expect(signed.json<{ error: { code: string } }>().error.code).toBe("ZT_BANNED");
    // The refusal consumed nothing: the same token joins from another source.
    const other = await join_("127.0.0.22", token);
    expect(other.status, other.body).toBe(201);
    expect((await sshSign("127.0.0.22", aliceToken)).status).toBe(201);
    const bans = await bansOf("127.0.0.21");
    expect(bans.map((b) => b.reason)).toEqual(["api-ip"]);
    expect(JSON.parse(bans[0]!.data)).toMatchObject({ key: "ip:127.0.0.21" });
  });

  it("counts every credential the API refuses from one source: a reused join token, device signatures that do not verify, an unknown device, session tokens that name no session", async () => {
    const from = "127.0.0.23";
    const device = await enroll("alice", "laptop-23");
    const token = await joinToken();
    expect((await join_(from, token)).status).toBe(201);
    for (let i = 0; i < 2; i++) expect((await join_(from, token)).status).toBe(401); // reused
    for (let i = 0; i < 3; i++)
      expect((await report(from, device, otherKey.privatePem)).status).toBe(401);
    expect((await report(from, "dev_doesnotexist23", otherKey.privatePem)).status).toBe(401);
    for (let i = 0; i < 2; i++)
      expect((await bind(from, device, otherKey.privatePem, aliceToken)).status).toBe(401);
    for (let i = 0; i < 2; i++) expect((await sshSign(from, `zts_guessed${i}`)).status).toBe(401);
    await untilBanned(from);
    expect((await bansOf(from)).map((b) => b.reason)).toEqual(["api-ip"]);
  });

  it("audits a wrong operator token on /metrics like any refused credential — decision id, reason, source, never the token — and bans its guesser by the api-ip jail", async () => {
    const from = "127.0.0.26";
    const answers: Record<string, unknown>[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await metrics(from, `op-guess-${i}`);
      expect(r.status, r.body).toBe(401);
      answers.push(r.json<{ error: Record<string, unknown> }>().error);
    }
    expect(answers[0]).toMatchObject({
      code: "ZT_AUTH_REQUIRED",
      reason: "operator-token-invalid",
      decision_id: expect.stringMatching(/^dec_/),
    });
    const rows = (
      await auditRows(zt.ctx, "authn.operator-token", [
        "outcome",
        "reason",
        "source_ip",
        "decision_id",
        "data",
      ])
    ).filter((r) => r.source_ip === from);
    expect(rows.map((r) => [r.outcome, r.reason])).toEqual(
      Array.from({ length: 10 }, () => ["deny", "operator-token-invalid"]),
    );
    expect(rows.map((r) => r.decision_id)).toEqual(answers.map((a) => a["decision_id"]));
    expect(JSON.parse(rows[0]!.data)).toMatchObject({ path: "/metrics", code: "ZT_AUTH_REQUIRED" });
    // Never the token presented, nor the real one.
    const all = JSON.stringify(await auditRows(zt.ctx, "authn.operator-token", ["data", "reason"]));
    expect(all).not.toContain("op-guess-");
    expect(all).not.toContain(OPERATOR_TOKEN);
    await untilBanned(from);
    expect((await bansOf(from)).map((b) => b.reason)).toEqual(["api-ip"]);
    // Banned: even the right token is refused now; from another source it is served.
    const refused = await metrics(from, OPERATOR_TOKEN);
    expect(refused.json<{ error: { code: string } }>().error.code).toBe("ZT_BANNED");
    expect((await metrics("127.0.0.27", OPERATOR_TOKEN)).status).toBe(200);
  });

  it("audits and counts a wrong operator token on /readyz as on /metrics, though it still answers the public verdict: /readyz is no place to guess the token freely", async () => {
    const from = "127.0.0.28";
    for (let i = 0; i < 10; i++) {
      const r = await api(from, "GET", "/readyz", undefined, {
        authorization: `Bearer op-readyz-guess-${i}`,
      });
      expect([200, 503]).toContain(r.status);
      expect(Object.keys(r.json()).sort()).toEqual(["checks", "status"]);
    }
    const rows = (
      await auditRows(zt.ctx, "authn.operator-token", ["reason", "source_ip", "data"])
    ).filter((r) => r.source_ip === from);
    expect(rows.map((r) => [r.reason, JSON.parse(r.data).path])).toEqual(
      Array.from({ length: 10 }, () => ["operator-token-invalid", "/readyz"]),
    );
    expect(JSON.stringify(rows)).not.toContain("op-readyz-guess-");
    await untilBanned(from);
    expect((await bansOf(from)).map((b) => b.reason)).toEqual(["api-ip"]);
  });

  it("does not count what a signed-in user or a working device meets in normal use (policy denials, no credentials, a revoked session, a replayed report), so they are never locked out", async () => {
    const from = "127.0.0.24";
    const device = await enroll("alice", "laptop-24");
    const revoked = await newSession("alice");
    const s = await zt.services.sessions.check(revoked);
    if (!s.ok) throw new Error("session not live");
    await zt.services.sessions.revoke([s.session.id], "logout");
    const collected = zt.ctx.clock.now();
    expect((await report(from, device, key.privatePem, collected)).status).toBe(200);
    for (let i = 0; i < 12; i++) {
      expect((await sshSign(from, aliceToken, "staging")).status).toBe(403); // policy deny
      expect((await sshSign(from, undefined)).status).toBe(401); // no credentials
      expect((await sshSign(from, revoked)).status).toBe(401); // signed out
      expect((await report(from, device, key.privatePem, collected)).status).toBe(400); // replay
      expect((await bind(from, device, key.privatePem)).status).toBe(401); // no session token
      expect((await metrics(from)).status).toBe(401); // no operator token
      expect((await metrics(from, OPERATOR_TOKEN)).status).toBe(200); // the scraper
      expect([200, 503]).toContain((await api(from, "GET", "/readyz")).status); // a load balancer
    }
    // Rules run in order: once a later guesser is banned, all of the above was weighed.
    for (let i = 0; i < 10; i++) await join_("127.0.0.25", `ztjoin_sentinel${i}`);
    await untilBanned("127.0.0.25");
    expect(await bansOf(from)).toEqual([]);
    // A scrape without the token is audited as one without credentials; one with it is not.
    const scrapes = (
      await auditRows(zt.ctx, "authn.operator-token", ["reason", "source_ip", "decision_id"])
    ).filter((r) => r.source_ip === from);
    expect(scrapes.map((r) => r.reason)).toEqual(
      Array.from({ length: 12 }, () => "no-credentials"),
    );
    expect(scrapes.every((r) => r.decision_id?.startsWith("dec_"))).toBe(true);
    expect((await api(from, "GET", "/pki/bundle")).status).toBe(200);
    expect((await sshSign(from, aliceToken)).status).toBe(201);
  });

  it("stops the device routes from telling a caller without the device's key its status: one answer for approved, pending, revoked and unknown devices; the status only once the signature verifies; the audit record keeps the real state", async () => {
    const from = "127.0.0.31";
    const approved = await enroll("alice", "approved-31");
    const pending = await enroll("bob", "pending-31");
    const revoked = await enroll("alice", "revoked-31");
    await devices.revoke(revoked, "admin");
    const unknown = "dev_doesnotexist31";
    const all = { approved, pending, revoked, unknown };
    const answers = async (send: (id: string) => Promise<ClientResponse>) => {
      const out: Record<string, { status: number; body: string }> = {};
      for (const [state, id] of Object.entries(all)) {
        const r = await send(id);
        out[state] = { status: r.status, body: r.body };
      }
      return out;
    };
    const same = (a: Record<string, { status: number; body: string }>) => {
      expect(a["approved"]!.status).toBe(401);
      for (const state of ["pending", "revoked", "unknown"])
        expect(a[state], state).toEqual(a["approved"]);
    };
    same(await answers((id) => report(from, id, otherKey.privatePem)));
    same(await answers((id) => bind(from, id, otherKey.privatePem, aliceToken)));
    same(await answers((id) => bind(from, id, otherKey.privatePem)));
    // With the device's key, the state is the answer.
    const r = await report(from, revoked, key.privatePem);
    expect(r.status).toBe(409);
    expect(r.json<{ error: { code: string; message: string } }>().error).toMatchObject({
      code: "ZT_ACCESS_STATE",
      message: expect.stringContaining("revoked"),
    });
    const b = await bind(from, pending, key.privatePem, await newSession("bob"));
    expect(b.status).toBe(409);
    expect(b.json<{ error: { message: string } }>().error.message).toContain("pending");
    // Operators still see what happened.
    const rows = (await auditRows(zt.ctx, "device.report", ["reason", "source_ip", "data"]))
      .filter((x) => x.source_ip === from)
      .map((x) => [x.reason, JSON.parse(x.data)["device_status"] ?? null]);
    expect(rows).toEqual([
      ["device-signature-invalid", "approved"],
      ["device-signature-invalid", "pending"],
      ["device-signature-invalid", "revoked"],
      ["device-unknown", null],
      ["device-revoked", "revoked"],
    ]);
  });
});
