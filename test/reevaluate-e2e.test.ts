/**
 * Continuous verification end to end: `zt up` in process (ManualClock), the real `zt`
 * CLI in other processes, a real upstream, real WebSockets through the PEP. Each cut —
 * user disabled, device posture failing a required check, grant expiry, session
 * revoked — closes the open WebSocket and denies the next HTTP request.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { auditRecords, auditRows } from "./helpers/audit-rows.js";
import { request, signIn as signInWith } from "./helpers/http-client.js";
import { totpAt } from "./helpers/totp-code.js";
import { openEchoingWebSocket } from "./helpers/websocket-client.js";
import { runZt } from "./helpers/zt-process.js";
import { startWebhookReceiver, type WebhookReceiver } from "./helpers/webhook-receiver.js";
import {
  LOOPBACK_LISTEN_ENV,
  startZtUpWithUpstream,
  USER_PASSWORD,
  type AddedUser,
  type ZtUpWithUpstream,
} from "./helpers/zt-up-in-process.js";

const POLICY = `
@id("eng-whoami")
permit (principal in Group::"eng", action == Action::"GET", resource == App::"whoami");

@id("eng-prod-managed")
@reason("managed-device")
permit (principal in Group::"eng", action == Action::"GET", resource == App::"prod")
when { context has device && context.device.compliant && context.device.score > 80 };

@id("db-admin-jit")
permit (principal, action == Action::"GET", resource == App::"db-admin")
when { context.grants.contains("db-admin") };

@id("breakglass")
permit (principal, action, resource)
when { context.breakglass };
`;

describe("continuous verification (live re-evaluation over real sockets)", () => {
  let suite: ZtUpWithUpstream;
  let dir: string;
  let config: string;
  let hook: WebhookReceiver<Record<string, unknown>>;
  let zt: RunningZt;
  let port: number;
  const clock = new ManualClock(Date.now());
  let users: Record<string, AddedUser>;
  const env = LOOPBACK_LISTEN_ENV;

  const cli = (args: string[], extraEnv: Record<string, string> = {}) =>
    runZt(["--config", config, ...args], { env: { ...env, ...extraEnv } });

  const signIn = (name: string) =>
    signInWith(
      port,
      "whoami.localhost",
      name,
      USER_PASSWORD,
      totpAt(users[name]!.totpSecret, clock.now()),
    );

  // Proves the tunnel live first: the upstream echoes.
  const openWs = (host: string, cookie: string) => openEchoingWebSocket(port, host, cookie);

  /** Waits (bounded) until the server has heard an event from another process. */
  async function until(what: string, check: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < 300; i++) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`timed out waiting for: ${what}`);
  }

  const get = (host: string, cookie: string) =>
    request(port, { host, path: "/", headers: { cookie, accept: "application/json" } });

  /** The `session.cut` records of one session: route, peer, reason, decision id and data. */
  const cutsOf = async (sessionId: string) =>
    (
      await auditRecords(zt.ctx, "session.cut", [
        "subject",
        "route",
        "source_ip",
        "reason",
        "decision_id",
      ])
    ).filter((r) => r.data["session_id"] === sessionId);

  /** The id of the `session.revoke` record that revoked `sessionId`. */
  const revokeRecordOf = async (sessionId: string) => {
    const rows = await auditRows(zt.ctx, "session.revoke", ["id", "reason", "data"]);
    const hit = rows.filter((r) => String(r.data).includes(sessionId));
    expect(hit).toHaveLength(1);
    return hit[0]!;
  };

  beforeAll(async () => {
    hook = await startWebhookReceiver();
    suite = await startZtUpWithUpstream({
      yaml: (to) => `data_dir: ./data
trust_domain: cv.test
routes:
  - { name: whoami, from: "http://whoami.localhost:8443", to: "${to}" }
  - { name: prod, from: "http://prod.localhost:8443", to: "${to}" }
  - { name: db-admin, from: "http://db.localhost:8443", to: "${to}" }
policies: ./policies
session: { ttl: 24h, idle_timeout: 12h, recheck_interval: 1h }
devices:
  auto_approve_groups: [eng]
  required: [disk_encryption, firewall]
  report_interval: 24h
access:
  resources:
    db-admin: { approvers: dba-leads, approvals: 1, max_ttl: 4h }
  breakglass: { accounts: [oncall], resources: [db-admin], ttl: 30m }
notifications: { webhook: "${hook.url}" }
`,
      policies: { "main.cedar": POLICY },
      users: [
        ["alice", ["eng"]],
        ["bob", ["eng"]],
        ["carol", ["eng"]],
        ["dave", ["eng"]],
        ["erin", ["dba-leads"]],
        ["oncall", ["sre"]],
      ],
      clock,
    });
    ({ zt, port, dir, config, users } = suite);
  }, 120_000);

  afterAll(async () => {
    await suite?.close();
    await hook?.close();
  });

  it("(a) zt user disable closes the WebSocket and denies the next request", async () => {
    const s = await signIn("alice");
    const { closed } = await openWs("whoami.localhost", s.cookie);
    expect((await get("whoami.localhost", s.cookie)).status).toBe(200);
    const r = await cli(["user", "disable", "alice"]);
    expect(r.code, r.stderr).toBe(0);
    await closed;
    const after = await get("whoami.localhost", s.cookie);
    expect(after.status).toBe(401);
    // The cut is on the audit log, once, linked to the revocation the disable made.
    const revoke = await revokeRecordOf(s.sessionId);
    expect(revoke.reason).toBe("user-disabled");
    expect(await cutsOf(s.sessionId)).toEqual([
      expect.objectContaining({
        subject: "alice",
        route: "whoami",
        reason: "session-revoked",
        data: expect.objectContaining({
          cause: "session-revoked",
          revoke_reason: "user-disabled",
          revoke_id: revoke.id,
        }),
      }),
    ]);
  });

  it("(b) a signed posture report failing a required check cuts the device's session", async () => {
    const keyDir = join(dir, "bob-device");
    const enrol = await cli([
      "device",
      "enroll",
      "--as",
      "bob",
      "--name",
      "bob-laptop",
      "--key-dir",
      keyDir,
      "--json",
    ]);
    expect(enrol.code, enrol.stderr).toBe(0);
    const device = JSON.parse(enrol.stdout) as { id: string; status: string };
    expect(device.status).toBe("approved"); // bob is in eng: auto-approved
    const good = join(dir, "good.json");
    const bad = join(dir, "bad.json");
    writeFileSync(
      good,
      JSON.stringify({
        os: "Debian GNU/Linux 12",
        checks: {
          os_updates: true,
          disk_encryption: true,
          firewall: true,
          screen_lock: true,
          antivirus: true,
        },
      }),
    );
    writeFileSync(
      bad,
      JSON.stringify({
        os: "Debian GNU/Linux 12",
        checks: {
          os_updates: true,
          disk_encryption: true,
          firewall: false,
          screen_lock: true,
          antivirus: true,
        },
      }),
    );
    const rep = await cli(["device", "report", "--key-dir", keyDir, "--facts", good, "--json"]);
    expect(rep.code, rep.stderr).toBe(0);
    expect(JSON.parse(rep.stdout)).toMatchObject({ compliant: true, score: 100 });

    const s = await signIn("bob");
    // Not yet bound to a device: production is refused.
    expect((await get("prod.localhost", s.cookie)).status).toBe(403);
    // The session id alone binds nothing: the bind must carry the session's own token.
    const idOnly = await cli(["device", "bind", "--session", s.sessionId, "--key-dir", keyDir], {
      ZT_SESSION_TOKEN: "",
    });
    expect(idOnly.code).not.toBe(0);
    expect(idOnly.stderr).toContain("ZT_USAGE");
    const token = s.cookie.slice(s.cookie.indexOf("=") + 1);
    const bind = await cli(["device", "bind", "--session", s.sessionId, "--key-dir", keyDir], {
      ZT_SESSION_TOKEN: token,
    });
    expect(bind.code, bind.stderr).toBe(0);
    // The same over the API, the token read from a 0600 file.
    const tokenFile = join(dir, "bob-session-token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const api = `http://127.0.0.1:${zt.apiAddress.port}`;
    const viaApi = await cli(
      [
        "device",
        "bind",
        "--server",
        api,
        "--session-token-file",
        tokenFile,
        "--key-dir",
        keyDir,
        "--json",
      ],
      { ZT_SESSION_TOKEN: "" },
    );
    expect(viaApi.code, viaApi.stderr).toBe(0);
    expect(JSON.parse(viaApi.stdout)).toEqual({
      bound: true,
      session_id: s.sessionId,
      device_id: device.id,
    });
    await until(
      "device binding heard",
      async () => (await get("prod.localhost", s.cookie)).status === 200,
    );
    const { closed } = await openWs("prod.localhost", s.cookie);

    const fail = await cli(["device", "report", "--key-dir", keyDir, "--facts", bad, "--json"]);
    expect(fail.code).toBe(3);
    expect(JSON.parse(fail.stdout)).toMatchObject({
      compliant: false,
      failures: ["required-check-failed:firewall"],
    });
    await closed;
    const after = await get("prod.localhost", s.cookie);
    expect(after.status).toBe(401);
    expect(after.json<{ error: { code: string } }>().error.code).toBe("ZT_SESSION_REVOKED");
    // One cut record (the re-check's, naming its deny decision), not another for the
    // session's revocation that followed it.
    const cuts = await cutsOf(s.sessionId);
    expect(cuts).toEqual([
      expect.objectContaining({
        route: "prod",
        decision_id: expect.stringMatching(/^dec_/),
        data: expect.objectContaining({ cause: "device" }),
      }),
    ]);
    const denied = await auditRows(zt.ctx, "decision", ["decision_id", "outcome"]);
    expect(denied.filter((d) => d.decision_id === cuts[0]!.decision_id)).toEqual([
      { decision_id: cuts[0]!.decision_id, outcome: "deny" },
    ]);
  });

  it("refuses a posture report not signed by the device key", async () => {
    const keyDir = join(dir, "dave-device");
    const enrol = await cli(["device", "enroll", "--as", "dave", "--key-dir", keyDir, "--json"]);
    expect(enrol.code, enrol.stderr).toBe(0);
    const id = (JSON.parse(enrol.stdout) as { id: string }).id;
    const payload = JSON.stringify({
      v: 1,
      device_id: id,
      collected_at: Date.now(),
      os: "x",
      checks: { disk_encryption: true, firewall: true },
    });
    const res = await fetch(`http://127.0.0.1:${zt.apiAddress.port}/v1/devices/${id}/reports`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ payload, signature: Buffer.alloc(64).toString("base64") }),
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
      "ZT_DEVICE_SIGNATURE",
    );
  });

  it("(d) zt session revoke closes the WebSocket and denies the next request; the cut is audited once, naming the route, peer and connection, linked to the session.revoke record", async () => {
    const s = await signIn("dave");
    const ws = await openWs("whoami.localhost", s.cookie);
    const r = await cli(["session", "revoke", s.sessionId]);
    expect(r.code, r.stderr).toBe(0);
    await ws.closed;
    expect((await get("whoami.localhost", s.cookie)).status).toBe(401);
    const revoke = await revokeRecordOf(s.sessionId);
    const cuts = await cutsOf(s.sessionId);
    expect(cuts).toEqual([
      {
        subject: "dave",
        route: "whoami",
        source_ip: "127.0.0.1",
        reason: "session-revoked",
        decision_id: null,
        data: expect.objectContaining({
          session_id: s.sessionId,
          cause: "session-revoked",
          revoke_reason: revoke.reason,
          revoke_id: revoke.id,
        }),
      },
    ]);
    // The connection: the allow decision that opened it (its own audit record).
    const opened = String(cuts[0]!.data["connection_id"]);
    const decision = await auditRows(zt.ctx, "decision", ["decision_id", "route", "outcome"]);
    expect(decision.filter((d) => d.decision_id === opened)).toEqual([
      { decision_id: opened, route: "whoami", outcome: "allow" },
    ]);
  });

  it("break-glass is refused to other accounts and raises a critical alert (webhook + audit) for designated ones", async () => {
    const refused = await cli([
      "breakglass",
      "--as",
      "erin",
      "--resource",
      'App::"db-admin"',
      "--reason",
      "db down",
    ]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("ZT_ACCESS_NOT_APPROVER");

    const s = await signIn("oncall");
    expect((await get("db.localhost", s.cookie)).status).toBe(403);
    const r = await cli([
      "breakglass",
      "--as",
      "oncall",
      "--resource",
      'App::"db-admin"',
      "--reason",
      "primary db down, INC-7",
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const alert = await hook.waitFor((b) => b["event"] === "breakglass.opened");
    expect(alert["severity"]).toBe("critical");
    expect(String(alert["summary"])).toContain("oncall");
    await until(
      "break-glass heard",
      async () => (await get("db.localhost", s.cookie)).status === 200,
    );
    // Not renewable while active.
    const again = await cli([
      "breakglass",
      "--as",
      "oncall",
      "--resource",
      "db-admin",
      "--reason",
      "again",
    ]);
    expect(again.stderr).toContain("ZT_ACCESS_STATE");
    // Only the named resource opens.
    expect((await get("prod.localhost", s.cookie)).status).toBe(403);
    const audit = await cli(["audit", "tail", "--json", "-n", "500"]);
    expect(audit.stdout).toContain("breakglass.opened");
  });
  // Last: it moves the shared clock forward.
  it("(c) an approved grant opens db-admin; its expiry (injected clock) closes the WebSocket and denies", async () => {
    const s = await signIn("carol");
    expect((await get("db.localhost", s.cookie)).status).toBe(403);
    const req = await cli([
      "access",
      "request",
      "--as",
      "carol",
      "--resource",
      'App::"db-admin"',
      "--reason",
      "migrate schema INC-42",
      "--ttl",
      "1h",
      "--json",
    ]);
    expect(req.code, req.stderr).toBe(0);
    const id = (JSON.parse(req.stdout) as { id: string }).id;

    // No self-approval; no approval by someone outside the approver group.
    const self = await cli(["access", "approve", id, "--as", "carol"]);
    expect(self.code).not.toBe(0);
    expect(self.stderr).toContain("ZT_ACCESS_SELF_APPROVAL");
    const outsider = await cli(["access", "approve", id, "--as", "dave"]);
    expect(outsider.stderr).toContain("ZT_ACCESS_NOT_APPROVER");
    expect((await get("db.localhost", s.cookie)).status).toBe(403);

    const ok = await cli(["access", "approve", id, "--as", "erin", "--json"]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ status: "approved" });
    await hook.waitFor((b) => b["event"] === "access.approved");
    await until("grant heard", async () => (await get("db.localhost", s.cookie)).status === 200);
    const { closed } = await openWs("db.localhost", s.cookie);

    clock.advance(90 * 60_000);
    await zt.continuous.tick();
    await closed;
    const after = await get("db.localhost", s.cookie);
    expect(after.status).toBe(403);
    expect(after.json<{ error: { reason: string } }>().error.reason).toBe("no-matching-permit");
    // The session itself lives on (the grant ended, not the user's trust).
    expect((await get("whoami.localhost", s.cookie)).status).toBe(200);
    const list = await cli(["access", "list", "--user", "carol", "--json"]);
    expect((JSON.parse(list.stdout) as { status: string }[])[0]!.status).toBe("expired");
  });
});
