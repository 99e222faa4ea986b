/**
 * Commit-confirmed rollout through the real CLI (`bin/zt seg apply/confirm/status`) and the
 * real `nft` inside network namespaces this test creates: a ruleset that cuts the
 * operator's SSH port is rolled back by the timer process unless confirmed.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
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

/** `zt seg apply FILE --segment server --netns NS --state-dir DIR --confirm-within WITHIN`. */
function applyToServer(
  file: string,
  ns: string,
  stateDir: string,
  within: string,
  env: Record<string, string> = {},
): Promise<CliResult> {
  return zt(
    [
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
    ],
    env,
  );
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
      const a = await applyToServer(good, server(), stateDir, "0");
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
      const b = await applyToServer(bad, server(), stateDir, "30s");
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
      // and `zt seg rollback` says there is nothing pending, with a stable code
      const r = await zt(["seg", "rollback", "--netns", server(), "--state-dir", stateDir]);
      expect(r.stderr).toMatch(
        /^zt: error ZT_CONFLICT: nothing pending: the last apply \([0-9a-f]{12} from .*bad\.yaml\) was confirmed at /,
      );
      expect(r.code, r.stderr).toBe(65);
      expect(r.stdout).toBe("");
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
      const a = await applyToServer(good, server(), stateDir, "0");
      expect(a.code).toBe(0);
      expect(await ssh()).toBe(true);
      // the step after `nft -f` (saving current.nft) fails, as if the CLI died there
      await rm(join(stateDir, "current.nft"), { force: true });
      await mkdir(join(stateDir, "current.nft"));
      try {
        const b = await applyToServer(bad, server(), stateDir, "5s");
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
        const apply = (ns: string, within: string) => applyToServer(file, ns, stateDir, within);
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

describe.skipIf(!avail.ok)(
  "rollout state that someone else could have written is not trusted",
  { timeout: 120_000 },
  () => {
    let lab: NetnsLab;
    let dir: string;
    let file: string;
    const ns = () => lab.hosts[1]!;
    /** Another table in the namespace, which no rollback of zt's may touch. */
    const OTHER =
      "table inet keepme {\n  chain c {\n    type filter hook input priority 0; policy accept;\n  }\n}\n";

    beforeAll(async () => {
      lab = await NetnsLab.create(2);
      dir = await mkdtemp(join(tmpdir(), "zt-seg-unsafe-"));
      file = join(dir, "m.yaml");
      await writeFile(file, model(true));
    });
    afterAll(async () => {
      await lab?.destroy();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** A confirmed apply, then a pending one: previous.nft holds the first table. */
    async function pendingApply(stateDir: string): Promise<void> {
      const apply = (within: string) => applyToServer(file, ns(), stateDir, within);
      const a = await apply("0");
      expect(a.code, a.stderr).toBe(0);
      const b = await apply("120s");
      expect(b.code, b.stderr).toBe(0);
    }

    const rollback = (stateDir: string) =>
      zt(["seg", "rollback", "--netns", ns(), "--state-dir", stateDir]);

    it("refuses a previous.nft edited to reach beyond table inet zt, and loads nothing", async () => {
      const stateDir = join(dir, "edited");
      await pendingApply(stateDir);
      await lab.exec(ns(), "nft", ["-f", "-"], OTHER);
      await writeFile(
        join(stateDir, "previous.nft"),
        "table inet zt {}\ndelete table inet zt\nflush ruleset\n",
      );
      const before = await readFile(join(stateDir, "state.json"), "utf8");

      const r = await rollback(stateDir);
      expect(r.code, r.stdout).toBe(77);
      expect(r.stderr).toMatch(
        /^zt: error ZT_SEG_STATE_UNSAFE: .*previous\.nft changes more than table inet zt \(line 3: "flush ruleset"\)/,
      );
      expect(r.stderr).not.toMatch(/\n\s+at /);
      // nothing was loaded: the other table and zt's pending table are both still there
      const tables = await lab.exec(ns(), "nft", ["list", "tables"]);
      expect(tables).toMatch(/inet keepme/);
      expect(tables).toMatch(/inet zt/);
      expect(await readFile(join(stateDir, "state.json"), "utf8")).toBe(before);
      await lab.exec(ns(), "nft", ["delete", "table", "inet", "keepme"]);
    });

    it("a rollback timer that cannot roll back says why in zt seg status", async () => {
      const stateDir = join(dir, "timer");
      const apply = (within: string) => applyToServer(file, ns(), stateDir, within);
      expect((await apply("0")).code).toBe(0);
      // edited before the window closes: the timer must refuse it, and say so
      expect((await apply("3s")).code).toBe(0);
      await writeFile(join(stateDir, "previous.nft"), "flush ruleset\n");
      const failed = join(stateDir, "rollback-failed.json");
      for (let i = 0; i < 600 && !existsSync(failed); i++)
        await new Promise((r) => setTimeout(r, 100));

      const st = await zt(["seg", "status", "--netns", ns(), "--state-dir", stateDir]);
      expect(st.code, st.stderr).toBe(0);
      expect(st.stdout).toMatch(/\(pending, rolls back at /);
      expect(st.stdout).toMatch(
        /^rollback FAILED at \S+: ZT_SEG_STATE_UNSAFE: .*previous\.nft changes more than table inet zt/m,
      );
      const json = JSON.parse(
        (await zt(["seg", "status", "--netns", ns(), "--state-dir", stateDir, "--json"])).stdout,
      ) as { rollbackFailed: { code: string } | null };
      expect(json.rollbackFailed?.code).toBe("ZT_SEG_STATE_UNSAFE");

      // a new apply replaces the pending one: the old failure is no longer shown
      expect((await apply("0")).code).toBe(0);
      const after = await zt(["seg", "status", "--netns", ns(), "--state-dir", stateDir]);
      expect(after.stdout).not.toMatch(/rollback FAILED/);
    });

    it("refuses a previous.nft that is a symbolic link", async () => {
      const stateDir = join(dir, "linked");
      await pendingApply(stateDir);
      const elsewhere = join(dir, "elsewhere.nft");
      await writeFile(elsewhere, await readFile(join(stateDir, "previous.nft"), "utf8"));
      await rm(join(stateDir, "previous.nft"));
      await symlink(elsewhere, join(stateDir, "previous.nft"));
      const r = await rollback(stateDir);
      expect(r.code, r.stdout).toBe(77);
      expect(r.stderr).toMatch(/ZT_SEG_STATE_UNSAFE: .*previous\.nft is not a regular file/);
    });

    it("refuses a state directory or previous.nft others can write, for apply and rollback", async () => {
      const stateDir = join(dir, "open");
      await pendingApply(stateDir);
      await chmod(join(stateDir, "previous.nft"), 0o666);
      const r1 = await rollback(stateDir);
      expect(r1.code, r1.stdout).toBe(77);
      expect(r1.stderr).toMatch(
        /ZT_SEG_STATE_UNSAFE: .*previous\.nft is writable by anyone \(mode 666\)/,
      );
      await chmod(join(stateDir, "previous.nft"), 0o600);

      await chmod(stateDir, 0o770);
      const r2 = await rollback(stateDir);
      expect(r2.code, r2.stdout).toBe(77);
      expect(r2.stderr).toMatch(
        /ZT_SEG_STATE_UNSAFE: .*open is writable by its group \(mode 770\)/,
      );
      const r3 = await applyToServer(file, ns(), stateDir, "0");
      expect(r3.code, r3.stdout).toBe(77);
      expect(r3.stderr).toMatch(/ZT_SEG_STATE_UNSAFE/);

      // put right, the same rollback goes through
      await chmod(stateDir, 0o700);
      const ok = await rollback(stateDir);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toBe("rolled back\n");
    });
  },
);

describe.skipIf(!avail.ok)(
  "the rollback timer under systemd (a stand-in systemd-run: systemd is not PID 1 here)",
  { timeout: 120_000 },
  () => {
    // This machine has no running systemd, so `systemd-run` is replaced by a script that
    // records its arguments and starts what follows `--` in the background, as the real one
    // starts a transient service. What is tested for real: that zt hands over a complete
    // timer command line that, run on its own, rolls back in the namespace, and that a
    // systemd-run refusal keeps the ruleset from being applied.
    let lab: NetnsLab;
    let dir: string;
    let file: string;
    let bin: string;
    const ns = () => lab.hosts[1]!;
    const ssh = async () =>
      (
        await lab.probe(lab.hosts[0]!, [{ addr: NetnsLab.addr4(1), proto: "tcp", port: 22 }], 1500)
      )[0];

    beforeAll(async () => {
      lab = await NetnsLab.create(2);
      await lab.listen([22, 8443], []);
      dir = await mkdtemp(join(tmpdir(), "zt-seg-systemd-"));
      bin = join(dir, "bin");
      await mkdir(bin);
      file = join(dir, "bad.yaml");
      await writeFile(file, model(false));
    });
    afterAll(async () => {
      await lab?.destroy();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const apply = (stateDir: string) =>
      applyToServer(file, ns(), stateDir, "3s", {
        PATH: `${bin}:${process.env["PATH"] ?? ""}`,
        ZT_SEG_ROLLBACK_TIMER: "systemd",
      });

    it("starts the timer as a transient unit, which rolls back", async () => {
      const log = join(dir, "args.txt");
      await writeFile(
        join(bin, "systemd-run"),
        `#!/bin/sh\nprintf '%s\\n' "$@" > ${JSON.stringify(log)}\nwhile [ "$1" != "--" ]; do shift; done; shift\nsetsid "$@" </dev/null >/dev/null 2>&1 &\nexit 0\n`,
        { mode: 0o755 },
      );
      const stateDir = join(dir, "ok");
      const a = await apply(stateDir);
      expect(a.code, a.stderr).toBe(0);
      const args = (await readFile(log, "utf8")).trim().split("\n");
      const token = (
        JSON.parse(await readFile(join(stateDir, "state.json"), "utf8")) as {
          token: string;
        }
      ).token;
      expect(args).toContain(`--unit=zt-seg-rollback-${token}`);
      expect(args).toContain("--collect");
      expect(args.slice(args.indexOf("--") + 1)).toEqual([
        process.execPath,
        ZT,
        "seg",
        "_rollback-timer",
        "--state-dir",
        stateDir,
        "--token",
        token,
        "--netns",
        ns(),
      ]);
      expect(await ssh()).toBe(false);
      await waitForStatus(stateDir, "rolled-back");
      expect(await ssh()).toBe(true);
    });

    it("a systemd-run that refuses keeps the ruleset from being applied", async () => {
      await writeFile(
        join(bin, "systemd-run"),
        "#!/bin/sh\necho 'Failed to start transient service unit: Access denied' >&2\nexit 1\n",
        { mode: 0o755 },
      );
      const stateDir = join(dir, "refused");
      const a = await apply(stateDir);
      expect(a.code, a.stdout).toBe(1);
      expect(a.stderr).toMatch(
        /^zt: error ZT_SEG_APPLY_FAILED: systemd-run could not start the rollback timer \(Failed to start transient service unit: Access denied\), so nothing was applied/,
      );
      expect(await ssh()).toBe(true);
      expect(existsSync(join(stateDir, "state.json"))).toBe(false);
    });

    it("names a ZT_SEG_ROLLBACK_TIMER it does not know", async () => {
      const r = await applyToServer(file, ns(), join(dir, "x"), "3s", {
        ZT_SEG_ROLLBACK_TIMER: "cron",
      });
      expect(r.code, r.stdout).toBe(64);
      expect(r.stderr).toMatch(
        /ZT_USAGE: .*ZT_SEG_ROLLBACK_TIMER="cron": expected systemd, detached or auto/,
      );
      expect(await ssh()).toBe(true);
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
