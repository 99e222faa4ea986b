import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dirname, "..", "..");
export const ZT_BIN = join(ROOT, "bin", "zt");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `zt` CLI and collects its output. */
export function runZt(
  args: string[],
  options: {
    env?: Record<string, string>;
    input?: string;
    cwd?: string;
    /** Kill the process (SIGKILL) if it runs longer: a hang then fails its test, not the run. */
    timeoutMs?: number;
  } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [ZT_BIN, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
      ...(options.timeoutMs !== undefined
        ? { timeout: options.timeoutMs, killSignal: "SIGKILL" as const }
        : {}),
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolvePromise({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(options.input ?? "");
  });
}

export interface UpProcess {
  child: ChildProcess;
  output: () => string;
  pepUrl: string;
  apiUrl: string;
  stop(): Promise<void>;
}

/** Starts `zt up` as a real process and waits for "zt: ready". */
export function startZtUp(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<UpProcess> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [ZT_BIN, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`zt up did not become ready:\n${out}`));
    }, options.timeoutMs ?? 60_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes("zt: ready")) {
        clearTimeout(timer);
        const pep = /PEP listening on (\S+)/.exec(out);
        const api = /API listening on (\S+)/.exec(out);
        resolvePromise({
          child,
          output: () => out,
          pepUrl: pep![1]!,
          apiUrl: api![1]!,
          stop: () =>
            new Promise<void>((r) => {
              if (child.exitCode !== null || child.signalCode !== null) return r();
              child.once("exit", () => r());
              child.kill("SIGTERM");
            }),
        });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`zt up exited with ${code}:\n${out}`));
    });
  });
}

export function tempDir(prefix = "zt-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes a zt.yaml + policies folder into a fresh temp dir; returns the config path. */
export function writeConfig(dir: string, yaml: string, policies: Record<string, string>): string {
  mkdirSync(join(dir, "policies"), { recursive: true });
  for (const [name, text] of Object.entries(policies))
    writeFileSync(join(dir, "policies", name), text);
  const p = join(dir, "zt.yaml");
  writeFileSync(p, yaml);
  return p;
}

/**
 * The PEP worker processes of a `zt up` primary (its children running pep-worker.js),
 * with `listen.proxy_workers` > 1.
 */
export function workerPids(primary: number): number[] {
  let out = "";
  try {
    out = execFileSync("pgrep", ["-P", String(primary)], { encoding: "utf8" });
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
  return out
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("pep-worker");
      } catch {
        return false;
      }
    });
}

/** The operator token tests give zt (`audit.metrics_token_file`): it opens /readyz's detail. */
export const OPERATOR_TOKEN = "zt-test-operator-token-3f9a1c";
/** The header that presents {@link OPERATOR_TOKEN}. */
export const OPERATOR_AUTH = { authorization: `Bearer ${OPERATOR_TOKEN}` } as const;
let operatorTokenFile: string | undefined;

/** `env` plus the ZT_… variable that points zt at a file holding {@link OPERATOR_TOKEN}. */
export function withOperatorToken(env: Record<string, string>): Record<string, string> {
  if (operatorTokenFile === undefined) {
    operatorTokenFile = join(tempDir("zt-operator-"), "operator.token");
    writeFileSync(operatorTokenFile, OPERATOR_TOKEN + "\n");
  }
  return { ...env, ZT_AUDIT__METRICS_TOKEN_FILE: operatorTokenFile };
}
