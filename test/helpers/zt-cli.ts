/**
 * Driving the real `zt` CLI (`bin/zt`, built by `npm run build`) from a test: a fresh
 * master key, a `zt` bound to one zt.yaml, the checks every CLI test makes on an answer
 * (exit 0, JSON on stdout, or a clean error with a stable code and no stack trace), and
 * the few commands such tests run to set a store up.
 */
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, expect } from "vitest";
import { runZt, tempDir, writeConfig, type RunResult } from "./zt-process.js";

/** A password the identity service accepts. */
export const TEST_PASSWORD = "pw-correct-horse-battery";

/** An environment with a fresh random `ZT_MASTER_KEY`. */
export function masterKeyEnv(): Record<string, string> {
  return { ZT_MASTER_KEY: randomBytes(32).toString("base64") };
}

/** `zt --config <config> ...args`, with `input` on stdin. */
export type ZtCli = (args: string[], input?: string) => Promise<RunResult>;

/**
 * A `zt` bound to one zt.yaml; `config` may be a getter for a path a `beforeAll` sets.
 *
 * @example
 * const zt = ztCli(config, env);
 * expectOk(await zt(["user", "add", "bob", "--password-stdin"], TEST_PASSWORD));
 */
export function ztCli(config: string | (() => string), env: Record<string, string>): ZtCli {
  return (args, input) =>
    runZt(["--config", typeof config === "string" ? config : config(), ...args], {
      env,
      ...(input !== undefined ? { input } : {}),
    });
}

/** The command exited 0 (else the test fails, showing its stderr). */
export function expectOk(r: RunResult): RunResult {
  expect(r.code, r.stderr).toBe(0);
  return r;
}

/** The command exited 0 with a JSON object on stdout; returns it. */
export function okJson(r: RunResult): Record<string, unknown> {
  return JSON.parse(expectOk(r).stdout) as Record<string, unknown>;
}

/** The command failed with `exit`, a `zt: error CODE: ` line matching `message`, and no stack trace. */
export function expectCleanError(r: RunResult, exit: number, code: string, message: RegExp): void {
  expect(r.code, r.stderr).toBe(exit);
  expect(r.stderr).toMatch(new RegExp(`^zt: error ${code}: `));
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

/** Adds each user (password TEST_PASSWORD) and puts it in its groups. */
export async function addUsers(
  zt: ZtCli,
  users: readonly (readonly [name: string, groups: readonly string[]])[],
): Promise<void> {
  for (const [name, groups] of users) {
    expectOk(await zt(["user", "add", name, "--password-stdin"], TEST_PASSWORD));
    for (const g of groups) expectOk(await zt(["user", "groups", name, "--add", g]));
  }
}

export interface ZtSuiteStore {
  /** The temporary directory holding zt.yaml (and the store, under ./data). */
  readonly dir: string;
  readonly config: string;
  zt: ZtCli;
}

/**
 * A store shared by the tests of the enclosing describe: its beforeAll writes zt.yaml
 * (`data_dir: ./data`, then `yaml`) in a fresh temporary directory, runs `zt init` and adds
 * `users`; its afterAll removes the directory.
 */
export function ztStoreForSuite(o: {
  prefix: string;
  env: Record<string, string>;
  yaml: string;
  users: readonly (readonly [name: string, groups: readonly string[]])[];
}): ZtSuiteStore {
  let dir: string | undefined;
  let config = "";
  const zt = ztCli(() => config, o.env);
  beforeAll(async () => {
    dir = tempDir(o.prefix);
    config = writeConfig(dir, `data_dir: ./data\n${o.yaml}`, {});
    expectOk(await zt(["init"]));
    await addUsers(zt, o.users);
  }, 180_000);
  afterAll(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir!;
    },
    get config() {
      return config;
    },
    zt,
  };
}

/** `zt access request --json` as `as`; returns the request it prints. */
export async function requestAccess(
  zt: ZtCli,
  o: { as: string; resource: string; reason: string; ttl?: string },
): Promise<Record<string, unknown>> {
  return okJson(
    await zt([
      "access",
      "request",
      "--as",
      o.as,
      "--resource",
      o.resource,
      "--reason",
      o.reason,
      ...(o.ttl !== undefined ? ["--ttl", o.ttl] : []),
      "--json",
    ]),
  );
}

/** `zt device enroll --json` as `as`, its key written to `keyDir`; returns the device it prints. */
export async function enrollDevice(
  zt: ZtCli,
  o: { as: string; keyDir: string; name: string },
): Promise<Record<string, unknown>> {
  return okJson(
    await zt(["device", "enroll", "--as", o.as, "--key-dir", o.keyDir, "--name", o.name, "--json"]),
  );
}

/**
 * For each case, initialises a store under a bare zt.yaml, then adds `section` to it and
 * runs `command`: zt must refuse the config with exit 78 ZT_CONFIG_INVALID naming `keyPath`.
 */
export async function expectConfigKeysRefused(
  env: Record<string, string>,
  cases: readonly (readonly [section: string, command: readonly string[], keyPath: string])[],
): Promise<void> {
  for (const [section, command, keyPath] of cases) {
    const dir = tempDir("zt-durations-");
    try {
      const config = writeConfig(dir, `data_dir: ./data\n`, {});
      expectOk(await runZt(["--config", config, "init"], { env }));
      writeFileSync(config, `data_dir: ./data\n${section}`);
      const r = await runZt(["--config", config, ...command], { env });
      const named = new RegExp(`${keyPath.replace(/\./g, "\\.")}: `);
      expectCleanError(r, 78, "ZT_CONFIG_INVALID", named);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
