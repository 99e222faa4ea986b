/**
 * `zt cert` through the real CLI (bin/zt, built by `npm run build`): `cert list` shows each
 * certificate's key type (from the row recorded at issuance; `-` / null for rows from
 * before), and bad input is refused before anything is written or issued.
 */
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../src/config/index.js";
import { openAppContext } from "../src/app/index.js";
import { pkiService } from "../src/pki/index.js";
import { masterKeyEnv, okJson, expectOk, ztStoreForSuite } from "./helpers/zt-cli.js";

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
