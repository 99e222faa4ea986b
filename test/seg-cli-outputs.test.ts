/**
 * `zt seg learn` and `zt seg simulate` through the real CLI (bin/zt, built by `npm run
 * build`): output targets are checked before anything is printed or written.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { expectCleanError } from "./helpers/zt-cli.js";
import { tempDirForSuite } from "./helpers/temp-dir-for-suite.js";
import { runZt } from "./helpers/zt-process.js";

const FLOW =
  "Nov 20 10:00:05 gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=10.0.2.10 DST=10.0.3.1 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=7 PROTO=TCP SPT=50000 DPT=5432 WINDOW=64240 RES=0x00 SYN URGP=0\n";

describe("zt seg learn: --out / --model-out", { timeout: 60_000 }, () => {
  const dir = tempDirForSuite("zt-seg-out-");

  it("a --model-out that cannot be written fails before anything is printed or written, naming it", async () => {
    const log = join(dir(), "kern.log");
    writeFileSync(log, FLOW);
    const aDir = join(dir(), "a-directory");
    mkdirSync(aDir);
    const outs = join(dir(), "outs");
    mkdirSync(outs);
    for (const [target, code, exit] of [
      [aDir, "ZT_USAGE", 64],
      [join(dir(), "missing", "proposed.yaml"), "ZT_NOT_FOUND", 66],
      [join(log, "proposed.yaml"), "ZT_USAGE", 64], // under a file
    ] as const) {
      // to stdout: nothing printed as if learned
      const r = await runZt(["seg", "learn", "--from", log, "--model-out", target]);
      expectCleanError(r, exit, code, new RegExp(`--model-out: ${target}: `));
      expect(r.stdout).toBe("");
      expect(r.stderr).not.toMatch(/learned/);
      expect(r.stderr).not.toContain(".tmp");
      // with --out: the inventory is not written either
      const inventory = join(outs, "learned.yaml");
      const o = await runZt([
        "seg",
        "learn",
        "--from",
        log,
        "--out",
        inventory,
        "--model-out",
        target,
      ]);
      expectCleanError(o, exit, code, /--model-out: /);
      expect(readdirSync(outs)).toEqual([]);
    }
    expect(readdirSync(aDir)).toEqual([]);
  });

  it("an --out that cannot be written is named the same way; both written when both can be", async () => {
    const log = join(dir(), "kern2.log");
    writeFileSync(log, FLOW);
    const outs = join(dir(), "outs2");
    mkdirSync(outs);
    const r = await runZt([
      "seg",
      "learn",
      "--from",
      log,
      "--out",
      outs,
      "--model-out",
      join(outs, "proposed.yaml"),
    ]);
    expectCleanError(r, 64, "ZT_USAGE", new RegExp(`--out: ${outs}: is a directory`));
    expect(readdirSync(outs)).toEqual([]);

    const ok = await runZt([
      "seg",
      "learn",
      "--from",
      log,
      "--out",
      join(outs, "learned.yaml"),
      "--model-out",
      join(outs, "proposed.yaml"),
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe("");
    expect(readdirSync(outs).sort()).toEqual(["learned.yaml", "proposed.yaml"]);
    expect(readFileSync(join(outs, "learned.yaml"), "utf8")).toMatch(/tcp\/5432/);
    expect(readFileSync(join(outs, "proposed.yaml"), "utf8")).toMatch(/^# proposed by/);
  });

  it("the same file for --out and --model-out is refused (one would silently replace the other)", async () => {
    const log = join(dir(), "kern3.log");
    writeFileSync(log, FLOW);
    const same = join(dir(), "same.yaml");
    const r = await runZt(["seg", "learn", "--from", log, "--out", same, "--model-out", same]);
    expectCleanError(r, 64, "ZT_USAGE", /--out and --model-out: .*same\.yaml/);
    expect(readdirSync(dir())).not.toContain("same.yaml");
  });
});
