/**
 * `zt keys rotate-master` through the real CLI (bin/zt, built by `npm run build`): every
 * sealed secret moves to the new key (a user logs in with password + TOTP from oathtool,
 * the CA signs), the old key opens nothing any more, a running zt is never rotated under,
 * and a rotation cut short at either side of its commit is refused at start and finished
 * by running the command again. SQLite with a key file and with ZT_MASTER_KEY; a real
 * PostgreSQL for the check that no replica is connected.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { openStore } from "../src/store/index.js";
import { SecretBox } from "../src/core/secret-box.js";
import { resealSecrets } from "../src/keys/index.js";
import { login } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";
import { engines } from "./store-fixture.js";

const ENGINES = await engines();
// Each test runs the real CLI a dozen times (a process start each) and zt up.
vi.setConfig({ testTimeout: 180_000 });
const LISTEN = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
const PASSWORD = "pw-alice-correct-horse";

interface Setup {
  dir: string;
  config: string;
  keyFile: string;
  totp: string;
}

async function setup(extraYaml = "", env: Record<string, string> = {}): Promise<Setup> {
  const dir = tempDir("zt-rotate-master-");
  const config = writeConfig(
    dir,
    [
      "data_dir: ./data",
      "trust_domain: rotate.test",
      "routes:",
      "  - name: app",
      "    from: http://app.localhost",
      "    to: http://127.0.0.1:9",
      "policies: ./policies",
      extraYaml,
      "",
    ].join("\n"),
    { "main.cedar": 'permit (principal in Group::"ops", action, resource);\n' },
  );
  const init = await runZt(["--config", config, "init"], { env: { ...LISTEN, ...env } });
  expect(init.code, init.stderr).toBe(0);
  const add = await runZt(
    ["--config", config, "user", "add", "alice", "--group", "ops", "--password-stdin", "--json"],
    { input: `${PASSWORD}\n`, env },
  );
  expect(add.code, add.stderr).toBe(0);
  const totp = (JSON.parse(add.stdout) as { totp_secret: string }).totp_secret;
  return { dir, config, keyFile: join(dir, "data", "master.key"), totp };
}

function refused(r: { code: number; stderr: string }, code: string): void {
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** What only the CA key can do: issue an SVID. */
function issue(s: Setup, env: Record<string, string> = {}) {
  return runZt(
    [
      "--config",
      s.config,
      "cert",
      "issue",
      "--spiffe-id",
      "spiffe://rotate.test/svc",
      "--out",
      join(s.dir, `svid-${randomBytes(4).toString("hex")}`),
    ],
    { env },
  );
}

describe("zt keys rotate-master (SQLite)", () => {
  const ups: UpProcess[] = [];
  afterEach(async () => {
    for (const u of ups.splice(0)) await u.stop();
  });

  it("re-seals every secret under a new key file, never under a running zt; the old key opens nothing", async () => {
    const s = await setup();
    const oldKey = readFileSync(s.keyFile, "utf8").trim();

    const up = await startZtUp(["--config", s.config, "up"], { env: LISTEN });
    ups.push(up);
    const busy = await runZt(["--config", s.config, "keys", "rotate-master"]);
    refused(busy, "ZT_CONFLICT");
    expect(busy.stderr).toContain(String(up.child.pid));
    expect(readFileSync(s.keyFile, "utf8").trim()).toBe(oldKey);
    await up.stop();

    const r = await runZt(["--config", s.config, "keys", "rotate-master", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const counts = JSON.parse(r.stdout) as Record<string, number>;
    expect(counts["totp_secrets"]).toBe(1);
    expect(counts["ca_keys"]).toBeGreaterThanOrEqual(2);
    const newKey = readFileSync(s.keyFile, "utf8").trim();
    expect(newKey).not.toBe(oldKey);
    expect(statSync(s.keyFile).mode & 0o777).toBe(0o600);
    expect(existsSync(`${s.keyFile}.next`)).toBe(false);

    // The old key opens nothing: the CA refuses to sign with it.
    refused(await issue(s, { ZT_MASTER_KEY: oldKey }), "ZT_KEY_DECRYPT_FAILED");
    // The new one opens everything: the CA signs, alice logs in with her TOTP.
    expect((await issue(s)).code).toBe(0);
    const again = await startZtUp(["--config", s.config, "up"], { env: LISTEN });
    ups.push(again);
    const code = execFileSync("oathtool", ["--totp", "-b", s.totp]).toString().trim();
    const l = await login(
      Number(new URL(again.pepUrl).port),
      "app.localhost",
      "alice",
      PASSWORD,
      code,
    );
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    await again.stop();
    const tail = await runZt(["--config", s.config, "audit", "tail", "--json"]);
    expect(tail.stdout).toContain('"keys.rotate-master"');
  });

  it("finishes a rotation cut short before its commit, and zt refuses to start meanwhile", async () => {
    const s = await setup();
    const oldKey = readFileSync(s.keyFile, "utf8").trim();
    // As the command leaves it when cut right after writing the new key: store untouched.
    const pending = randomBytes(32).toString("base64");
    writeFileSync(`${s.keyFile}.next`, `${pending}\n`, { mode: 0o600 });
    refused(await runZt(["--config", s.config, "user", "list"]), "ZT_CONFLICT");
    const r = await runZt(["--config", s.config, "keys", "rotate-master", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { totp_secrets: number }).totp_secrets).toBe(1);
    expect(readFileSync(s.keyFile, "utf8").trim()).toBe(pending);
    expect((await issue(s)).code).toBe(0);
    refused(await issue(s, { ZT_MASTER_KEY: oldKey }), "ZT_KEY_DECRYPT_FAILED");
  });

  it("finishes a rotation cut short after its commit (the store already sealed with the new key)", async () => {
    const s = await setup();
    const oldKey = readFileSync(s.keyFile, "utf8").trim();
    const pending = randomBytes(32).toString("base64");
    writeFileSync(`${s.keyFile}.next`, `${pending}\n`, { mode: 0o600 });
    const store = await openStore({ dataDir: join(s.dir, "data") });
    await resealSecrets(
      store,
      new SecretBox(Buffer.from(oldKey, "base64")),
      new SecretBox(Buffer.from(pending, "base64")),
    );
    await store.close();
    refused(await runZt(["--config", s.config, "cert", "list"]), "ZT_CONFLICT");
    const r = await runZt(["--config", s.config, "keys", "rotate-master", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ signing_keys: 0, ca_keys: 0, totp_secrets: 0 });
    expect(readFileSync(s.keyFile, "utf8").trim()).toBe(pending);
    expect((await issue(s)).code).toBe(0);
  });

  it("with ZT_MASTER_KEY, writes the new key to --new-key-out and never over a file", async () => {
    const k1 = randomBytes(32).toString("base64");
    const env = { ZT_MASTER_KEY: k1 };
    const s = await setup("", env);
    expect(existsSync(s.keyFile)).toBe(false);
    refused(await runZt(["--config", s.config, "keys", "rotate-master"], { env }), "ZT_USAGE");
    refused(
      await runZt([
        "--config",
        s.config,
        "keys",
        "rotate-master",
        "--new-key-out",
        join(s.dir, "x"),
      ]),
      "ZT_USAGE",
    );
    const taken = join(s.dir, "taken.key");
    writeFileSync(taken, "keep me\n", { mode: 0o600 });
    refused(
      await runZt(["--config", s.config, "keys", "rotate-master", "--new-key-out", taken], { env }),
      "ZT_CONFLICT",
    );
    expect(readFileSync(taken, "utf8")).toBe("keep me\n");

    const out = join(s.dir, "new.key");
    const r = await runZt(["--config", s.config, "keys", "rotate-master", "--new-key-out", out], {
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const k2 = readFileSync(out, "utf8").trim();
    refused(await issue(s, env), "ZT_KEY_DECRYPT_FAILED");
    expect((await issue(s, { ZT_MASTER_KEY: k2 })).code).toBe(0);
  });
});

describe.each(ENGINES.filter((e) => e.name === "postgres"))(
  "zt keys rotate-master: $name",
  (engine) => {
    it("refuses while a replica is connected, and rotates once none is", async () => {
      const t = await engine.fresh();
      const ups: UpProcess[] = [];
      try {
        const k1 = randomBytes(32).toString("base64");
        const env = { ZT_MASTER_KEY: k1, ZT_DATABASE_URL: t.storeOptions.databaseUrl! };
        const s = await setup("", env);
        const up = await startZtUp(["--config", s.config, "up"], { env: { ...LISTEN, ...env } });
        ups.push(up);
        const out = join(s.dir, "new.key");
        const busy = await runZt(
          ["--config", s.config, "keys", "rotate-master", "--new-key-out", join(s.dir, "busy.key")],
          { env },
        );
        refused(busy, "ZT_CONFLICT");
        expect(busy.stderr).toContain("zt-events-listen");
        await up.stop();
        const r = await runZt(
          ["--config", s.config, "keys", "rotate-master", "--new-key-out", out],
          {
            env,
          },
        );
        expect(r.code, r.stderr).toBe(0);
        const k2 = readFileSync(out, "utf8").trim();
        refused(await issue(s, env), "ZT_KEY_DECRYPT_FAILED");
        expect((await issue(s, { ...env, ZT_MASTER_KEY: k2 })).code).toBe(0);
      } finally {
        for (const u of ups) await u.stop();
        await t.cleanup();
      }
    });
  },
);
