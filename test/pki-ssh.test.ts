import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync, chmodSync } from "node:fs";
import https from "node:https";
import type { FastifyInstance } from "fastify";
import { join } from "node:path";
import { pkiServerTlsOptions, type PkiService } from "../src/pki/index.js";
import { openPkiSuite, type PkiSuite } from "./helpers/pki-suite.js";
import { createApiServer } from "../src/api/index.js";
import { SessionService } from "../src/session/index.js";
import { runZt } from "./helpers/zt-process.js";
import { SSH_LOGIN, startSshd, type Sshd } from "./helpers/sshd.js";

const LOGIN = SSH_LOGIN;

let env: PkiSuite["env"];
let svc: PkiService;
let dir: string;
let sshd: Sshd;

const POLICIES = `
@id("ops-ssh-prod")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"prod")
when { ["${LOGIN}", "deploy"].containsAll(context.logins) };

@id("ci-deployer-ssh-prod")
permit (
  principal == Service::"spiffe://example.test/ci/deployer",
  action == Action::"ssh:sign",
  resource == HostGroup::"prod"
) when { ["${LOGIN}"].containsAll(context.logins) };
`;

/** zt's schema, with workloads (mTLS SVIDs on the API) allowed to ask for ssh:sign. */
function keypair(name: string): { key: string; pub: string } {
  const key = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@test`, "-f", key]);
  return { key, pub: readFileSync(`${key}.pub`, "utf8") };
}

/** The real ssh client against the test's sshd. */
const sshLogin = (key: string, cert: string, user = LOGIN) => sshd.login(key, cert, user);

async function signAndWrite(
  name: string,
  opts: Partial<Parameters<PkiService["ssh"]["signUser"]>[0]> = {},
): Promise<{ key: string; cert: string; serial: string; pub: string }> {
  const kp = keypair(name);
  const signed = await svc.ssh.signUser({
    publicKey: kp.pub,
    user: "alice",
    hostGroup: "prod",
    principals: [LOGIN],
    actor: "test",
    ...opts,
  });
  const cert = `${kp.key}-cert.pub`;
  writeFileSync(cert, signed.certLine);
  return { key: kp.key, cert, serial: signed.serial, pub: kp.pub };
}

const writeKrl = () => sshd.writeKrl();

let cleanup: (() => Promise<void>) | undefined;
beforeAll(async () => {
  // zt users: alice in ops, bob not.
  ({ dir, env, svc, cleanup } = await openPkiSuite("zt-sshd-", POLICIES, [
    { id: "u_alice", name: "alice", groups: ["ops"] },
    { id: "u_bob", name: "bob" },
  ]));
  chmodSync(dir, 0o755);
  // sshd with its own host key, certified by zt's host CA, trusting zt's user CA.
  sshd = await startSshd(dir, svc.ssh);
}, 120_000);

afterAll(async () => {
  sshd?.stop();
  await cleanup?.();
});

describe("SSH CA checked by a real sshd and ssh", () => {
  it("accepts a zt-signed certificate for the right principal; the host certificate verifies via @cert-authority", async () => {
    const c = await signAndWrite("ok");
    const r = await sshLogin(c.key, c.cert);
    expect(r.status, `${r.out}\n${sshd.log()}`).toBe(0);
  });

  it("ssh-keygen -L shows the fields as issued", async () => {
    const c = await signAndWrite("fields", {
      principals: [LOGIN, "deploy"],
      sourceAddresses: ["127.0.0.1/32", "10.0.0.0/8"],
      forceCommand: "/bin/true",
      withoutExtensions: ["permit-pty"],
      ttlMs: 2 * 3_600_000,
    });
    const out = execFileSync("ssh-keygen", ["-L", "-f", c.cert], { encoding: "utf8" });
    expect(out).toContain("Type: ssh-ed25519-cert-v01@openssh.com user certificate");
    expect(out).toMatch(/Signing CA: ED25519 SHA256:\S+ \(using ssh-ed25519\)/);
    expect(out).toMatch(new RegExp(`Key ID: "zt:user=alice decision=dec_\\S+ serial=${c.serial}"`));
    expect(out).toContain(`Serial: ${c.serial}`);
    expect(out).toMatch(/Valid: from \d{4}-\d\d-\d\dT[\d:]+ to \d{4}-\d\d-\d\dT[\d:]+/);
    expect(out).toMatch(new RegExp(`Principals: \\n\\s+${LOGIN}\\n\\s+deploy\\n`));
    expect(out).toMatch(
      /Critical Options: \n\s+force-command \/bin\/true\n\s+source-address 127.0.0.1\/32,10.0.0.0\/8\n/,
    );
    expect(out).toMatch(
      /Extensions: \n\s+permit-X11-forwarding\n\s+permit-agent-forwarding\n\s+permit-port-forwarding\n\s+permit-user-rc\n/,
    );
    expect(out).not.toContain("permit-pty");
    const m = /Valid: from (\S+) to (\S+)/.exec(out)!;
    const span = Date.parse(`${m[2]}Z`) - Date.parse(`${m[1]}Z`);
    expect(span).toBe(2 * 3_600_000 + 60_000);
    // force-command /bin/true runs instead of anything asked for.
    expect((await sshLogin(c.key, c.cert)).status).toBe(0);
  });

  it("refuses a certificate for the wrong principal", async () => {
    const c = await signAndWrite("wrongprincipal", { principals: ["deploy"] });
    const r = await sshLogin(c.key, c.cert);
    expect(r.status).toBe(255);
    expect(r.out).toContain("Permission denied");
  });

  it("refuses an expired certificate and a not-yet-valid one (clock injected into the CA)", async () => {
    const t = env.clock.now();
    env.clock.set(t - 3 * 3_600_000);
    const expired = await signAndWrite("expired", { ttlMs: 3_600_000 });
    env.clock.set(t + 3_600_000);
    const future = await signAndWrite("future", { ttlMs: 3_600_000 });
    env.clock.set(t);
    const mark = sshd.log().length;
    expect((await sshLogin(expired.key, expired.cert)).status).toBe(255);
    expect(sshd.log().slice(mark)).toMatch(/expired|not yet valid|outside validity/i);
    const mark2 = sshd.log().length;
    expect((await sshLogin(future.key, future.cert)).status).toBe(255);
    expect(sshd.log().slice(mark2)).toMatch(/expired|not yet valid|outside validity/i);
  });

  it("honours source-address: refused from the wrong address, accepted from the right one", async () => {
    const wrong = await signAndWrite("wrongsrc", { sourceAddresses: ["10.9.9.9/32"] });
    expect((await sshLogin(wrong.key, wrong.cert)).status).toBe(255);
    const right = await signAndWrite("rightsrc", { sourceAddresses: ["127.0.0.0/8"] });
    expect((await sshLogin(right.key, right.cert)).status).toBe(0);
  });

  it("refuses a certificate revoked by serial, and one whose key is revoked, via RevokedKeys (zt's KRL)", async () => {
    const bySerial = await signAndWrite("revserial");
    const byKey = await signAndWrite("revkey");
    const kept = await signAndWrite("kept");
    expect((await sshLogin(bySerial.key, bySerial.cert)).status).toBe(0);
    await svc.ssh.revoke({ serial: bySerial.serial, actor: "test" });
    await svc.ssh.revoke({ publicKey: byKey.pub, actor: "test" });
    await writeKrl();
    expect((await sshLogin(bySerial.key, bySerial.cert)).status).toBe(255);
    expect((await sshLogin(byKey.key, byKey.cert)).status).toBe(255);
    expect((await sshLogin(kept.key, kept.cert)).status).toBe(0);
    // ssh-keygen reads the same KRL.
    const q = spawnSync(
      "ssh-keygen",
      ["-Q", "-f", join(dir, "revoked.krl"), bySerial.cert, kept.cert],
      { encoding: "utf8" },
    );
    expect(q.stdout).toMatch(/revserial-cert\.pub \(revserial@test\): REVOKED/);
    expect(q.stdout).toMatch(/kept-cert\.pub \(kept@test\): ok/);
  });

  it("signing is a policy decision: users outside the policy or asking for other logins are denied and audited", async () => {
    const kp = keypair("denied");
    await expect(
      svc.ssh.signUser({
        publicKey: kp.pub,
        user: "bob",
        hostGroup: "prod",
        principals: [LOGIN],
        actor: "test",
      }),
    ).rejects.toMatchObject({ code: "ZT_POLICY_DENIED" });
    await expect(
      svc.ssh.signUser({
        publicKey: kp.pub,
        user: "alice",
        hostGroup: "prod",
        principals: ["root"],
        actor: "test",
      }),
    ).rejects.toMatchObject({ code: "ZT_POLICY_DENIED" });
    await expect(
      svc.ssh.signUser({
        publicKey: kp.pub,
        user: "alice",
        hostGroup: "staging",
        principals: [LOGIN],
        actor: "test",
      }),
    ).rejects.toMatchObject({ code: "ZT_POLICY_DENIED" });
    await expect(
      svc.ssh.signUser({
        publicKey: kp.pub,
        user: "mallory",
        hostGroup: "prod",
        principals: [LOGIN],
        actor: "test",
      }),
    ).rejects.toMatchObject({ code: "ZT_USER_NOT_FOUND" });
    await env.ctx.audit.flush();
    const rows = await env.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", "ssh.sign")
      .where("outcome", "=", "deny")
      .execute();
    expect(rows.length).toBeGreaterThanOrEqual(3);
    expect(rows.every((r) => r.decision_id?.startsWith("dec_"))).toBe(true);
  });

  it("refuses bad input: not-a-key, private keys, certificates as keys, bad principals, TTL over 24h", async () => {
    const kp = keypair("bad");
    const priv = readFileSync(kp.key, "utf8");
    const certLine = readFileSync((await signAndWrite("asinput")).cert, "utf8");
    const base = { user: "alice", hostGroup: "prod", principals: [LOGIN], actor: "test" };
    const cases: [Record<string, unknown>, string][] = [
      [{ publicKey: "hello world" }, "ZT_PKI_KEY_INVALID"],
      [{ publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==" }, "ZT_PKI_KEY_INVALID"],
      [{ publicKey: kp.pub.replace("ssh-ed25519", "ssh-rsa") }, "ZT_PKI_KEY_INVALID"],
      [{ publicKey: priv }, "ZT_PKI_KEY_INVALID"],
      [{ publicKey: certLine }, "ZT_PKI_KEY_INVALID"],
      [{ publicKey: "ssh-ed25519 " + "A".repeat(10_000) }, "ZT_PKI_KEY_INVALID"],
      [{ publicKey: kp.pub, principals: [] }, "ZT_BAD_REQUEST"],
      [{ publicKey: kp.pub, principals: ["a,b"] }, "ZT_BAD_REQUEST"],
      [{ publicKey: kp.pub, sourceAddresses: ["nope"] }, "ZT_BAD_REQUEST"],
      [{ publicKey: kp.pub, ttlMs: 25 * 3_600_000 }, "ZT_PKI_TTL_INVALID"],
    ];
    for (const [over, code] of cases) {
      await expect(
        svc.ssh.signUser({ ...base, ...over } as unknown as Parameters<
          PkiService["ssh"]["signUser"]
        >[0]),
        JSON.stringify(over).slice(0, 60),
      ).rejects.toMatchObject({ code });
    }
  });
});

describe("POST /api/v1/ssh/sign over a real socket, certificate checked by the real sshd", () => {
  let api: FastifyInstance;
  let apiPort: number;
  let bundle: string;
  let aliceToken: string;
  let bobToken: string;

  type Answer = { status: number; body: Record<string, unknown> };

  /** POSTs to the API over TLS (server verified against zt's bundle), as a session or an SVID. */
  function apiSign(
    body: unknown,
    auth: { bearer?: string; cookie?: string; client?: { key: string; cert: string } } = {},
  ): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (auth.bearer) headers["authorization"] = `Bearer ${auth.bearer}`;
      if (auth.cookie) headers["cookie"] = auth.cookie;
      const req = https.request(
        {
          host: "127.0.0.1",
          port: apiPort,
          path: "/api/v1/ssh/sign",
          method: "POST",
          servername: "localhost",
          ca: bundle,
          agent: false,
          headers,
          ...(auth.client ?? {}),
        },
        (res) => {
          let data = "";
          res.setEncoding("utf8");
          res.on("data", (d) => (data += d));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(data || "{}") as never }),
          );
        },
      );
      req.on("error", reject);
      req.end(typeof body === "string" ? body : JSON.stringify(body));
    });
  }

  function errorOf(a: Answer): { code: string; reason?: string; decision_id?: string } {
    return a.body["error"] as { code: string; reason?: string; decision_id?: string };
  }

  async function auditFor(decisionId: string) {
    await env.ctx.audit.flush();
    return env.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("decision_id", "=", decisionId)
      .execute();
  }

  beforeAll(async () => {
    const tls = await pkiServerTlsOptions(env.ctx, { hostnames: ["localhost"] });
    api = await createApiServer(env.ctx, { tls: { ...tls, clientCerts: "optional" } });
    await api.listen({ host: "127.0.0.1", port: 0 });
    apiPort = (api.server.address() as { port: number }).port;
    bundle = svc.bundlePem();
    // Sessions as a login would create them (the PEP's login flow is tested elsewhere).
    const sessions = new SessionService(env.ctx);
    const common = { sourceIp: "127.0.0.1", userAgent: "test" };
    aliceToken = (await sessions.create({ userId: "u_alice", ...common })).token;
    bobToken = (await sessions.create({ userId: "u_bob", ...common })).token;
    sessions.close();
  });

  afterAll(async () => {
    await api?.close();
  });

  it("signs for a session user the policy allows; sshd accepts the returned certificate", async () => {
    const kp = keypair("api-alice");
    const r = await apiSign(
      { public_key: kp.pub, principals: [LOGIN], host_group: "prod", ttl: "1h" },
      { bearer: aliceToken },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const decisionId = String(r.body["decision_id"]);
    expect(decisionId).toMatch(/^dec_/);
    const cert = `${kp.key}-cert.pub`;
    writeFileSync(cert, String(r.body["certificate"]));
    const l = execFileSync("ssh-keygen", ["-L", "-f", cert], { encoding: "utf8" });
    expect(l).toContain(
      `Key ID: "zt:user=alice decision=${decisionId} serial=${r.body["serial"]}"`,
    );
    const m = /Valid: from (\S+) to (\S+)/.exec(l)!;
    expect(Date.parse(`${m[2]}Z`) - Date.parse(`${m[1]}Z`)).toBe(3_600_000 + 60_000);
    const login = await sshLogin(kp.key, cert);
    expect(login.status, `${login.out}\n${sshd.log()}`).toBe(0);
    const rows = await auditFor(decisionId);
    expect(rows.map((x) => [x.kind, x.outcome, x.subject])).toEqual([
      ["ssh.sign", "success", "alice"],
    ]);
  });

  it("accepts the session cookie too, and applies the options (no-pty, source-address)", async () => {
    const kp = keypair("api-cookie");
    const r = await apiSign(
      {
        public_key: kp.pub,
        principals: [LOGIN],
        host_group: "prod",
        source_addresses: ["10.9.9.9/32"],
        without_extensions: ["permit-pty"],
      },
      { cookie: `other=1; ${env.ctx.config.session.cookie_name}=${aliceToken}` },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const cert = `${kp.key}-cert.pub`;
    writeFileSync(cert, String(r.body["certificate"]));
    const l = execFileSync("ssh-keygen", ["-L", "-f", cert], { encoding: "utf8" });
    expect(l).toContain("source-address 10.9.9.9/32");
    expect(l).not.toContain("permit-pty");
    // sshd enforces the source address it was signed with.
    expect((await sshLogin(kp.key, cert)).status).toBe(255);
  });

  it("refuses two session cookies (cookie tossing): 400 ZT_REQUEST_AMBIGUOUS, audited; nothing signed", async () => {
    // A sibling app of the site plants its own zt session cookie with a longer Path, so
    // the browser sends it first: the API must not take the first one as the caller.
    const kp = keypair("api-tossed");
    const name = env.ctx.config.session.cookie_name;
    const body = { public_key: kp.pub, principals: [LOGIN], host_group: "prod" };
    for (const cookie of [
      `${name}=${aliceToken}; ${name}=${bobToken}`,
      `${name}=${aliceToken}; other=1; ${name}=${aliceToken}`,
    ]) {
      const r = await apiSign(body, { cookie });
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(errorOf(r).code).toBe("ZT_REQUEST_AMBIGUOUS");
      expect(errorOf(r).reason).toBe("session-cookie-duplicate");
      expect(r.body["certificate"]).toBeUndefined();
    }
    await env.ctx.audit.flush();
    const rows = await env.ctx.store.db
      .selectFrom("audit_events")
      .select(["outcome"])
      .where("kind", "=", "ssh.sign")
      .where("reason", "=", "session-cookie-duplicate")
      .execute();
    expect(rows.map((x) => x.outcome)).toEqual(["deny", "deny"]);
  });

  it("denies by policy: 403 with the decision id and reason, audited under that id", async () => {
    const kp = keypair("api-bob");
    const r = await apiSign(
      { public_key: kp.pub, principals: [LOGIN], host_group: "prod" },
      { bearer: bobToken },
    );
    expect(r.status).toBe(403);
    const err = errorOf(r);
    expect(err.code).toBe("ZT_POLICY_DENIED");
    expect(err.reason).toBe("no-matching-permit");
    expect(err.decision_id).toMatch(/^dec_/);
    expect(r.body["certificate"]).toBeUndefined();
    const rows = await auditFor(err.decision_id!);
    expect(rows.map((x) => [x.kind, x.outcome, x.subject])).toEqual([["ssh.sign", "deny", "bob"]]);
    // alice asking for a login the policy does not give her: denied the same way.
    const root = await apiSign(
      { public_key: kp.pub, principals: ["root"], host_group: "prod" },
      { bearer: aliceToken },
    );
    expect(root.status).toBe(403);
    expect(errorOf(root).code).toBe("ZT_POLICY_DENIED");
  });

  it("no credentials or a bad session: 401 with a stable code, audited; nothing signed", async () => {
    const kp = keypair("api-anon");
    const body = { public_key: kp.pub, principals: [LOGIN], host_group: "prod" };
    const none = await apiSign(body);
    expect(none.status).toBe(401);
    expect(errorOf(none).code).toBe("ZT_AUTH_REQUIRED");
    const bad = await apiSign(body, { bearer: "A".repeat(43) });
    expect(bad.status).toBe(401);
    expect(errorOf(bad).code).toBe("ZT_SESSION_INVALID");
    await env.ctx.audit.flush();
    const rows = await env.ctx.store.db
      .selectFrom("audit_events")
      .select(["reason"])
      .where("kind", "=", "ssh.sign")
      .where("outcome", "=", "deny")
      .where("reason", "in", ["no-credentials", "session-invalid"])
      .execute();
    expect(rows.map((x) => x.reason).sort()).toEqual(["no-credentials", "session-invalid"]);
  });

  it("bad input: 400 with the ZT_* code naming the problem, audited", async () => {
    const kp = keypair("api-bad");
    const priv = readFileSync(kp.key, "utf8");
    const base = { public_key: kp.pub, principals: [LOGIN], host_group: "prod" };
    const cases: [unknown, string][] = [
      [{ ...base, public_key: "hello world" }, "ZT_PKI_KEY_INVALID"],
      [{ ...base, public_key: priv }, "ZT_PKI_KEY_INVALID"],
      [{ ...base, public_key: kp.pub.replace("ssh-ed25519", "ssh-rsa") }, "ZT_PKI_KEY_INVALID"],
      [{ ...base, principals: [] }, "ZT_BAD_REQUEST"],
      [{ ...base, principals: ["a,b"] }, "ZT_BAD_REQUEST"],
      [{ ...base, ttl: "25h" }, "ZT_PKI_TTL_INVALID"],
      [{ ...base, ttl: "soon" }, "ZT_PKI_TTL_INVALID"],
      [{ ...base, ttl: 0 }, "ZT_PKI_TTL_INVALID"],
      [{ ...base, source_addresses: ["nope"] }, "ZT_BAD_REQUEST"],
      [{ ...base, without_extensions: ["permit-root"] }, "ZT_BAD_REQUEST"],
      [{ ...base, host_group: "prod/../x" }, "ZT_BAD_REQUEST"],
      [{ ...base, extra: 1 }, "ZT_BAD_REQUEST"],
      [{ principals: [LOGIN] }, "ZT_BAD_REQUEST"],
      ["{not json", "ZT_BAD_REQUEST"],
    ];
    for (const [body, code] of cases) {
      const r = await apiSign(body, { bearer: aliceToken });
      const what = JSON.stringify(body).slice(0, 80);
      expect(r.status, what).toBe(400);
      expect(errorOf(r).code, what).toBe(code);
      expect(JSON.stringify(r.body), what).not.toMatch(/\n\s+at /);
    }
    await env.ctx.audit.flush();
    const failures = await env.ctx.store.db
      .selectFrom("audit_events")
      .select(["id"])
      .where("kind", "=", "ssh.sign")
      .where("outcome", "=", "failure")
      .where("subject", "=", "alice")
      .execute();
    // Every case but the unparsable body reached the route and was audited.
    expect(failures.length).toBeGreaterThanOrEqual(cases.length - 1);
  });

  it("zt ssh sign --server: the real CLI asks the API as the session in ZT_SESSION_TOKEN", async () => {
    const kp = keypair("api-cli");
    const bundleFile = join(dir, "bundle.pem");
    writeFileSync(bundleFile, bundle);
    const args = [
      "ssh",
      "sign",
      "--key",
      `${kp.key}.pub`,
      "--principal",
      LOGIN,
      "--host-group",
      "prod",
      "--server",
      `https://localhost:${apiPort}`,
      "--ca-file",
      bundleFile,
      "--json",
    ];
    const r = await runZt(args, { env: { ZT_SESSION_TOKEN: aliceToken } });
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { file: string; decision_id: string };
    expect(info.file).toBe(`${kp.key}-cert.pub`);
    expect(info.decision_id).toMatch(/^dec_/);
    expect((await sshLogin(kp.key, info.file)).status).toBe(0);
    const denied = await runZt(args, { env: { ZT_SESSION_TOKEN: bobToken } });
    expect(denied.code).toBe(77);
    expect(denied.stderr).toMatch(/^zt: error ZT_POLICY_DENIED: .*decision dec_/);
    const anon = await runZt(args, { env: { ZT_SESSION_TOKEN: "" } });
    expect(anon.code).toBe(77);
    expect(anon.stderr).toMatch(/^zt: error ZT_AUTH_REQUIRED: /);
  }, 60_000);

  it('an mTLS SVID is the caller Service::"spiffe://…": allowed by its policy (sshd accepts), others denied, revoked refused', async () => {
    const deployer = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ci/deployer",
      actor: "test",
    });
    const kp = keypair("api-svc");
    const body = { public_key: kp.pub, principals: [LOGIN], host_group: "prod" };
    const ok = await apiSign(body, { client: { key: deployer.keyPem, cert: deployer.chainPem } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    const cert = `${kp.key}-cert.pub`;
    writeFileSync(cert, String(ok.body["certificate"]));
    const l = execFileSync("ssh-keygen", ["-L", "-f", cert], { encoding: "utf8" });
    expect(l).toContain('Key ID: "zt:service=spiffe://example.test/ci/deployer decision=dec_');
    expect((await sshLogin(kp.key, cert)).status).toBe(0);

    const other = await svc.issueSvidWithNewKey({
      spiffeId: "spiffe://example.test/ci/other",
      actor: "test",
    });
    const denied = await apiSign(body, { client: { key: other.keyPem, cert: other.chainPem } });
    expect(denied.status).toBe(403);
    expect(errorOf(denied).decision_id).toMatch(/^dec_/);
    const rows = await auditFor(errorOf(denied).decision_id!);
    expect(rows.map((x) => [x.outcome, x.subject])).toEqual([
      ["deny", "spiffe://example.test/ci/other"],
    ]);

    await svc.revoke({ serial: deployer.serial, actor: "test" });
    const revoked = await apiSign(body, {
      client: { key: deployer.keyPem, cert: deployer.chainPem },
      // A refused certificate is never ignored in favour of a session.
      bearer: aliceToken,
    });
    expect(revoked.status).toBe(401);
    expect(errorOf(revoked)).toMatchObject({
      code: "ZT_CLIENT_CERT_REFUSED",
      reason: "cert-revoked",
    });
  });
});
