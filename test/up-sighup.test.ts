/**
 * `systemctl reload` (SIGHUP) while `zt up` is still starting: zt catches it from the
 * moment its start-up begins and reloads once running (SIGHUP's default action ended
 * the process, handlers being installed only after start-up). The real `zt up`; the
 * moment the process catches SIGHUP is read from /proc (SigCgt), not guessed by time.
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { ZT_BIN, ROOT, runZt, tempDir, writeConfig } from "./helpers/zt-process.js";

function catchesSighup(pid: number): boolean {
  try {
    const line = /^SigCgt:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return line !== null && (BigInt(`0x${line[1]}`) & 1n) === 1n; // bit 0: signal 1, SIGHUP
  } catch {
    return false;
  }
}

describe("zt up and SIGHUP during start-up", () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });

  it("catches SIGHUP before it is ready, survives it, and reloads once running", async () => {
    const dir = tempDir();
    const config = writeConfig(
      dir,
      `data_dir: ./data\ntrust_domain: hup.test\npolicies: ./policies\nroutes: []\n`,
      { "main.cedar": `permit (principal, action, resource);\n` },
    );
    const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    child = spawn(process.execPath, [ZT_BIN, "--config", config, "up"], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<string>((r) =>
      child!.once("exit", (code, signal) => r(`exit ${signal ?? code}`)),
    );

    // Poll until zt catches SIGHUP (or is ready, which would be too late).
    let caughtBeforeReady = false;
    for (let i = 0; i < 6000 && !out.includes("zt: ready"); i++) {
      if (catchesSighup(child.pid!)) {
        caughtBeforeReady = !out.includes("zt: ready");
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(caughtBeforeReady, out).toBe(true);
    child.kill("SIGHUP");

    const outcome = await Promise.race([
      exited,
      (async () => {
        while (!/policies reloaded/.test(out)) await new Promise((r) => setTimeout(r, 20));
        return "reloaded";
      })(),
    ]);
    expect(outcome, out).toBe("reloaded");
    expect(out).toContain("zt: ready");
    child.kill("SIGTERM");
    expect(await exited).toBe("exit 0");
  }, 60_000);
});
