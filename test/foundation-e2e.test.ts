/**
 * End-to-end: the real `zt` CLI and `zt up` process, a real upstream, real sockets.
 * Login with password + TOTP, Cedar decisions, signed assertions verified against the
 * JWKS, denials with decision ids, TOTP replay refused, revocation across processes,
 * WebSocket cut on revocation.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { createRemoteJWKSet, jwtVerify } from "jose";
import * as OTPAuth from "otpauth";
import WebSocket from "ws";
import { login, request } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";

const POLICY = `
@id("eng-whoami")
@reason("eng-may-use-whoami")
permit (principal in Group::"eng", action in [Action::"GET", Action::"POST"], resource == App::"whoami")
when { context.mfa_age_seconds < 3600 };
`;

interface Enrolled {
  name: string;
  totp_secret: string;
  backup_codes: string[];
}

function totpAt(secret: string, offsetSteps = 0): string {
  const t = new OTPAuth.TOTP({
    secret: OTPAuth.Secret.fromBase32(secret),
    digits: 6,
    period: 30,
    algorithm: "SHA1",
  });
  return t.generate({ timestamp: Date.now() + offsetSteps * 30_000 });
}

describe("zt up end to end", () => {
  let dir: string;
  let config: string;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let zt: UpProcess;
  let port: number;
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
  const users: Record<string, Enrolled> = {};

  beforeAll(async () => {
    dir = tempDir();
    upstream = await startRecordingUpstream();
    config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: e2e.test
routes:
  - name: whoami
    from: http://whoami.localhost:8443
    to: http://127.0.0.1:${upstream.port}
policies: ./policies
mfa: { max_failures: 50 }   # this suite fails logins on purpose from one source IP
`,
      { "main.cedar": POLICY },
    );
    const init = await runZt(["--config", config, "init"], { env });
    expect(init.code, init.stderr).toBe(0);
    for (const [name, group] of [
      ["alice", "eng"],
      ["bob", "ops"],
      ["carol", "eng"],
    ] as const) {
      const r = await runZt(
        ["--config", config, "user", "add", name, "--group", group, "--password-stdin", "--json"],
        {
          env,
          input: `pw-${name}-correct-horse\n`,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      users[name] = JSON.parse(r.stdout) as Enrolled;
    }
    zt = await startZtUp(["--config", config, "up"], { env });
    port = Number(new URL(zt.pepUrl).port);
  });

  afterAll(async () => {
    await zt?.stop();
    await upstream?.close();
  });

  it("lets an allowed user through with an assertion the upstream verifies against the JWKS", async () => {
    const code = execFileSync("oathtool", ["--totp", "-b", users["alice"]!.totp_secret])
      .toString()
      .trim();
    const l = await login(port, "whoami.localhost", "alice", "pw-alice-correct-horse", code);
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    expect(l.cookie).toMatch(/^zt_session=/);
    const r = await request(port, {
      host: "whoami.localhost",
      path: "/hello/./world?x=1",
      headers: {
        cookie: `${l.cookie}; theme=dark`,
        "x-zt-user": "mallory",
        accept: "application/json",
      },
    });
    expect(r.status).toBe(200);
    const seen = upstream.seen.at(-1)!;
    expect(seen.url).toBe("/hello/world?x=1");
    expect(seen.headers["x-zt-user"]).toBeUndefined();
    expect(seen.headers.cookie).toBe("theme=dark");
    expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
    const jwks = createRemoteJWKSet(new URL(`${zt.pepUrl}/.well-known/zt/jwks.json`));
    const { payload } = await jwtVerify(String(seen.headers["x-zt-assertion"]), jwks, {
      audience: "whoami",
    });
    expect(payload.sub).toBe("alice");
    expect(payload["groups"]).toEqual(["eng"]);
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(60);
    expect(String(payload["decision_id"])).toMatch(/^dec_/);
  });

  it("denies a user outside the policy with 403, a decision id and a stable reason", async () => {
    const l = await login(
      port,
      "whoami.localhost",
      "bob",
      "pw-bob-correct-horse",
      totpAt(users["bob"]!.totp_secret),
    );
    expect(l.status).toBe(200);
    const r = await request(port, {
      host: "whoami.localhost",
      path: "/",
      headers: { cookie: l.cookie!, accept: "application/json" },
    });
    expect(r.status).toBe(403);
    const body = r.json<{ error: { code: string; decision_id: string; reason: string } }>();
    expect(body.error.code).toBe("ZT_POLICY_DENIED");
    expect(body.error.decision_id).toMatch(/^dec_/);
    expect(body.error.reason).toBe("no-matching-permit");
    // the same explanation in headers as forward-auth gives a front proxy
    expect(r.headers["x-zt-decision-id"]).toBe(body.error.decision_id);
    expect(r.headers["x-zt-reason"]).toBe("no-matching-permit");
    const html = await request(port, {
      host: "whoami.localhost",
      path: "/",
      headers: { cookie: l.cookie!, accept: "text/html" },
    });
    expect(html.status).toBe(403);
    expect(html.body).toContain(body.error.reason);
    expect(html.headers["x-zt-reason"]).toBe("no-matching-permit");
    expect(html.headers["x-zt-decision-id"]).toMatch(/^dec_/);
    expect(html.body).not.toContain("permit (");
  });

  it("refuses a replayed TOTP code", async () => {
    const code = totpAt(users["carol"]!.totp_secret);
    const first = await login(port, "whoami.localhost", "carol", "pw-carol-correct-horse", code);
    expect(first.status).toBe(200);
    const again = await login(port, "whoami.localhost", "carol", "pw-carol-correct-horse", code);
    expect(again.status).toBe(401);
    expect((again.body["error"] as { code: string }).code).toBe("ZT_MFA_REPLAYED");
  });

  it("refuses a wrong password and a wrong code without saying which user exists", async () => {
    const a = await login(port, "whoami.localhost", "nobody", "x", "123456");
    const b = await login(port, "whoami.localhost", "carol", "wrong-password", "123456");
    expect(a.status).toBe(401);
    expect(b.status).toBe(401);
    expect((a.body["error"] as { message: string }).message).toBe(
      (b.body["error"] as { message: string }).message,
    );
  });

  it("sends anonymous browsers to the login page and API clients a 401", async () => {
    const browser = await request(port, {
      host: "whoami.localhost",
      path: "/x",
      headers: { accept: "text/html" },
    });
    expect(browser.status).toBe(302);
    expect(browser.headers.location).toBe("/.zt/login?rd=%2Fx");
    const api = await request(port, { host: "whoami.localhost", path: "/x" });
    expect(api.status).toBe(401);
    const garbage = await request(port, {
      host: "whoami.localhost",
      path: "/x",
      headers: { cookie: "zt_session=%%%garbage\u00ff" },
    });
    expect(garbage.status).toBe(401);
    const page = await request(port, { host: "whoami.localhost", path: "/.zt/login" });
    expect(page.status).toBe(200);
    expect(page.body).toContain('name="totp"');
  });

  it("answers bad input with a stable code and never a stack trace", async () => {
    const unknown = await request(port, { host: "nope.localhost", path: "/" });
    expect(unknown.status).toBe(404);
    expect(unknown.json<{ error: { code: string } }>().error.code).toBe("ZT_ROUTE_NOT_FOUND");
    const wrongType = await request(port, {
      host: "whoami.localhost",
      path: "/.zt/login",
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "hi",
    });
    expect(wrongType.status).toBe(415);
    const badJson = await request(port, {
      host: "whoami.localhost",
      path: "/.zt/login",
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{",
    });
    expect(badJson.status).toBe(400);
    const traversal = await request(port, {
      host: "whoami.localhost",
      path: "/a/%2e%2e/%2e%2e/etc",
    });
    expect(traversal.status).toBe(400);
    const huge = await request(port, {
      host: "whoami.localhost",
      path: "/",
      headers: { "x-big": "a".repeat(40_000) },
    });
    expect(huge.status).toBe(431);
    for (const r of [unknown, wrongType, badJson, traversal, huge])
      expect(r.body).not.toMatch(/at .*\.js:\d+/);
  });

  it("revokes a session from another process (zt session revoke) and closes its WebSocket", async () => {
    const l = await login(
      port,
      "whoami.localhost",
      "alice",
      "pw-alice-correct-horse",
      totpAt(users["alice"]!.totp_secret, 1),
    );
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    const ok = await request(port, {
      host: "whoami.localhost",
      path: "/",
      headers: { cookie: l.cookie! },
    });
    expect(ok.status).toBe(200);

    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
      headers: { host: "whoami.localhost", cookie: l.cookie! },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
    const echoed = new Promise<string>((resolve) => ws.once("message", (m) => resolve(String(m))));
    ws.send("ping through zt");
    expect(await echoed).toBe("ping through zt");
    expect(upstream.seen.at(-1)!.headers["x-zt-assertion"]).toBeTruthy();

    const sessionId = String(l.body["session_id"]);
    const r = await runZt(["--config", config, "session", "revoke", sessionId], { env });
    expect(r.code, r.stderr).toBe(0);
    await closed;
    const after = await request(port, {
      host: "whoami.localhost",
      path: "/",
      headers: { cookie: l.cookie! },
    });
    expect(after.status).toBe(401);
    expect(after.json<{ error: { code: string } }>().error.code).toBe("ZT_SESSION_REVOKED");
  });

  it("records logins and decisions in the audit log", async () => {
    const r = await runZt(["--config", config, "audit", "tail", "--json", "-n", "200"], { env });
    expect(r.code, r.stderr).toBe(0);
    const text = r.stdout;
    expect(text).toContain('"decision"');
    expect(text).toContain("no-matching-permit");
    expect(text).toContain('"login"');
    expect(text).not.toContain("pw-alice-correct-horse");
  });

  it("counts decisions in Prometheus metrics on the API listener", async () => {
    const m = await fetch(`${zt.apiUrl}/metrics`);
    expect(m.status).toBe(200);
    const text = await m.text();
    expect(text).toMatch(/zt_decisions_total\{[^}]*route="whoami"[^}]*\} [1-9]/);
  });

  it("refuses a banned source before any other work, and serves it again once unbanned", async () => {
    const ban = await runZt(
      ["--config", config, "ban", "add", "127.0.0.1", "--for", "10m", "--reason", "e2e"],
      { env },
    );
    expect(ban.code, ban.stderr).toBe(0);
    let r = await request(port, { host: "whoami.localhost", path: "/" });
    for (let i = 0; i < 100 && r.status !== 403; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50)); // the ban travels as an event
      r = await request(port, { host: "whoami.localhost", path: "/" });
    }
    expect(r.status).toBe(403);
    expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_BANNED");
    const lift = await runZt(["--config", config, "ban", "remove", "127.0.0.1"], { env });
    expect(lift.code, lift.stderr).toBe(0);
    for (let i = 0; i < 100 && r.status === 403; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      r = await request(port, { host: "whoami.localhost", path: "/" });
    }
    expect(r.status).toBe(401);
  });

  it("serves /healthz and /readyz on the API listener", async () => {
    const h = await fetch(`${zt.apiUrl}/healthz`);
    expect(h.status).toBe(200);
    const ready = await fetch(`${zt.apiUrl}/readyz`);
    expect(ready.status).toBe(200);
  });
});
