/**
 * `zt ca`, `zt cert` and `zt ssh` end to end: the real CLI (built by `npm run build`) in
 * child processes over a real data directory, checked with openssl and ssh-keygen.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { createApiServer } from "../src/api/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { loadConfig } from "../src/config/index.js";
import { nextRenewalAtMs } from "../src/pki/index.js";
import { exitCodeFor } from "../src/core/errors.js";
import { ROOT, runZt, tempDir, writeConfig, type RunResult } from "./helpers/zt-process.js";

let dir: string;
let config: string;
const env = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };
const zt = (args: string[]): Promise<RunResult> => runZt(["--config", config, ...args], { env });

const POLICY = `@id("ops-ssh")
permit (principal in Group::"ops", action == Action::"ssh:sign", resource == HostGroup::"prod");
`;

function openssl(args: string[]): { status: number; out: string } {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function expectCleanError(r: RunResult, exit: number, code: string): void {
  expect(r.code, r.stderr).toBe(exit);
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

beforeAll(async () => {
  if (!existsSync(join(ROOT, "dist", "src", "cli", "commands", "ssh.js"))) {
    try {
      execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "ignore" });
    } catch {
      /* emitted anyway */
    }
  }
  dir = tempDir("zt-pki-cli-");
  config = writeConfig(
    dir,
    "data_dir: ./data\ntrust_domain: example.test\npolicies: ./policies\n",
    { "ssh.cedar": POLICY },
  );
  const r = await zt(["ca", "init"]);
  expect(r.code, r.stderr).toBe(0);
}, 180_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("zt ca / zt cert", { timeout: 180_000 }, () => {
  let serial: string;

  it("cert issue writes a 0600 key, chain and bundle that openssl accepts", async () => {
    const out = join(dir, "svid");
    const r = await zt([
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://example.test/ns/cli",
      "--dns",
      "cli.example.test",
      "--ttl",
      "2h",
      "--out",
      out,
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { serial: string; spiffe_id: string };
    serial = info.serial;
    expect(info.spiffe_id).toBe("spiffe://example.test/ns/cli");
    expect(statSync(join(out, "svid.key")).mode & 0o777).toBe(0o600);
    const chain = readFileSync(join(out, "chain.pem"), "utf8");
    const [leaf, intermediate] = chain.split(/(?<=-----END CERTIFICATE-----\n)/);
    writeFileSync(join(dir, "leaf.pem"), leaf!);
    writeFileSync(join(dir, "int.pem"), intermediate!);
    const v = openssl([
      "verify",
      "-x509_strict",
      "-purpose",
      "sslclient",
      "-CAfile",
      join(out, "bundle.pem"),
      "-untrusted",
      join(dir, "int.pem"),
      join(dir, "leaf.pem"),
    ]);
    expect(v.status, v.out).toBe(0);
    // The key matches the certificate.
    const pub1 = execFileSync("openssl", ["pkey", "-in", join(out, "svid.key"), "-pubout"], {
      encoding: "utf8",
    });
    const pub2 = execFileSync(
      "openssl",
      ["x509", "-in", join(dir, "leaf.pem"), "-noout", "-pubkey"],
      { encoding: "utf8" },
    );
    expect(pub1).toBe(pub2);
  });

  it("cert issue --dns with an IP address puts it in an iPAddress SAN, never a dNSName; bad DNS names are refused", async () => {
    const out = join(dir, "svid-ip");
    const r = await zt([
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://example.test/ns/ip",
      "--dns",
      "192.0.2.10",
      "--dns",
      "2001:db8::1",
      "--dns",
      "Web.Example.Test.",
      "--out",
      out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const san = execFileSync(
      "openssl",
      ["x509", "-in", join(out, "svid.pem"), "-noout", "-ext", "subjectAltName"],
      { encoding: "utf8" },
    );
    expect(san).toMatch(/IP Address:192\.0\.2\.10\b/);
    expect(san).toMatch(/IP Address:2001:DB8:0:0:0:0:0:1\b/);
    expect(san).toMatch(/DNS:web\.example\.test\b/); // lowercased, root dot dropped
    expect(san).not.toMatch(/DNS:(192|2001)/);
    for (const bad of [
      "a..example.test", // empty label
      "example.test..",
      `${"a".repeat(64)}.example.test`, // a label is at most 63 octets
      `${"a.".repeat(127)}test`, // a name is at most 253
      "a.*.example.test", // a wildcard only as the whole leftmost label
      "*.test", // …and not over a top-level domain
      "w*.example.test",
      "-web.example.test",
      "web_1.example.test",
      "999.1.1.1", // a mistyped address
    ]) {
      const e = await zt([
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/ns/ip",
        "--dns",
        bad,
        "--out",
        join(dir, "svid-bad"),
      ]);
      expect(e.stderr, bad).toMatch(/^zt: error ZT_BAD_REQUEST: not a valid DNS name: /);
      expect(e.stderr, bad).toContain(JSON.stringify(bad.slice(0, 100)));
      expect(e.code, bad).toBe(exitCodeFor("ZT_BAD_REQUEST"));
    }
    expect(existsSync(join(dir, "svid-bad", "svid.pem"))).toBe(false);
  });

  it("cert list shows it; ca bundle --format spiffe is a JWK set", async () => {
    const list = JSON.parse((await zt(["cert", "list", "--json"])).stdout) as {
      serial: string;
      status: string;
    }[];
    expect(list.find((c) => c.serial === serial)?.status).toBe("valid");
    const bundle = JSON.parse((await zt(["ca", "bundle", "--format", "spiffe"])).stdout) as {
      keys: { use: string }[];
    };
    expect(bundle.keys[0]?.use).toBe("x509-svid");
    const show = await zt(["ca", "show"]);
    expect(show.stdout).toMatch(/root\s+active/);
    expect(show.stdout).toMatch(/intermediate\s+active/);
  });

  it("cert renew (local) rotates the key, keeps the identity, and runs --exec", async () => {
    const out = join(dir, "svid");
    const oldKey = readFileSync(join(out, "svid.key"), "utf8");
    const marker = join(dir, "reloaded");
    const r = await zt([
      "cert",
      "renew",
      "--cert",
      join(out, "chain.pem"),
      "--key",
      join(out, "svid.key"),
      "--exec",
      `touch ${marker}`,
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { serial: string; spiffe_id: string };
    expect(info.serial).not.toBe(serial);
    expect(info.spiffe_id).toBe("spiffe://example.test/ns/cli");
    expect(readFileSync(join(out, "svid.key"), "utf8")).not.toBe(oldKey);
    expect(statSync(join(out, "svid.key")).mode & 0o777).toBe(0o600);
    expect(existsSync(marker)).toBe(true);
    const leaf = new X509Certificate(readFileSync(join(out, "chain.pem")));
    expect(leaf.subjectAltName).toContain("DNS:cli.example.test");
    expect(
      leaf.checkPrivateKey(
        (await import("node:crypto")).createPrivateKey(readFileSync(join(out, "svid.key"))),
      ),
    ).toBe(true);
  });

  it("cert renew --server talks to the API", async () => {
    const cfg = loadConfig(config, { env });
    const ctx: AppContext = await openAppContext(cfg, { env });
    const api: FastifyInstance = await createApiServer(ctx);
    try {
      await api.listen({ host: "127.0.0.1", port: 0 });
      const port = (api.server.address() as { port: number }).port;
      const out = join(dir, "svid");
      const r = await zt([
        "cert",
        "renew",
        "--cert",
        join(out, "chain.pem"),
        "--key",
        join(out, "svid.key"),
        "--server",
        `http://127.0.0.1:${port}`,
        "--json",
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { spiffe_id: string }).spiffe_id).toBe(
        "spiffe://example.test/ns/cli",
      );
    } finally {
      await api.close();
      await ctx.close();
    }
  });

  it("cert revoke + ca crl: openssl -crl_check refuses the revoked certificate", async () => {
    const r = await zt(["cert", "revoke", serial, "--reason", "key-compromise"]);
    expect(r.code, r.stderr).toBe(0);
    expect((await zt(["ca", "crl", "--out", join(dir, "crl.pem")])).code).toBe(0);
    const v = openssl([
      "verify",
      "-crl_check",
      "-CRLfile",
      join(dir, "crl.pem"),
      "-CAfile",
      join(dir, "svid", "bundle.pem"),
      "-untrusted",
      join(dir, "int.pem"),
      join(dir, "leaf.pem"),
    ]);
    expect(v.status).not.toBe(0);
    expect(v.out).toContain("certificate revoked");
  });

  it("registration + token: join tokens are printed once and single-use", async () => {
    expect(
      (await zt(["cert", "registration", "add", "--spiffe-id", "spiffe://example.test/ns/joiner"]))
        .code,
    ).toBe(0);
    const t = await zt(["cert", "token", "spiffe://example.test/ns/joiner", "--json"]);
    expect(t.code, t.stderr).toBe(0);
    expect((JSON.parse(t.stdout) as { token: string }).token).toMatch(/^ztjoin_/);
  });

  it("cert issue checks --out before issuing: a file, or a folder others can write, costs no certificate", async () => {
    const count = async () =>
      (JSON.parse((await zt(["cert", "list", "--all", "--json"])).stdout) as unknown[]).length;
    const before = await count();
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "x");
    const shared = join(dir, "shared-out");
    mkdirSync(shared, { mode: 0o777 });
    chmodSync(shared, 0o777);
    for (const [out, code, exit] of [
      [file, "ZT_BAD_REQUEST", 64],
      [join(file, "sub"), "ZT_BAD_REQUEST", 64],
      [shared, "ZT_FILE_PERMISSIONS", exitCodeFor("ZT_FILE_PERMISSIONS")],
    ] as const) {
      const r = await zt([
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/out",
        "--out",
        out,
      ]);
      expectCleanError(r, exit, code);
      expect(r.stderr).toContain(out);
    }
    expect(await count()).toBe(before);
    // A folder that does not exist yet is made, private.
    const fresh = join(dir, "fresh", "svid");
    const ok = await zt([
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://example.test/out",
      "--out",
      fresh,
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    expect(statSync(join(fresh, "svid.key")).mode & 0o777).toBe(0o600);
    expect(await count()).toBe(before + 1);
  });

  it("bad input: clear errors, exit codes from the table, no stack traces", async () => {
    expectCleanError(
      await zt([
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/a/../b",
        "--out",
        join(dir, "x"),
      ]),
      65,
      "ZT_PKI_SPIFFE_ID_INVALID",
    );
    expectCleanError(
      await zt(["cert", "issue", "--spiffe-id", "spiffe://other.test/a", "--out", join(dir, "x")]),
      77,
      "ZT_PKI_SAN_NOT_ALLOWED",
    );
    expectCleanError(
      await zt([
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/a",
        "--ttl",
        "25h",
        "--out",
        join(dir, "x"),
      ]),
      65,
      "ZT_PKI_TTL_INVALID",
    );
    expectCleanError(await zt(["cert", "revoke", "deadbeef"]), 66, "ZT_NOT_FOUND");
    expectCleanError(await zt(["cert", "revoke"]), 64, "ZT_USAGE");
  });
});

describe("zt ssh", { timeout: 180_000 }, () => {
  it("ca-pub and known-hosts print the lines sshd and ssh want", async () => {
    expect((await zt(["ssh", "ca-pub"])).stdout).toMatch(/^ssh-ed25519 AAAA\S+ zt-user-ca\n$/);
    expect((await zt(["ssh", "known-hosts", "--pattern", "*.example.test"])).stdout).toMatch(
      /^@cert-authority \*\.example\.test ssh-ed25519 AAAA\S+ zt-host-ca\n$/,
    );
  });

  it("sign (policy-allowed), revoke, krl: ssh-keygen reads what zt wrote", async () => {
    const add = await runZt(
      ["--config", config, "user", "add", "alice", "--group", "ops", "--json"],
      { env },
    );
    expect(add.code, add.stderr).toBe(0);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id_ed25519")]);
    const r = await zt([
      "ssh",
      "sign",
      "--key",
      join(dir, "id_ed25519.pub"),
      "--principal",
      "alice",
      "--host-group",
      "prod",
      "--ttl",
      "1h",
      "--no-pty",
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { file: string; serial: string; decision_id: string };
    expect(info.file).toBe(join(dir, "id_ed25519-cert.pub"));
    const l = execFileSync("ssh-keygen", ["-L", "-f", info.file], { encoding: "utf8" });
    expect(l).toContain(`Serial: ${info.serial}`);
    expect(l).toContain(`decision=${info.decision_id}`);
    expect(l).not.toContain("permit-pty");
    // Denied by policy: another host group.
    expectCleanError(
      await zt([
        "ssh",
        "sign",
        "--key",
        join(dir, "id_ed25519.pub"),
        "--principal",
        "alice",
        "--host-group",
        "db",
      ]),
      77,
      "ZT_POLICY_DENIED",
    );
    expectCleanError(
      await zt([
        "ssh",
        "sign",
        "--key",
        join(dir, "id_ed25519"),
        "--principal",
        "alice",
        "--host-group",
        "prod",
      ]),
      65,
      "ZT_PKI_KEY_INVALID",
    );
    expect((await zt(["ssh", "revoke", info.serial])).code).toBe(0);
    expect((await zt(["ssh", "krl", "--out", join(dir, "krl")])).code).toBe(0);
    const q = spawnSync("ssh-keygen", ["-Q", "-f", join(dir, "krl"), info.file], {
      encoding: "utf8",
    });
    expect(q.stdout).toContain("REVOKED");
  });
});

describe("zt ssh revoke SERIAL", { timeout: 180_000 }, () => {
  it("finds the certificate when the serial has leading zeros, and refuses one past 64 bits saying so", async () => {
    const add = await zt(["user", "add", "serial-sam", "--group", "ops", "--no-qr"]);
    expect(add.code, add.stderr).toBe(0);
    const key = join(dir, "id_serial");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const signed = await zt(
      ["ssh", "sign", "--key", `${key}.pub`, "--principal", "serial-sam"].concat([
        "--host-group",
        "prod",
        "--json",
      ]),
    );
    expect(signed.code, signed.stderr).toBe(0);
    const info = JSON.parse(signed.stdout) as { file: string; serial: string };

    for (const tooBig of ["18446744073709551616", "99999999999999999999", "1".repeat(25)]) {
      const r = await zt(["ssh", "revoke", tooBig]);
      expectCleanError(r, 64, "ZT_BAD_REQUEST");
      expect(r.stderr).toMatch(
        /is past 64 bits: a certificate serial is at most 18446744073709551615/,
      );
    }
    // The largest serial there is, is a serial: looked up, and not found.
    expectCleanError(await zt(["ssh", "revoke", "18446744073709551615"]), 66, "ZT_NOT_FOUND");

    const r = await zt(["ssh", "revoke", `000${info.serial}`, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ serials: [info.serial] });
    expect((await zt(["ssh", "krl", "--out", join(dir, "serial.krl")])).code).toBe(0);
    const q = spawnSync("ssh-keygen", ["-Q", "-f", join(dir, "serial.krl"), info.file], {
      encoding: "utf8",
    });
    expect(q.stdout).toContain("REVOKED");
  });
});

describe("renewal schedule", () => {
  it("renews at half the lifetime, jittered by at most ±10 %", () => {
    const nb = 1_000_000;
    const na = nb + 3_600_000;
    expect(nextRenewalAtMs(nb, na, 0.5)).toBe(nb + 1_800_000);
    expect(nextRenewalAtMs(nb, na, 0)).toBe(nb + 1_800_000 - 360_000);
    expect(nextRenewalAtMs(nb, na, 0.999999)).toBeLessThanOrEqual(nb + 1_800_000 + 360_000);
    expect(nextRenewalAtMs(nb, na, 0.999999)).toBeGreaterThan(nb + 1_800_000 + 359_000);
  });
});
