/**
 * Commit-confirmed rollout through the real CLI (`bin/zt seg apply/confirm/status`) and the
 * real `nft` inside network namespaces this test creates: a ruleset that cuts the
 * operator's SSH port is rolled back by the timer process unless confirmed.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../src/core/clock.js";
import { rollbackIfPending, systemNftRunner } from "../src/segment/index.js";
import { NetnsLab } from "../src/segment/netns-lab.js";

const execFileP = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");
const ZT = join(ROOT, "bin", "zt");

const avail = await NetnsLab.available();
if (!avail.ok)
  console.warn(
    `\n\n*** SKIPPING segment rollout tests: no network namespaces or nft: ${avail.reason} ***\n\n`,
  );

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function zt(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [ZT, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Waits for the state file to reach a status (the timer process changes it). */
async function waitForStatus(dir: string, status: string, limitMs = 90_000): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < limitMs) {
    const st = await readFile(join(dir, "state.json"), "utf8").catch(() => "{}");
    if ((JSON.parse(st) as { status?: string }).status === status) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`state never became ${status}`);
}

const model = (withSsh: boolean) => `segments:
  operator: { hosts: [${NetnsLab.addr4(0)}] }
  server: { hosts: [${NetnsLab.addr4(1)}] }
flows:
  - { from: operator, to: server, ports: [${withSsh ? "tcp/22" : "tcp/8443"}] }
mode: { default: enforce }
`;

describe.skipIf(!avail.ok)(
  "zt seg apply / confirm / rollback in a namespace",
  { timeout: 180_000 },
  () => {
    let lab: NetnsLab;
    let dir: string;
    let stateDir: string;
    let good: string;
    let bad: string;

    beforeAll(async () => {
      if (!existsSync(join(ROOT, "dist", "src", "cli", "commands", "seg.js"))) {
        await execFileP("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT }).catch(
          () => undefined,
        );
      }
      lab = await NetnsLab.create(2);
      await lab.listen([22, 8443], []);
      dir = await mkdtemp(join(tmpdir(), "zt-seg-"));
      stateDir = join(dir, "state");
      good = join(dir, "good.yaml");
      bad = join(dir, "bad.yaml");
      await writeFile(good, model(true));
      await writeFile(bad, model(false));
    });

    afterAll(async () => {
      await lab?.destroy();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const server = () => lab.hosts[1]!;
    const ssh = async () =>
      (
        await lab.probe(lab.hosts[0]!, [{ addr: NetnsLab.addr4(1), proto: "tcp", port: 22 }], 1500)
      )[0];

    it("rolls back a ruleset that cuts SSH when it is not confirmed in time", async () => {
      const a = await zt([
        "seg",
        "apply",
        good,
        "--segment",
        "server",
        "--netns",
        server(),
        "--state-dir",
        stateDir,
        "--confirm-within",
        "0",
      ]);
      expect(a.stderr).toBe("");
      expect(a.code).toBe(0);
      expect(await ssh()).toBe(true);

      const b = await zt(
        [
          "seg",
          "apply",
          bad,
          "--segment",
          "server",
          "--netns",
          server(),
          "--confirm-within",
          "15s",
        ],
        {
          ZT_SEG_STATE_DIR: stateDir,
        },
      );
      expect(b.code).toBe(0);
      expect(b.stdout).toMatch(/zt seg confirm/);
      expect(await ssh()).toBe(false); // locked out…
      await waitForStatus(stateDir, "rolled-back");
      expect(await ssh()).toBe(true); // …but only until the window closed

      const st = await zt([
        "seg",
        "status",
        "--netns",
        server(),
        "--state-dir",
        stateDir,
        "--json",
      ]);
      const status = JSON.parse(st.stdout) as {
        state: { status: string };
        live: boolean;
        rules: { rule: string; packets: number }[];
      };
      expect(status.state.status).toBe("rolled-back");
      expect(status.live).toBe(true);
      // the restored table is the first one: its flow rule counts the SSH connections
      expect(status.rules.find((r) => r.rule === "allowed flows")?.packets).toBeGreaterThanOrEqual(
        2,
      );

      const late = await zt(["seg", "confirm", "--state-dir", stateDir]);
      expect(late.code).toBe(65);
      expect(late.stderr).toMatch(/ZT_CONFLICT: too late/);
    });

    it("keeps a confirmed ruleset: the timer finds nothing to roll back", async () => {
      const b = await zt([
        "seg",
        "apply",
        bad,
        "--segment",
        "server",
        "--netns",
        server(),
        "--state-dir",
        stateDir,
        "--confirm-within",
        "30s",
      ]);
      expect(b.code).toBe(0);
      const state = JSON.parse(await readFile(join(stateDir, "state.json"), "utf8")) as {
        token: string;
      };
      const c = await zt(["seg", "confirm", "--state-dir", stateDir]);
      expect(c.code).toBe(0);
      expect(c.stdout).toMatch(/^confirmed /);
      // what the timer does when its window ends, run now
      const rolled = await rollbackIfPending({
        stateDir,
        nft: systemNftRunner({ netns: server() }),
        clock: systemClock,
        token: state.token,
      });
      expect(rolled).toBe(false);
      expect(await ssh()).toBe(false);
      const st = await zt(["seg", "status", "--netns", server(), "--state-dir", stateDir]);
      expect(st.stdout).toMatch(/\(confirmed\)/);
      expect(st.stdout).toMatch(/allowed flows/);
    });

    it("refuses a ruleset nft cannot load and leaves the live table alone", async () => {
      const broken = join(dir, "broken.nft");
      await writeFile(
        broken,
        "table inet zt {}\ndelete table inet zt\ntable inet zt {\n\tchain input {\n\t\tthis is not nft\n\t}\n}\n",
      );
      const before = await lab.exec(server(), "nft", ["list", "table", "inet", "zt"]);
      const r = await zt([
        "seg",
        "apply",
        broken,
        "--netns",
        server(),
        "--state-dir",
        stateDir,
        "--confirm-within",
        "0",
      ]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ZT_SEG_APPLY_FAILED/);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
      expect(await lab.exec(server(), "nft", ["list", "table", "inet", "zt"])).toBe(before);
    });

    it("an apply that fails right after nft -f is still rolled back: the timer was armed before", async () => {
      const a = await zt([
        "seg",
        "apply",
        good,
        "--segment",
        "server",
        "--netns",
        server(),
        "--state-dir",
        stateDir,
        "--confirm-within",
        "0",
      ]);
      expect(a.code).toBe(0);
      expect(await ssh()).toBe(true);
      // the step after `nft -f` (saving current.nft) fails, as if the CLI died there
      await rm(join(stateDir, "current.nft"), { force: true });
      await mkdir(join(stateDir, "current.nft"));
      try {
        const b = await zt([
          "seg",
          "apply",
          bad,
          "--segment",
          "server",
          "--netns",
          server(),
          "--state-dir",
          stateDir,
          "--confirm-within",
          "5s",
        ]);
        expect(b.code).not.toBe(0);
        expect(await ssh()).toBe(false); // the bad ruleset was loaded…
        await waitForStatus(stateDir, "rolled-back", 60_000);
        expect(await ssh()).toBe(true); // …and rolled back by the timer armed before the load
      } finally {
        await rm(join(stateDir, "current.nft"), { recursive: true, force: true });
      }
    });
  },
);

describe.skipIf(!avail.ok)(
  "zt seg rollback / apply name the namespace of the pending apply",
  { timeout: 120_000 },
  () => {
    // Only lab namespaces are named here: without the fix, a rollback with another --netns
    // loads the saved table there (never into this machine's own namespace).
    it("a rollback or apply for another namespace is refused; the pending apply stays armed", async () => {
      const lab = await NetnsLab.create(2);
      const dir = await mkdtemp(join(tmpdir(), "zt-seg-ns-"));
      const stateDir = join(dir, "state");
      try {
        const [a, b] = [lab.hosts[0]!, lab.hosts[1]!];
        const file = join(dir, "m.yaml");
        await writeFile(file, model(true));
        const apply = (ns: string, within: string) =>
          zt([
            "seg",
            "apply",
            file,
            "--segment",
            "server",
            "--netns",
            ns,
            "--state-dir",
            stateDir,
            "--confirm-within",
            within,
          ]);
        expect((await apply(a, "0")).code).toBe(0); // confirmed: previous.nft holds this table
        expect((await apply(a, "60s")).code).toBe(0); // pending in a
        const before = await readFile(join(stateDir, "state.json"), "utf8");

        const rb = await zt(["seg", "rollback", "--netns", b, "--state-dir", stateDir]);
        expect(rb.code, rb.stdout).toBe(65);
        expect(rb.stderr).toMatch(new RegExp(`^zt: error ZT_CONFLICT: .*network namespace "${a}"`));
        // b got nothing, and the apply in a is still pending (its timer will roll it back)
        expect(await lab.exec(b, "nft", ["list", "tables"])).not.toMatch(/inet zt/);
        expect(await readFile(join(stateDir, "state.json"), "utf8")).toBe(before);

        const other = await apply(b, "60s");
        expect(other.code).toBe(65);
        expect(other.stderr).toMatch(new RegExp(`ZT_CONFLICT: .*network namespace "${a}"`));
        expect(await lab.exec(b, "nft", ["list", "tables"])).not.toMatch(/inet zt/);
        expect(await readFile(join(stateDir, "state.json"), "utf8")).toBe(before);

        const ok = await zt(["seg", "rollback", "--netns", a, "--state-dir", stateDir]);
        expect(ok.stdout).toBe("rolled back\n");
      } finally {
        await lab.destroy();
        await rm(dir, { recursive: true, force: true });
      }
    });
  },
);

describe.skipIf(!avail.ok)("zt seg status in a namespace that is not there", () => {
  it("fails naming the namespace instead of reporting `table inet zt: absent`", async () => {
    const stateDir = await mkdtemp(join(tmpdir(), "zt-seg-nons-"));
    try {
      const ns = `zt-missing-${process.pid}`;
      const r = await zt(["seg", "status", "--netns", ns, "--state-dir", stateDir]);
      expect(r.code, r.stdout).not.toBe(0);
      expect(r.stdout).not.toContain("absent");
      expect(r.stderr).toMatch(
        new RegExp(`^zt: error ZT_SEG_APPLY_FAILED: .*network namespace "${ns}"`),
      );
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
