/**
 * The `zt user …` and `zt mfa reset` commands end to end: the real `bin/zt` (built by
 * `npm run build`) in child processes over a real data directory. Checks JSON output,
 * exit codes from the error table, clear messages and no stack traces.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { openAppContext } from "../src/app/index.js";
import { loadConfig } from "../src/config/index.js";
import { IdentityService, totpCodeAt } from "../src/identity/index.js";
import { runZt, tempDir, writeConfig, type RunResult } from "./helpers/zt-process.js";

let dir: string;
let config: string;
const env = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };

const zt = (args: string[], input?: string): Promise<RunResult> =>
  runZt(["--config", config, ...args], { env, ...(input !== undefined ? { input } : {}) });

function expectCleanError(r: RunResult, exit: number, code: string, message: RegExp): void {
  expect(r.code, r.stderr).toBe(exit);
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  expect(r.stdout).toBe("");
}

beforeAll(async () => {
  dir = tempDir();
  config = writeConfig(dir, "data_dir: ./data\nmfa:\n  issuer: Acme\n", {});
  // Only zt init (or zt up) makes a store; the commands below refuse a data_dir without one.
  const init = await zt(["init"]);
  expect(init.code, init.stderr).toBe(0);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("zt user / zt mfa", () => {
  let alice: Record<string, unknown>;

  it("user add --json prints the enrolment once: generated password, totp_uri, totp_secret, ten backup codes", async () => {
    const r = await zt([
      "user",
      "add",
      "alice",
      "--group",
      "eng",
      "--group",
      "ops",
      "--email",
      "alice@example.test",
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    alice = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(alice).toMatchObject({
      name: "alice",
      groups: ["eng", "ops"],
      email: "alice@example.test",
      disabled: false,
    });
    expect(alice["password"]).toMatch(/^[A-Za-z0-9_-]{20}$/);
    expect(alice["totp_secret"]).toMatch(/^[A-Z2-7]{32}$/);
    const uri = new URL(alice["totp_uri"] as string);
    expect(uri.protocol).toBe("otpauth:");
    expect(uri.searchParams.get("issuer")).toBe("Acme");
    expect(uri.searchParams.get("secret")).toBe(alice["totp_secret"]);
    expect(alice["backup_codes"]).toHaveLength(10);
  });

  it("user add --password-stdin takes the password from a pipe (one trailing newline stripped), and it signs in", async () => {
    const r = await zt(
      ["user", "add", "bob", "--password-stdin", "--json"],
      "bob's long passphrase\n",
    );
    expect(r.code, r.stderr).toBe(0);
    const bob = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(bob["password"]).toBeUndefined();
    const ctx = await openAppContext(loadConfig(config), { env });
    try {
      const u = await new IdentityService(ctx).authenticate({
        username: "bob",
        password: "bob's long passphrase",
        totp: totpCodeAt(bob["totp_secret"] as string, Date.now()),
        sourceIp: "127.0.0.1",
      });
      expect(u.name).toBe("bob");
    } finally {
      await ctx.close();
    }
  });

  it("user add (human output) shows the otpauth URI and a terminal QR code", async () => {
    const r = await zt(["user", "add", "carol", "--group", "eng"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Created user carol in eng\./);
    expect(r.stdout).toMatch(/otpauth:\/\/totp\/Acme:carol\?/);
    expect(r.stdout).toMatch(/oathtool --totp -b [A-Z2-7]{32}/);
    expect(r.stdout).toMatch(/[▀▄█]{10,}/);
    expect(r.stdout).toMatch(/Password: +\S{20}/);
    expect(r.stdout.match(/\b[a-z2-7]{5}-[a-z2-7]{5}\b/g)).toHaveLength(10);
  });

  it("user list --json lists users with their groups", async () => {
    const r = await zt(["user", "list", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout) as { name: string; groups: string[]; disabled: boolean }[];
    expect(list.map((u) => [u.name, u.groups, u.disabled])).toEqual([
      ["alice", ["eng", "ops"], false],
      ["bob", [], false],
      ["carol", ["eng"], false],
    ]);
    const table = await zt(["user", "list"]);
    expect(table.stdout).toMatch(/^NAME +GROUPS +EMAIL +STATUS +CREATED_AT\n/);
  });

  it("user disable / enable", async () => {
    const d = await zt(["user", "disable", "bob", "--json"]);
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout)).toMatchObject({ name: "bob", disabled: true });
    const list = JSON.parse((await zt(["user", "list", "--json"])).stdout) as {
      name: string;
      disabled: boolean;
    }[];
    expect(list.find((u) => u.name === "bob")!.disabled).toBe(true);
    const e = await zt(["user", "enable", "bob"]);
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toBe("User bob is enabled.\n");
  });

  it("user groups --add/--remove", async () => {
    const r = await zt(["user", "groups", "alice", "--add", "admins", "--remove", "ops", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ name: "alice", groups: ["admins", "eng"] });
    const show = await zt(["user", "groups", "alice"]);
    expect(show.stdout).toBe("alice: admins, eng\n");
  });

  it("mfa reset --json gives a new secret and backup codes", async () => {
    const r = await zt(["mfa", "reset", "alice", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j["name"]).toBe("alice");
    expect(j["totp_secret"]).toMatch(/^[A-Z2-7]{32}$/);
    expect(j["totp_secret"]).not.toBe(alice["totp_secret"]);
    expect(j["backup_codes"]).toHaveLength(10);
  });

  it("user password and user delete", async () => {
    const p = await zt(["user", "password", "carol", "--json"]);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({
      name: "carol",
      password: expect.stringMatching(/^\S{20}$/),
    });
    const s = await zt(
      ["user", "password", "carol", "--password-stdin"],
      "carol's new passphrase\n",
    );
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toBe("Password of carol changed.\n");
    const add = await zt(["user", "add", "tmp", "--json"]);
    expect(add.code, add.stderr).toBe(0);
    const d = await zt(["user", "delete", "tmp"]);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toBe("User tmp deleted.\n");
  });

  describe("bad input: non-zero exit, clear message, no stack trace", () => {
    it("a bad user name", async () => {
      expectCleanError(
        await zt(["user", "add", "Bad Name!"]),
        64,
        "ZT_BAD_REQUEST",
        /name: expected a lowercase user name/,
      );
    });
    it("a duplicate user", async () => {
      expectCleanError(
        await zt(["user", "add", "alice", "--json"]),
        65,
        "ZT_USER_EXISTS",
        /alice already exists/,
      );
    });
    it("a bad group name", async () => {
      expectCleanError(
        await zt(["user", "add", "dave", "--group", "Eng"]),
        64,
        "ZT_BAD_REQUEST",
        /groups\[0\]: /,
      );
    });
    it("a bad e-mail address", async () => {
      expectCleanError(
        await zt(["user", "add", "dave", "--email", "x"]),
        64,
        "ZT_BAD_REQUEST",
        /email: /,
      );
    });
    it("a too-short password on stdin", async () => {
      expectCleanError(
        await zt(["user", "add", "dave", "--password-stdin"], "short\n"),
        64,
        "ZT_BAD_REQUEST",
        /password: expected at least 8/,
      );
    });
    it("a password no sign-in form can send: several lines, or a control character (was accepted, locking the user out)", async () => {
      expectCleanError(
        await zt(["user", "add", "dave", "--password-stdin"], "first line pass\nsecond line\n"),
        64,
        "ZT_USAGE",
        /--password-stdin: expected the password on one line/,
      );
      expectCleanError(
        await zt(["user", "add", "dave", "--password-stdin"], "long enough\u0000but NUL\n"),
        64,
        "ZT_BAD_REQUEST",
        /password: expected no control characters/,
      );
      expect((await zt(["user", "list", "--json"])).stdout).not.toContain("dave");
    });
    it("stdin that never ends (/dev/zero) is refused instead of read until memory runs out", async () => {
      const { openSync, closeSync } = await import("node:fs");
      const { spawn } = await import("node:child_process");
      const { ZT_BIN } = await import("./helpers/zt-process.js");
      const zero = openSync("/dev/zero", "r");
      try {
        const child = spawn(
          process.execPath,
          [ZT_BIN, "--config", config, "user", "add", "dave", "--password-stdin"],
          {
            env: { ...process.env, ...env },
            stdio: [zero, "pipe", "pipe"],
            timeout: 20_000,
            killSignal: "SIGKILL",
          },
        );
        let stdout = "";
        let stderr = "";
        child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
        child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
        const code = await new Promise<number>((r) => child.on("close", (c) => r(c ?? -1)));
        expectCleanError({ code, stdout, stderr }, 64, "ZT_PAYLOAD_TOO_LARGE", /stdin: more than/);
      } finally {
        closeSync(zero);
      }
    });
    it("an unknown user", async () => {
      expectCleanError(
        await zt(["user", "disable", "nobody"]),
        67,
        "ZT_USER_NOT_FOUND",
        /no user named nobody/,
      );
      expectCleanError(
        await zt(["mfa", "reset", "nobody"]),
        67,
        "ZT_USER_NOT_FOUND",
        /no user named nobody/,
      );
    });
    it("the same group in --add and --remove", async () => {
      expectCleanError(
        await zt(["user", "groups", "alice", "--add", "x", "--remove", "x"]),
        64,
        "ZT_USAGE",
        /both/,
      );
    });
    it("no master key (zt init not run)", async () => {
      const other = tempDir();
      const cfg = writeConfig(other, "data_dir: ./data\n", {});
      const r = await runZt(["--config", cfg, "user", "list"], { env: { ZT_MASTER_KEY: "" } });
      expectCleanError(
        r,
        78,
        "ZT_CONFIG_NOT_FOUND",
        /master key file .* not found; run `zt init` first/,
      );
      rmSync(other, { recursive: true, force: true });
    });
    it("a missing config file", async () => {
      const r = await runZt(["--config", join(dir, "nope.yaml"), "user", "list"], { env });
      expectCleanError(r, 78, "ZT_CONFIG_NOT_FOUND", /nope\.yaml not found/);
    });
    it("the failed attempts changed nothing", async () => {
      const list = JSON.parse((await zt(["user", "list", "--json"])).stdout) as { name: string }[];
      expect(list.map((u) => u.name)).toEqual(["alice", "bob", "carol"]);
    });
  });
});
