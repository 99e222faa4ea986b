/**
 * The real `bin/zt` given input a sweep of every command and option found mishandled:
 * each case is refused at once, in one line naming what was wrong, with the exit code of
 * its stable error code — never a hang, a silent reading of the value as something else,
 * or a store changed under a key it was not sealed with.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, rmSync, writeFileSync } from "node:fs";
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
