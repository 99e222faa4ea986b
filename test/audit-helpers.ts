import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";

export const ROOT = resolve(import.meta.dirname, "..");
export const ZT = join(ROOT, "bin", "zt");

/** Builds dist/ once if the audit CLI is not compiled yet (`npm test` builds first anyway). */
export function ensureBuilt(): void {
  if (!existsSync(join(ROOT, "dist", "src", "cli", "commands", "audit.js"))) {
    try {
      execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "ignore" });
    } catch {
      /* noEmitOnError is off: files are emitted even when another capability has type errors */
    }
  }
}

export interface TestEnv {
  dir: string;
  dataDir: string;
  config: string;
  env: Record<string, string>;
}

/** A temp folder with a zt.yaml and a master key in the environment. */
export function makeEnv(extraYaml = ""): TestEnv {
  const dir = mkdtempSync(join(tmpdir(), "zt-audit-"));
  const dataDir = join(dir, "data");
  const config = join(dir, "zt.yaml");
  writeFileSync(config, `data_dir: ${dataDir}\ntrust_domain: audit.test\n${extraYaml}`);
  const env = { ...process.env, ZT_MASTER_KEY: randomBytes(32).toString("hex") } as Record<
    string,
    string
  >;
  delete env["ZT_CONFIG"];
  return { dir, dataDir, config, env };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI: `node bin/zt -c <config> …args`. */
export function runZt(t: TestEnv, args: string[]): Promise<RunResult> {
  return new Promise((res) => {
    execFile(
      process.execPath,
      [ZT, "-c", t.config, ...args],
      { env: t.env, cwd: t.dir, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        res({ code, stdout, stderr });
      },
    );
  });
}
