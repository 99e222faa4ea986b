/**
 * An SSH certificate whose `ssh:sign` allow needed several grants (two host-group grants,
 * or a break-glass and a grant) ends, at the real sshd, when any one of them is revoked:
 * not only when the one it ends with (named first in its key id) is. Before, the KRL read
 * one grant from the key id, so revoking another left the certificate valid at sshd
 * until it expired. Real sshd on a loopback port with zt's KRL as `RevokedKeys`, the real
 * ssh client, and `ssh-keygen -Q` on the same KRL.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import { AccessService } from "../src/access/index.js";
import { initPki, pkiService, type PkiService } from "../src/pki/index.js";
import { SSH_LOGIN, startSshd, type Sshd } from "./helpers/sshd.js";
import { tempDir } from "./helpers/zt-process.js";

const HOUR = 3_600_000;

const POLICIES = `
@id("db-needs-db-and-pci")
permit (principal, action == Action::"ssh:sign", resource == HostGroup::"db")
when { context.grants.contains("db") && context.grants.contains("pci") };

@id("vault-breakglass-with-pci")
permit (principal, action == Action::"ssh:sign", resource == HostGroup::"vault")
when { context.breakglass && context.grants.contains("pci") };
`;

describe("a certificate that needed several grants, at the real sshd", () => {
  let dir: string;
  let ctx: AppContext;
  let access: AccessService;
  let pki: PkiService;
  let sshd: Sshd;

  beforeAll(async () => {
    dir = tempDir("zt-sshd-grants-");
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, "policies"));
    writeFileSync(join(dir, "policies", "ssh.cedar"), POLICIES);
    writeFileSync(
      join(dir, "zt.yaml"),
      `data_dir: ${join(dir, "data")}
trust_domain: sshd-grants.test
policies: ${join(dir, "policies")}
access:
  resources:
    'HostGroup::"db"': { approvers: sre, max_ttl: 4h }
    'HostGroup::"pci"': { approvers: sre, max_ttl: 4h }
  breakglass:
    accounts: [oncall]
    resources: ['HostGroup::"vault"']
    ttl: 1h
`,
    );
    ctx = await openAppContext(loadConfig(join(dir, "zt.yaml"), { env: {} }), {
      env: {},
      create: true,
    });
    const ids = identityService(ctx);
    for (const [name, group] of [
      ["alice", "eng"],
      ["oncall", "eng"],
      ["sam", "sre"],
    ] as const)
      await ids.addUser({ name, groups: [group], password: "pw-correct-horse-battery" });
    await initPki(ctx);
    pki = await pkiService(ctx);
    access = new AccessService(ctx);
    sshd = await startSshd(dir, pki.ssh);
  }, 120_000);

  afterAll(async () => {
    sshd?.stop();
    await ctx?.close();
  });

  async function grant(user: string, resource: string, ttlMs: number) {
    const r = await access.request({ user, resource, reason: "INC-11 rotate keys", ttlMs });
    return access.approve(r.id, "sam");
  }

  /** A fresh key, signed for `user` on `hostGroup` as SSH_LOGIN; the files ssh uses. */
  async function signed(name: string, user: string, hostGroup: string) {
    const key = join(dir, name);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@test`, "-f", key]);
    const s = await pki.ssh.signUser({
      publicKey: readFileSync(`${key}.pub`, "utf8"),
      user,
      hostGroup,
      principals: [SSH_LOGIN],
      ttlMs: 8 * HOUR,
      actor: "test",
    });
    const cert = `${key}-cert.pub`;
    writeFileSync(cert, s.certLine);
    return { key, cert, keyId: s.keyId, decisionId: s.decisionId };
  }

  /** sshd's answer with the KRL as zt makes it now, and what `ssh-keygen -Q` says of it. */
  async function loginNow(c: { key: string; cert: string }) {
    await sshd.writeKrl();
    const mark = sshd.log().length;
    const r = await sshd.login(c.key, c.cert);
    const q = spawnSync("ssh-keygen", ["-Q", "-f", sshd.krlFile, c.cert], { encoding: "utf8" });
    return { status: r.status, out: r.out, sshd: sshd.log().slice(mark), krl: q.stdout + q.stderr };
  }

  it("two host-group grants: revoking the one that ends last (not named first) ends the certificate", async () => {
    const pci = await grant("alice", 'HostGroup::"pci"', 30 * 60_000);
    const db = await grant("alice", 'HostGroup::"db"', 3 * HOUR);
    const c = await signed("alice-db", "alice", "db");
    expect(c.keyId).toContain(` grant=${pci.id},${db.id} `);
    const before = await loginNow(c);
    expect(before.status, `${before.out}\n${before.sshd}`).toBe(0);
    expect(before.krl).toMatch(/: ok$/m);

    await access.revoke(db.id, "sam");
    const after = await loginNow(c);
    expect(after.status, after.out).toBe(255);
    expect(after.sshd).toMatch(/revoked/i);
    expect(after.krl).toMatch(/: REVOKED$/m);
  }, 120_000);

  it("a break-glass and a grant: revoking the grant ends the certificate that ends with the break-glass", async () => {
    const pci = await grant("oncall", 'HostGroup::"pci"', 3 * HOUR);
    const bg = await access.breakglass({
      user: "oncall",
      resource: 'HostGroup::"vault"',
      reason: "vault sealed, INC-12",
    });
    const c = await signed("oncall-vault", "oncall", "vault");
    expect(c.keyId).toContain(` grant=${bg.id},${pci.id} `);
    const before = await loginNow(c);
    expect(before.status, `${before.out}\n${before.sshd}`).toBe(0);

    await access.revoke(pci.id, "sam");
    const after = await loginNow(c);
    expect(after.status, after.out).toBe(255);
    expect(after.sshd).toMatch(/revoked/i);
    expect(after.krl).toMatch(/: REVOKED$/m);
  }, 120_000);
});
