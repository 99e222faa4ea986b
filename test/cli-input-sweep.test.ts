/**
 * The real `bin/zt` given input a sweep of every command and option found mishandled:
 * each case is refused at once, in one line naming what was wrong, with the exit code of
 * its stable error code — never a hang, a silent reading of the value as something else,
 * or a store changed under a key it was not sealed with.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exitCodeFor, type ZtErrorCode } from "../src/core/errors.js";
import { runZt, tempDir, writeConfig, ZT_BIN, type RunResult } from "./helpers/zt-process.js";

let dir: string;
let config: string;
const masterKey = randomBytes(32).toString("base64");
const env = { ZT_MASTER_KEY: masterKey };

/** Every case runs with a bound: a command that hangs fails its test instead of the run. */
const zt = (args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> =>
  runZt(["--config", config, ...args], {
    env: { ...env, ...extraEnv },
    cwd: dir,
    timeoutMs: 20_000,
  });

function expectCleanError(r: RunResult, code: ZtErrorCode, message: RegExp): void {
  expect(r.stderr, `exit ${r.code}`).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.code, r.stderr).toBe(exitCodeFor(code));
  expect(r.stderr).toMatch(message);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

beforeAll(async () => {
  dir = tempDir("zt-cli-sweep-");
  config = writeConfig(dir, "data_dir: ./data\n", { "default.cedar": "" });
  const init = await zt(["init"]);
  expect(init.code, init.stderr).toBe(0);
}, 60_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("directories zt makes, under a parent that cannot hold them (/proc)", () => {
  it("zt init with such a data_dir is refused naming it (Node's recursive mkdir spun for ever)", async () => {
    const other = tempDir("zt-cli-sweep-proc-");
    try {
      const cfg = writeConfig(other, "data_dir: /proc/zt-sweep-data\n", {});
      const r = await runZt(["--config", cfg, "init"], {
        env,
        cwd: other,
        timeoutMs: 20_000,
      });
      expect(r.stderr).toMatch(/^zt: error ZT_\w+: .*\/proc\/zt-sweep-data/);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.code, r.stderr).not.toBe(exitCodeFor("ZT_INTERNAL"));
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  }, 30_000);

  it("zt up --demo --demo-dir /proc/… is refused naming it, instead of spinning for ever", async () => {
    const r = await zt(["up", "--demo", "--demo-dir", "/proc/zt-sweep-demo"]);
    expect(r.stderr).toMatch(/^zt: error ZT_\w+: .*\/proc\/zt-sweep-demo/);
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.code, r.stderr).not.toBe(exitCodeFor("ZT_INTERNAL"));
  }, 30_000);
});

describe("a master key that does not open the store", () => {
  it("zt user add with another ZT_MASTER_KEY is refused and adds nobody (it sealed the user's TOTP secret under a key the store does not have, and blocked zt keys rotate-master)", async () => {
    const other = randomBytes(32).toString("base64");
    const r = await zt(["user", "add", "mallory", "--no-qr"], { ZT_MASTER_KEY: other });
    expectCleanError(r, "ZT_KEY_DECRYPT_FAILED", /ZT_MASTER_KEY.*does not open/);
    expect(r.stdout).toBe("");
    const list = await zt(["user", "list", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).not.toContain("mallory");
  }, 30_000);

  it("a master_key_file holding another key is refused naming the file", async () => {
    const other = tempDir("zt-cli-sweep-key-");
    try {
      const keyFile = join(other, "master.key");
      writeFileSync(keyFile, randomBytes(32).toString("base64") + "\n", { mode: 0o600 });
      const r = await runZt(["--config", config, "ban", "add", "192.0.2.7", "--for", "1h"], {
        env: { ZT_MASTER_KEY_FILE: keyFile },
        cwd: dir,
        timeoutMs: 20_000,
      });
      expectCleanError(r, "ZT_KEY_DECRYPT_FAILED", new RegExp(`${keyFile}.*does not open`));
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("numbers that are not plain decimal", () => {
  it.each(["0x10", "1e3", " 9000", "9000.0"])(
    "zt up --demo-port %j is refused instead of read as another port",
    async (value) => {
      const r = await zt(["up", "--demo", "--demo-port", value, "--demo-dir", join(dir, "demo")]);
      expectCleanError(r, "ZT_USAGE", /--demo-port: expected a port number/);
      expect(existsSync(join(dir, "demo"))).toBe(false);
    },
    30_000,
  );
});

describe("policy files that never end", () => {
  it("zt policy fmt --check /dev/zero is refused naming it, instead of read until memory runs out", async () => {
    const r = await zt(["policy", "fmt", "--check", "/dev/zero"]);
    expectCleanError(r, "ZT_PAYLOAD_TOO_LARGE", /\/dev\/zero: larger than/);
  }, 30_000);
});

describe("zt user add --password-stdin", () => {
  it("refuses bytes that are not UTF-8 instead of storing the password with each replaced by U+FFFD", async () => {
    // runZt writes stdin as a string; these bytes must reach zt as they are.
    const r = await new Promise<RunResult>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [ZT_BIN, "--config", config, "user", "add", "latin1", "--password-stdin", "--no-qr"],
        { cwd: dir, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
      child.stdin.end(Buffer.from("p\xe4ssw\xf6rd-long-enough\n", "latin1"));
    });
    expectCleanError(r, "ZT_USAGE", /stdin: not valid UTF-8/);
    const list = await zt(["user", "list", "--json"]);
    expect(list.stdout).not.toContain("latin1");
  }, 30_000);
});

describe("zt audit verify --checkpoint", () => {
  it("refuses a file with no checkpoint note in it, instead of passing with nothing anchored", async () => {
    const empty = join(dir, "empty-witness");
    writeFileSync(empty, "");
    const r = await zt(["audit", "verify", "--checkpoint", empty]);
    expectCleanError(r, "ZT_AUDIT_CHECKPOINT_INVALID", new RegExp(`${empty}: no checkpoint note`));
  }, 30_000);
});

describe("zt ban add user:<name>", () => {
  it("refuses a name no user has (user:alcie reported `banned` while alice signed in on)", async () => {
    const r = await zt(["ban", "add", "user:nobody-of-that-name", "--for", "1h"]);
    expectCleanError(r, "ZT_USER_NOT_FOUND", /nobody-of-that-name/);
    const list = await zt(["ban", "list", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).not.toContain("nobody-of-that-name");
  }, 30_000);
});

describe("zt seg status --state-dir", () => {
  it("a --state-dir that is a file is named, not reported as `applied: nothing recorded`", async () => {
    const file = join(dir, "not-a-state-dir");
    writeFileSync(file, "x\n");
    const r = await zt(["seg", "status", "--state-dir", file]);
    expectCleanError(r, "ZT_USAGE", new RegExp(`${file}.*not a directory`));
    expect(r.stdout).toBe("");
  }, 30_000);
});

describe("zt keys rotate assertion", () => {
  it("refuses --keep-previous with --retire-now instead of retiring the old key at once, the --keep-previous dropped", async () => {
    const before = await zt(["keys", "list", "--json"]);
    expect(before.code, before.stderr).toBe(0);
    const r = await zt(["keys", "rotate", "assertion", "--keep-previous", "1h", "--retire-now"]);
    expectCleanError(r, "ZT_USAGE", /--keep-previous or --retire-now, not both/);
    const after = await zt(["keys", "list", "--json"]);
    expect(after.stdout).toBe(before.stdout);
  }, 30_000);

  it("refuses a --keep-previous over a day instead of publishing the old key for decades (what it signed lives 60 s)", async () => {
    const before = await zt(["keys", "list", "--json"]);
    expect(before.code, before.stderr).toBe(0);
    const r = await zt(["keys", "rotate", "assertion", "--keep-previous", "9999d"]);
    expectCleanError(r, "ZT_USAGE", /--keep-previous: at most 24h .*"9999d"/);
    const after = await zt(["keys", "list", "--json"]);
    expect(after.stdout).toBe(before.stdout);
  }, 30_000);
});

describe("environment overrides", () => {
  it("ZT_<SECTION>__<KEY> with a section zt does not have is refused naming the variable (ZT_SESION__TTL was dropped without a word)", async () => {
    const r = await zt(["user", "list"], { ZT_SESION__TTL: "5m" });
    expectCleanError(r, "ZT_CONFIG_INVALID", /ZT_SESION__TTL: no setting "sesion"/);
  }, 30_000);
});

describe("zt cert revoke --spiffe-id", () => {
  it("says a value that is not a SPIFFE ID is not one, instead of `no unrevoked certificate matches`", async () => {
    const r = await zt(["cert", "revoke", "--spiffe-id", "web-frontend"]);
    expectCleanError(r, "ZT_PKI_SPIFFE_ID_INVALID", /not a valid SPIFFE ID .*"web-frontend"/);
  }, 30_000);
});

describe("zt seg rollback", () => {
  it("with nothing applied fails with a stable code, as zt seg confirm does (it printed `nothing pending: not rolled back` and exited 1)", async () => {
    const none = join(dir, "no-seg-state");
    const r = await zt(["seg", "rollback", "--state-dir", none]);
    expectCleanError(
      r,
      "ZT_NOT_FOUND",
      new RegExp(`nothing was applied \\(no state in ${none}\\); nothing to roll back`),
    );
    expect(r.stdout).toBe("");
  }, 30_000);
});

describe("zt seg apply FILE", () => {
  it("a FILE that is a directory is named as one (it was `ZT_NOT_FOUND: DIR: cannot read`), and nothing is applied", async () => {
    const model = join(dir, "model-dir.yaml");
    mkdirSync(model);
    const state = join(dir, "apply-dir-state");
    const r = await zt(["seg", "apply", model, "--state-dir", state]);
    expectCleanError(r, "ZT_USAGE", new RegExp(`${model}: is a directory, expected a file`));
    expect(existsSync(state)).toBe(false);
  }, 30_000);
});

describe("a huge value quoted in an error", () => {
  const huge = "a".repeat(100_000);
  it.each([
    [
      "zt cert revoke --reason",
      ["cert", "revoke", "0123456789abcdef", "--reason", huge],
      "ZT_BAD_REQUEST",
      /unknown revocation reason "a{100}"…?;/,
    ],
    [
      "zt cert token ENTRY",
      ["cert", "token", huge],
      "ZT_NOT_FOUND",
      /no registration entry "a{100}"/,
    ],
    [
      "zt seg compile --host",
      ["seg", "compile", "-m", "seg-huge.yaml", "--host", huge],
      "ZT_SEG_MODEL_INVALID",
      /--host: no segment lists host "a{100}"/,
    ],
    [
      "zt seg compile --segment",
      ["seg", "compile", "-m", "seg-huge.yaml", "--segment", huge],
      "ZT_SEG_MODEL_INVALID",
      /--segment: unknown segment "a{100}"…$/m,
    ],
    [
      "zt seg compile -t",
      ["seg", "compile", "-m", "seg-huge.yaml", "-t", huge],
      "ZT_USAGE",
      /--target: expected nftables or k8s, got "a{100}"…$/m,
    ],
    [
      "zt seg compile --pod-cidr",
      ["seg", "compile", "-m", "seg-huge.yaml", "-t", "k8s", "--pod-cidr", huge],
      "ZT_USAGE",
      /--pod-cidr: not an IPv4 or IPv6 address or CIDR: "a{100}"…$/m,
    ],
    [
      "zt cert issue --ttl",
      [
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/w",
        "--out",
        "huge-ttl",
        "--ttl",
        huge,
      ],
      "ZT_BAD_REQUEST",
      /--ttl: expected a duration like 30s, 15m, 1h or 7d, got "a{100}"…$/m,
    ],
  ] as const)(
    "%s is cut short, not echoed whole (100 KB on one line)",
    async (_name, args, code, message) => {
      writeFileSync(
        join(dir, "seg-huge.yaml"),
        "segments:\n  web: { hosts: [10.0.0.1] }\nflows: []\n",
      );
      const r = await zt([...args]);
      expectCleanError(r, code, message);
      expect(r.stderr.length).toBeLessThan(1_000);
    },
    30_000,
  );
});

describe("zt cert revoke --reason", () => {
  it.each(["toString", "constructor", "__proto__", "hasOwnProperty"])(
    "refuses %j, a name every object has (it revoked, and the CRL entry got an empty reason code)",
    async (reason) => {
      const out = join(dir, `svid-${reason}`);
      const issued = await zt([
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://example.test/reason",
        "--out",
        out,
        "--json",
      ]);
      expect(issued.code, issued.stderr).toBe(0);
      const { serial } = JSON.parse(issued.stdout) as { serial: string };
      const r = await zt(["cert", "revoke", serial, "--reason", reason]);
      expectCleanError(r, "ZT_BAD_REQUEST", new RegExp(`unknown revocation reason "${reason}"`));
      const list = JSON.parse((await zt(["cert", "list", "--json"])).stdout) as {
        serial: string;
        status: string;
      }[];
      expect(list.find((c) => c.serial === serial)?.status).toBe("valid");
    },
    60_000,
  );
});
