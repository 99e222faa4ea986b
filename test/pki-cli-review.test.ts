/**
 * `zt cert` through the real CLI (bin/zt, built by `npm run build`): `cert list` shows each
 * certificate's key type (from the row recorded at issuance; `-` / null for rows from
 * before), and bad input is refused before anything is written or issued.
 */
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../src/config/index.js";
import { openAppContext } from "../src/app/index.js";
import { pkiService } from "../src/pki/index.js";
import {
  expectCleanError,
  expectOk,
  masterKeyEnv,
  okJson,
  ztStoreForSuite,
} from "./helpers/zt-cli.js";

const env = masterKeyEnv();
const suite = ztStoreForSuite({
  prefix: "zt-pki-cli-review-",
  env,
  yaml: "trust_domain: example.test\n",
  users: [],
});

function openssl(args: string[]): void {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
}

/** A CSR (PEM) for a new key made by openssl: `genpkey` algorithm options, then the URI SAN. */
function opensslCsr(name: string, keyArgs: string[], spiffeId: string): string {
  const key = join(suite.dir, `${name}.key`);
  const csr = join(suite.dir, `${name}.csr`);
  openssl(["genpkey", ...keyArgs, "-out", key]);
  openssl([
    "req",
    "-new",
    "-key",
    key,
    "-subj",
    "/O=zt test",
    "-addext",
    `subjectAltName=URI:${spiffeId}`,
    "-out",
    csr,
  ]);
  return csr;
}

describe("zt cert list shows the key type", { timeout: 180_000 }, () => {
  it("ec-p256, ec-p384, rsa-<bits>, ed25519 in the table and in --json; - / null for a row from before", async () => {
    const { zt } = suite;
    const csrs: [string, string[]][] = [
      ["p384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]],
      ["rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"]],
      ["ed", ["-algorithm", "ED25519"]],
    ];
    const p256 = okJson(
      await zt([
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/kt/p256",
        "--out",
        join(suite.dir, "p256"),
        "--json",
      ]),
    );
    const serials: Record<string, string> = { p256: String(p256["serial"]) };
    // Keys of other types come in CSRs (the API's path); issued here in process, listed by bin/zt.
    const ctx = await openAppContext(loadConfig(suite.config, { env }), { env });
    try {
      const svc = await pkiService(ctx);
      for (const [name, args] of csrs) {
        const csr = opensslCsr(name, args, `spiffe://example.test/kt/${name}`);
        const issued = await svc.issueSvid({
          csr: readFileSync(csr, "utf8"),
          auth: { kind: "admin", actor: "test" },
        });
        serials[name] = issued.serial;
      }
      // A certificate recorded before zt kept its key type.
      const legacy = await svc.issueSvidWithNewKey({
        spiffeId: "spiffe://example.test/kt/legacy",
        actor: "test",
      });
      serials["legacy"] = legacy.serial;
      await ctx.store.db
        .updateTable("pki_certs")
        .set({ key_type: null })
        .where("serial", "=", legacy.serial)
        .execute();
    } finally {
      await ctx.close();
    }
    const expected: Record<string, string | null> = {
      p256: "ec-p256",
      p384: "ec-p384",
      rsa: "rsa-3072",
      ed: "ed25519",
      legacy: null,
    };

    const rows = JSON.parse(expectOk(await zt(["cert", "list", "--json"])).stdout) as {
      serial: string;
      key_type: string | null;
    }[];
    for (const [name, type] of Object.entries(expected))
      expect(rows.find((r) => r.serial === serials[name])?.key_type, name).toBe(type);

    const table = expectOk(await zt(["cert", "list"])).stdout.split("\n");
    expect(table[0]).toMatch(/^SERIAL\s+SPIFFE_ID\s+KEY_TYPE\s+/);
    for (const [name, type] of Object.entries(expected)) {
      const line = table.find((l) => l.startsWith(serials[name]!));
      expect(line, name).toMatch(new RegExp(`^\\S+\\s+\\S+\\s+${type ?? "-"}\\s`));
    }
  });
});

describe("zt cert: bad input is refused before anything is written", { timeout: 180_000 }, () => {
  it("cert renew --key FILE that does not exist: ZT_NOT_FOUND naming --key and the file, as for --cert", async () => {
    const { zt } = suite;
    const out = join(suite.dir, "renew-missing");
    expectOk(
      await zt(["cert", "issue", "--spiffe-id", "spiffe://example.test/renew", "--out", out]),
    );
    const missing = join(suite.dir, "no-such.key");
    const r = await zt(["cert", "renew", "--cert", join(out, "chain.pem"), "--key", missing]);
    expectCleanError(r, 66, "ZT_NOT_FOUND", new RegExp(`--key ${missing}`));
    // As a missing --cert is reported.
    const c = await zt([
      "cert",
      "renew",
      "--cert",
      join(suite.dir, "no-such.pem"),
      "--key",
      join(out, "svid.key"),
    ]);
    expectCleanError(c, 66, "ZT_NOT_FOUND", /no-such\.pem/);
  });

  it("zt ssh sign --client-key FILE that does not exist: ZT_NOT_FOUND naming --client-key", async () => {
    const { zt } = suite;
    const out = join(suite.dir, "ssh-client");
    expectOk(
      await zt(["cert", "issue", "--spiffe-id", "spiffe://example.test/sshc", "--out", out]),
    );
    const userKey = join(suite.dir, "user_ed25519");
    expect(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", userKey]).status).toBe(
      0,
    );
    const missing = join(suite.dir, "no-such-client.key");
    const r = await zt([
      "ssh",
      "sign",
      "--key",
      `${userKey}.pub`,
      "--principal",
      "alice",
      "--server",
      "http://127.0.0.1:9",
      "--client-cert",
      join(out, "chain.pem"),
      "--client-key",
      missing,
    ]);
    expectCleanError(r, 66, "ZT_NOT_FOUND", new RegExp(`--client-key ${missing}`));
  });

  it("cert issue checks --spiffe-id, --dns and --ttl before it makes --out or issues anything", async () => {
    const { zt } = suite;
    const count = async () =>
      (JSON.parse(expectOk(await zt(["cert", "list", "--all", "--json"])).stdout) as unknown[])
        .length;
    const before = await count();
    const cases: [string[], number, string][] = [
      [["--spiffe-id", "spiffe://example.test/ok", "--dns", "bad..name"], 64, "ZT_BAD_REQUEST"],
      [["--spiffe-id", "spiffe://example.test/ok", "--dns", "-x.example"], 64, "ZT_BAD_REQUEST"],
      [["--spiffe-id", "spiffe://example.test/ok", "--ttl", "25h"], 65, "ZT_PKI_TTL_INVALID"],
      [["--spiffe-id", "spiffe://example.test/ok", "--ttl", "soon"], 64, "ZT_BAD_REQUEST"],
      [["--spiffe-id", "spiffe://example.test/a/../b"], 65, "ZT_PKI_SPIFFE_ID_INVALID"],
      [["--spiffe-id", "spiffe://other.test/a"], 77, "ZT_PKI_SAN_NOT_ALLOWED"],
    ];
    for (const [i, [args, exit, code]] of cases.entries()) {
      const out = join(suite.dir, `refused-${i}`, "svid");
      const r = await zt(["cert", "issue", ...args, "--out", out]);
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(exit);
      expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
      expect(existsSync(join(suite.dir, `refused-${i}`)), args.join(" ")).toBe(false);
    }
    expect(await count()).toBe(before);
  });
});
