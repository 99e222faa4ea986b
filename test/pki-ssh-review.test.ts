/**
 * Regression tests for the second PKI security review (SSH side): a revoked key gets no
 * new certificate; host certificates never carry a principal OpenSSH would read as a
 * pattern matching any host; the SSH options (lifetime, force-command, source addresses,
 * extensions) are in the `ssh:sign` decision's context, so policy can bound them.
 * Keys are made by the real ssh-keygen, certificates read back by it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseSshPublicKey, type PkiService } from "../src/pki/index.js";
import { openPkiSuite, type PkiSuite } from "./helpers/pki-suite.js";

const POLICIES = `
@id("ops-ssh")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"prod");

@id("prod-no-port-forwarding")
@reason("prod-port-forwarding")
forbid (principal, action == Action::"ssh:sign", resource == HostGroup::"prod")
when { context.extensions.contains("permit-port-forwarding") };

@id("prod-at-most-1h")
@reason("prod-ttl-over-1h")
forbid (principal, action == Action::"ssh:sign", resource == HostGroup::"prod")
when { context.ttl_seconds > 3600 };

@id("ops-backup-only")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"backup")
when {
  context.force_command == "/usr/local/bin/backup" &&
  context.source_addresses == ["10.0.0.0/8"] &&
  !context.extensions.contains("permit-pty")
};

@id("ops-interactive")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"dev")
when { context.force_command == "" && context.source_addresses.isEmpty() };
`;

let env: PkiSuite["env"];
let svc: PkiService;
let dir: string;

function keypair(name: string): { key: string; pub: string } {
  const key = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@test`, "-f", key]);
  return { key, pub: readFileSync(`${key}.pub`, "utf8") };
}

function certText(line: string, name: string): string {
  const file = join(dir, `${name}-cert.pub`);
  writeFileSync(file, line);
  return execFileSync("ssh-keygen", ["-L", "-f", file], { encoding: "utf8" });
}

type SignRequest = Parameters<PkiService["ssh"]["signUser"]>[0];
const sign = (pub: string, over: Partial<SignRequest> = {}) =>
  svc.ssh.signUser({
    publicKey: pub,
    user: "alice",
    hostGroup: "prod",
    principals: ["alice"],
    actor: "test",
    withoutExtensions: ["permit-port-forwarding"],
    ttlMs: 3_600_000,
    ...over,
  });

async function auditRows(kind: string) {
  await env.ctx.audit.flush();
  return env.ctx.store.db
    .selectFrom("audit_events")
    .selectAll()
    .where("kind", "=", kind)
    .orderBy("seq")
    .execute();
}

let cleanup: (() => Promise<void>) | undefined;
beforeAll(async () => {
  ({ dir, env, svc, cleanup } = await openPkiSuite("zt-ssh-review-", POLICIES));
});
afterAll(() => cleanup?.());

describe("a revoked SSH key", () => {
  it("stops `zt ssh revoke key.pub` from being undone by signing the same key again (ZT_PKI_REVOKED, audited)", async () => {
    const kp = keypair("revoked");
    const first = await sign(kp.pub);
    expect(certText(first.certLine, "revoked-first")).toContain(`Serial: ${first.serial}`);
    const r = await svc.ssh.revoke({ publicKey: kp.pub, actor: "test", reason: "key-compromise" });
    expect(r.serials).toEqual([first.serial]);
    await expect(sign(kp.pub)).rejects.toMatchObject({
      code: "ZT_PKI_REVOKED",
      context: { reason: "key-revoked", key: r.key },
    });
    // The same key under another comment is the same key.
    await expect(sign(kp.pub.replace("revoked@test", "someone-else"))).rejects.toMatchObject({
      code: "ZT_PKI_REVOKED",
    });
    const certs = await env.ctx.store.db
      .selectFrom("pki_ssh_certs")
      .select("serial")
      .where("key_fingerprint", "=", r.key!)
      .execute();
    expect(certs.map((c) => c.serial)).toEqual([first.serial]);
    const refusals = (await auditRows("ssh.sign")).filter((x) => x.reason === "key-revoked");
    expect(refusals).toHaveLength(2);
    expect(refusals[0]).toMatchObject({ outcome: "failure", subject: "test" });
    expect(JSON.parse(refusals[0]!.data)).toMatchObject({ code: "ZT_PKI_REVOKED", key: r.key });
    // Another key of the same user still signs.
    const other = keypair("not-revoked");
    expect((await sign(other.pub)).serial).toMatch(/^\d+$/);
  });
});

describe("host certificate principals", () => {
  it("stops a host certificate valid for any host: no * or ? in host names, except one leftmost *. under a two-label domain", async () => {
    const kp = keypair("host");
    for (const bad of [
      "*",
      "*.*",
      "?",
      "*.com",
      "*.*.example.test",
      "web*.example.test",
      "web?.example.test",
      "*web.example.test",
      "web.*.example.test",
      "example.*",
      "*.10.0.0",
      "*.",
      "*..example.test",
    ]) {
      await expect(
        svc.ssh.signHost({ publicKey: kp.pub, hostnames: ["web1.example.test", bad], actor: "t" }),
        bad,
      ).rejects.toMatchObject({ code: "ZT_BAD_REQUEST", context: { reason: "hostname-invalid" } });
    }
    const refused = (await auditRows("ssh.host-sign")).filter((r) => r.outcome === "failure");
    expect(refused.length).toBeGreaterThanOrEqual(13);
    expect(refused.every((r) => r.reason === "hostname-invalid")).toBe(true);
    // Exact names, addresses, and the one documented wildcard form are signed.
    const ok = await svc.ssh.signHost({
      publicKey: kp.pub,
      hostnames: ["web1.example.test", "127.0.0.1", "*.web.example.test", "WEB2.Example.Test"],
      actor: "t",
    });
    expect(ok.principals).toEqual([
      "web1.example.test",
      "127.0.0.1",
      "*.web.example.test",
      "web2.example.test",
    ]);
    const l = certText(ok.certLine, "host");
    expect(l).toContain("host certificate");
    expect(l).toMatch(
      /Principals: \n\s+web1\.example\.test\n\s+127\.0\.0\.1\n\s+\*\.web\.example\.test\n/,
    );
  });
});

describe("SSH options in the ssh:sign decision", () => {
  it("lets a policy forbid port forwarding in prod (denied, with the policy's reason) and allow the certificate without it", async () => {
    const kp = keypair("pf");
    await expect(sign(kp.pub, { withoutExtensions: [] })).rejects.toMatchObject({
      code: "ZT_POLICY_DENIED",
      context: { reason: "prod-port-forwarding" },
    });
    const ok = await sign(kp.pub, { withoutExtensions: ["permit-port-forwarding"] });
    const l = certText(ok.certLine, "pf");
    expect(l).toContain("permit-pty");
    expect(l).not.toContain("permit-port-forwarding");
  });

  it("lets a policy bound the lifetime in prod (at most 1 h)", async () => {
    const kp = keypair("ttl");
    await expect(sign(kp.pub, { ttlMs: 3_600_000 + 1_000 })).rejects.toMatchObject({
      code: "ZT_POLICY_DENIED",
      context: { reason: "prod-ttl-over-1h" },
    });
    // The default lifetime (pki.ssh.user_ttl, 8 h) is what the policy sees when none is asked for.
    await expect(sign(kp.pub, { ttlMs: undefined })).rejects.toMatchObject({
      code: "ZT_POLICY_DENIED",
      context: { reason: "prod-ttl-over-1h" },
    });
    const ok = await sign(kp.pub, { ttlMs: 3_600_000 });
    expect(ok.validBeforeMs - ok.validAfterMs).toBe(3_600_000 + 60_000);
  });

  it("gives force_command (empty when none) and source_addresses to the policy", async () => {
    const kp = keypair("opts");
    const backup = { hostGroup: "backup", withoutExtensions: ["permit-pty"] };
    await expect(sign(kp.pub, backup)).rejects.toMatchObject({ code: "ZT_POLICY_DENIED" });
    await expect(
      sign(kp.pub, { ...backup, forceCommand: "/usr/local/bin/backup" }),
    ).rejects.toMatchObject({ code: "ZT_POLICY_DENIED" });
    await expect(
      sign(kp.pub, {
        ...backup,
        forceCommand: "/usr/local/bin/backup",
        sourceAddresses: ["10.0.0.0/8"],
        withoutExtensions: [],
      }),
    ).rejects.toMatchObject({ code: "ZT_POLICY_DENIED" });
    const ok = await sign(kp.pub, {
      ...backup,
      forceCommand: "/usr/local/bin/backup",
      sourceAddresses: ["10.0.0.0/8"],
    });
    expect(certText(ok.certLine, "opts")).toContain("force-command /usr/local/bin/backup");
    // "dev" allows only certificates without a forced command or source restriction.
    const dev = { hostGroup: "dev" };
    expect((await sign(kp.pub, dev)).serial).toMatch(/^\d+$/);
    await expect(sign(kp.pub, { ...dev, forceCommand: "/bin/true" })).rejects.toMatchObject({
      code: "ZT_POLICY_DENIED",
    });
    await expect(sign(kp.pub, { ...dev, sourceAddresses: ["10.0.0.0/8"] })).rejects.toMatchObject({
      code: "ZT_POLICY_DENIED",
    });
  });
});

describe("SSH public key types", () => {
  it("a key type that is a name every object has (toString, __proto__, constructor) is unsupported, not looked up as an ECDSA curve", () => {
    const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
    for (const type of ["toString", "__proto__", "constructor"]) {
      const blob = Buffer.concat([
        str(Buffer.from(type)),
        str(Buffer.from("nistp256")),
        str(Buffer.alloc(65, 4)),
      ]);
      const e = (() => {
        try {
          parseSshPublicKey(`${type} ${blob.toString("base64")} x`);
        } catch (x) {
          return x;
        }
      })();
      expect(e, type).toMatchObject({ code: "ZT_PKI_KEY_INVALID" });
      expect((e as Error).message, type).toBe(`unsupported SSH key type ${type}`);
    }
  });
});
