/**
 * The Policy Administrator without a triggering CLI: time-based conditions applied by
 * the periodic re-check (injected clock), a group removal and a policy change
 * re-deciding live WebSockets, and the risk signals (new network, failed attempts)
 * reaching policies — `zt up` in process, real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { login, request, signIn as signInWith } from "./helpers/http-client.js";
import { totpAt } from "./helpers/totp-code.js";
import { openWebSocket } from "./helpers/websocket-client.js";
import {
  startZtUpWithUpstream,
  USER_PASSWORD,
  type AddedUser,
  type ZtUpWithUpstream,
} from "./helpers/zt-up-in-process.js";

const POLICY = `
@id("eng-business-hours")
permit (principal in Group::"eng", action == Action::"GET", resource == App::"whoami")
when { context.local_hour >= 8 && context.local_hour < 18 };

@id("ops-any-time")
permit (principal in Group::"ops", action == Action::"GET", resource == App::"ops");

@id("risky")
@reason("risk-too-high")
forbid (principal, action, resource == App::"ops")
when { context.failed_attempts >= 2 };
`;

describe("periodic and event-driven re-evaluation", () => {
  let suite: ZtUpWithUpstream;
  let dir: string;
  let zt: RunningZt;
  let port: number;
  // 17:30 in the configured zone (UTC): inside business hours.
  const clock = new ManualClock(Date.UTC(2026, 2, 2, 17, 30, 0));
  let users: Record<string, AddedUser>;

  function signIn(name: string): Promise<{ cookie: string; sessionId: string }> {
    clock.advance(30_000); // a fresh TOTP step for every sign-in
    const code = totpAt(users[name]!.totpSecret, clock.now());
    return signInWith(port, "whoami.localhost", name, USER_PASSWORD, code);
  }

  const openWs = (host: string, cookie: string) => openWebSocket(port, host, cookie);

  const get = (host: string, cookie: string) =>
    request(port, { host, path: "/", headers: { cookie, accept: "application/json" } });

  beforeAll(async () => {
    suite = await startZtUpWithUpstream({
      dirPrefix: "zt-reeval-",
      yaml: (to) => `data_dir: ./data
routes:
  - { name: whoami, from: "http://whoami.localhost:8443", to: "${to}" }
  - { name: ops, from: "http://ops.localhost:8443", to: "${to}" }
policies: ./policies
session: { ttl: 24h, idle_timeout: 12h, recheck_interval: 1h }
network_labels: { office: ["10.0.0.0/8"], loopback: ["127.0.0.0/8"] }
`,
      policies: { "main.cedar": POLICY },
      users: [
        ["alice", ["eng"]],
        ["bob", ["eng", "ops"]],
        ["olga", ["ops"]],
      ],
      clock,
    });
    ({ zt, port, dir, users } = suite);
  }, 120_000);

  afterAll(async () => {
    await suite?.close();
  });

  it("closes a WebSocket when business hours end, at the next periodic re-check, without revoking the session", async () => {
    const s = await signIn("alice");
    const { closed, isOpen } = await openWs("whoami.localhost", s.cookie);
    // Still inside hours: the re-check keeps it.
    const kept = await zt.continuous.tick();
    expect(kept.closed).toBe(0);
    expect(isOpen()).toBe(true);
    clock.set(Date.UTC(2026, 2, 2, 18, 0, 0));
    const r = await zt.continuous.tick();
    expect(r.closed).toBeGreaterThanOrEqual(1);
    await closed;
    const after = await get("whoami.localhost", s.cookie);
    expect(after.status).toBe(403);
    expect((await zt.services.sessions.get(s.sessionId))?.revokedAt).toBeNull();
    clock.set(Date.UTC(2026, 2, 3, 9, 0, 0));
  });

  it("re-decides at once when the user is removed from a group, and revokes the session", async () => {
    const s = await signIn("bob");
    const { closed } = await openWs("ops.localhost", s.cookie);
    const other = await openWs("whoami.localhost", s.cookie);
    await zt.services.identity.removeFromGroup("bob", "ops");
    await closed;
    await other.closed; // the session is revoked, so every connection on it ends
    expect((await get("ops.localhost", s.cookie)).status).toBe(401);
  });

  it("re-decides live connections when the policy set changes", async () => {
    const s = await signIn("olga");
    const { closed } = await openWs("ops.localhost", s.cookie);
    writeFileSync(
      join(dir, "policies", "main.cedar"),
      POLICY.replace('permit (principal in Group::"ops"', 'permit (principal in Group::"nobody"'),
    );
    const report = zt.services.policies.reload();
    expect(report.ok).toBe(true);
    await closed;
    expect((await get("ops.localhost", s.cookie)).status).toBe(403);
    writeFileSync(join(dir, "policies", "main.cedar"), POLICY);
    expect(zt.services.policies.reload().ok).toBe(true);
  });

  it("feeds failed sign-in attempts and first-seen networks into the policy context", async () => {
    const s = await signIn("olga");
    expect((await get("ops.localhost", s.cookie)).status).toBe(200);
    for (let i = 0; i < 2; i++) {
      const bad = await login(port, "whoami.localhost", "olga", "wrong-password", "000000");
      expect(bad.status).toBe(401);
    }
    await zt.continuous.tick(); // refreshes risk signals from the store
    const denied = await get("ops.localhost", s.cookie);
    expect(denied.status).toBe(403);
    expect(denied.json<{ error: { reason: string } }>().error.reason).toBe("risk-too-high");
    const ctx = zt.continuous.risk.contribute({
      principal: { type: "User", id: "olga" },
      sessionId: "ses_new",
      sourceIp: "10.1.2.3",
    });
    expect(ctx).toMatchObject({ failed_attempts: 2, new_network: true });
    const seen = zt.continuous.risk.contribute({
      principal: { type: "User", id: "olga" },
      sessionId: "ses_new",
      sourceIp: "127.0.0.1",
    });
    expect(seen?.["new_network"]).toBeUndefined();
  });
});
