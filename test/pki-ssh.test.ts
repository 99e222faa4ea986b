import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  writeFileSync,
  chmodSync,
  rmSync,
} from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initPki, pkiService, type PkiService } from "../src/pki/index.js";
import { openPkiTestContext } from "../src/pki/pki-testing.js";

const SSHD = "/usr/sbin/sshd";
const LOGIN = "ztsshtest";

/** Finds sshd, installing openssh-server when it is missing and we may (CI installs it). */
function ensureSshd(): void {
  if (existsSync(SSHD)) return;
  spawnSync("apt-get", ["install", "-y", "-q", "openssh-server", "openssh-client"], {
    stdio: "ignore",
  });
  if (!existsSync(SSHD)) throw new Error("sshd not found: install openssh-server");
}

function ensureUser(): void {
  if (spawnSync("id", [LOGIN]).status !== 0)
    execFileSync("useradd", ["-m", "-s", "/bin/sh", LOGIN]);
  // useradd leaves the account locked ("!"), which sshd refuses without PAM: no password, not locked.
  execFileSync("usermod", ["-p", "*", LOGIN]);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, proc: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`sshd exited: ${log()}`);
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, "127.0.0.1", () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen: ${log()}`);
}

let env: Awaited<ReturnType<typeof openPkiTestContext>>;
let svc: PkiService;
let dir: string;
let port: number;
let sshd: ChildProcess;
let sshdLog = "";

const POLICIES = `
@id("ops-ssh-prod")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"prod")
when { ["${LOGIN}", "deploy"].containsAll(context.logins) };
`;

function keypair(name: string): { key: string; pub: string } {
  const key = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@test`, "-f", key]);
  return { key, pub: readFileSync(`${key}.pub`, "utf8") };
}

/** Real OpenSSH client: BatchMode, only this key and certificate, host verified by the zt host CA. */
function sshLogin(
  key: string,
  cert: string,
  user = LOGIN,
): Promise<{ status: number; out: string }> {
  const args = [
    "-p",
    String(port),
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "IdentityAgent=none",
    "-o",
    `UserKnownHostsFile=${join(dir, "known_hosts")}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "ConnectTimeout=20",
    "-i",
    key,
    "-o",
    `CertificateFile=${cert}`,
    `${user}@127.0.0.1`,
    "true",
  ];
  // Asynchronous, so sshd's log keeps flowing into sshdLog meanwhile.
  return new Promise((resolve) => {
    const p = spawn("ssh", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += String(d)));
    p.stderr.on("data", (d) => (out += String(d)));
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    p.on("close", (code) => {
      clearTimeout(timer);
      // Let sshd's log lines for this connection arrive.
      setTimeout(() => resolve({ status: code ?? -1, out }), 100);
    });
  });
}

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

async function writeKrl(): Promise<void> {
  writeFileSync(join(dir, "revoked.krl"), await svc.ssh.krl());
}

beforeAll(async () => {
  ensureSshd();
  ensureUser();
  dir = mkdtempSync(join(tmpdir(), "zt-sshd-"));
  chmodSync(dir, 0o755);
  const policyDir = join(dir, "policies");
  mkdirSync(policyDir);
  writeFileSync(join(policyDir, "ssh.cedar"), POLICIES);
  env = await openPkiTestContext({ policies: policyDir });
  await initPki(env.ctx);
  svc = await pkiService(env.ctx);
  // zt users: alice in ops, bob not.
  const now = Date.now();
  const db = env.ctx.store.db;
  for (const [id, name] of [
    ["u_alice", "alice"],
    ["u_bob", "bob"],
  ] as const) {
    await db
      .insertInto("users")
      .values({
        id,
        name,
        email: null,
        password_hash: "x",
        totp_secret_sealed: null,
        totp_last_step: 0,
        disabled: 0,
        created_at: now,
        updated_at: now,
      })
      .execute();
  }
  await db.insertInto("groups").values({ name: "ops", created_at: now }).execute();
  await db.insertInto("user_groups").values({ user_id: "u_alice", group_name: "ops" }).execute();

  // sshd with its own host key, certified by zt's host CA, trusting zt's user CA.
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  const hostCert = await svc.ssh.signHost({
    publicKey: readFileSync(join(dir, "host_key.pub"), "utf8"),
    hostnames: ["127.0.0.1"],
    actor: "test",
  });
  writeFileSync(join(dir, "host_key-cert.pub"), hostCert.certLine);
  writeFileSync(join(dir, "user_ca.pub"), svc.ssh.userCaLine() + "\n");
  writeFileSync(join(dir, "known_hosts"), svc.ssh.knownHostsLine() + "\n");
  await writeKrl();
  port = await freePort();
  const config = [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${join(dir, "host_key")}`,
    `HostCertificate ${join(dir, "host_key-cert.pub")}`,
    `PidFile ${join(dir, "sshd.pid")}`,
    `TrustedUserCAKeys ${join(dir, "user_ca.pub")}`,
    `RevokedKeys ${join(dir, "revoked.krl")}`,
    "AuthorizedPrincipalsFile none",
    "AuthorizedKeysFile none",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin no",
    "UsePAM no",
    "StrictModes no",
    "LogLevel VERBOSE",
  ].join("\n");
  writeFileSync(join(dir, "sshd_config"), config + "\n");
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  sshd = spawn(SSHD, ["-D", "-e", "-f", join(dir, "sshd_config")], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  sshd.stderr?.on("data", (d) => (sshdLog += String(d)));
  await waitForPort(port, sshd, () => sshdLog);
}, 120_000);

afterAll(async () => {
  if (sshd && sshd.exitCode === null) sshd.kill("SIGTERM");
  await env?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("SSH CA checked by a real sshd and ssh", () => {
  it("accepts a zt-signed certificate for the right principal; the host certificate verifies via @cert-authority", async () => {
    const c = await signAndWrite("ok");
    const r = await sshLogin(c.key, c.cert);
    expect(r.status, `${r.out}\n${sshdLog}`).toBe(0);
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
    const mark = sshdLog.length;
    expect((await sshLogin(expired.key, expired.cert)).status).toBe(255);
    expect(sshdLog.slice(mark)).toMatch(/expired|not yet valid|outside validity/i);
    const mark2 = sshdLog.length;
    expect((await sshLogin(future.key, future.cert)).status).toBe(255);
    expect(sshdLog.slice(mark2)).toMatch(/expired|not yet valid|outside validity/i);
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
