/**
 * `zt seg learn` and `zt seg simulate` through the real CLI (bin/zt, built by `npm run
 * build`): output targets are checked before anything is printed or written, and a raw
 * log without a flow line among others is named in a warning, not silently skipped.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { expectCleanError } from "./helpers/zt-cli.js";
import { tempDirForSuite } from "./helpers/temp-dir-for-suite.js";
import { runZt, ZT_BIN } from "./helpers/zt-process.js";

const FLOW =
  "Nov 20 10:00:05 gw kernel: ZT-DROP IN=eth1 OUT=eth2 SRC=10.0.2.10 DST=10.0.3.1 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=7 PROTO=TCP SPT=50000 DPT=5432 WINDOW=64240 RES=0x00 SYN URGP=0\n";
const MODEL = `segments:
  api: { hosts: [10.0.2.10] }
  data: { hosts: [10.0.3.0/28] }
flows: []
mode: { default: enforce }
`;

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

describe("zt seg simulate: raw logs without flow lines", { timeout: 60_000 }, () => {
  const dir = tempDirForSuite("zt-seg-sim-");

  it("warns naming each log with no flow line when others have some, and fails only when none has", async () => {
    const model = join(dir(), "segments.yaml");
    writeFileSync(model, MODEL);
    const log = join(dir(), "kern.log");
    writeFileSync(log, FLOW);
    const empty = join(dir(), "empty.log");
    writeFileSync(empty, "");
    const noise = join(dir(), "noise.log");
    writeFileSync(noise, "garbage\nmore garbage\n");

    const r = await runZt(["seg", "simulate", "-m", model, "--flows", log, empty, noise]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 observed flows, 1 packets: .*1 would be dropped/);
    expect(r.stderr).toMatch(
      /^zt: warning: .*empty\.log: no flow line could be parsed: the file is empty; nothing simulated from it$/m,
    );
    expect(r.stderr).toMatch(
      /^zt: warning: .*noise\.log: no flow line could be parsed in its 2 lines; nothing simulated from it$/m,
    );
    expect(r.stderr).not.toMatch(/kern\.log/);

    // a learned file with flows and an empty raw log: the same warning, not a failure
    const learned = join(dir(), "learned.yaml");
    const l = await runZt(["seg", "learn", "--from", log, "--out", learned]);
    expect(l.code, l.stderr).toBe(0);
    const mixed = await runZt(["seg", "simulate", "-m", model, "--flows", learned, empty]);
    expect(mixed.code, mixed.stderr).toBe(0);
    expect(mixed.stderr).toMatch(/^zt: warning: .*empty\.log: no flow line could be parsed/m);

    // none has a flow line: refused as a single empty log is, naming them
    const none = await runZt(["seg", "simulate", "-m", model, "--flows", empty, noise, "--check"]);
    expectCleanError(
      none,
      64,
      "ZT_BAD_REQUEST",
      /empty\.log, .*noise\.log: no flow line could be parsed in any of their 2 lines/,
    );
    expect(none.stdout).toBe("");

    // a learned file with no observed flow in it: nothing to simulate either
    const nothing = join(dir(), "nothing.yaml");
    writeFileSync(nothing, "observed: []\n");
    const n = await runZt(["seg", "simulate", "-m", model, "--flows", nothing, "--check"]);
    expectCleanError(n, 64, "ZT_BAD_REQUEST", /nothing\.yaml: no observed flows in it/);
    expect(n.stdout).toBe("");
  });
});

describe("zt seg: inputs and outputs named with the right code", { timeout: 60_000 }, () => {
  const dir = tempDirForSuite("zt-seg-io-");

  it("a directory given as a model or a learned file is ZT_USAGE naming it (it was ZT_NOT_FOUND)", async () => {
    const model = join(dir(), "segments.yaml");
    writeFileSync(model, MODEL);
    const aDir = join(dir(), "models.yaml");
    mkdirSync(aDir);
    for (const args of [
      ["seg", "check", "-m", aDir],
      ["seg", "compile", "-m", aDir],
      ["seg", "simulate", "-m", aDir, "--flows", model],
      ["seg", "simulate", "-m", model, "--flows", aDir],
    ]) {
      const r = await runZt(args);
      expectCleanError(r, 64, "ZT_USAGE", new RegExp(`${aDir}: is a directory`));
    }
    // a missing one is still not found, as before
    const missing = await runZt(["seg", "check", "-m", join(dir(), "nope.yaml")]);
    expectCleanError(missing, 66, "ZT_NOT_FOUND", /nope\.yaml: cannot read the model/);
  });

  it("zt seg compile -o names --out when it cannot be written, and checks --target before reading the model", async () => {
    const model = join(dir(), "compiled.yaml");
    writeFileSync(model, MODEL);
    const aDir = join(dir(), "out-dir");
    mkdirSync(aDir);
    const r = await runZt(["seg", "compile", "-m", model, "-o", aDir]);
    expectCleanError(r, 64, "ZT_USAGE", new RegExp(`--out: ${aDir}: is a directory`));
    expect(readdirSync(aDir)).toEqual([]);
    // -o /dev/stdout on a pipe writes to it: it resolves to a `pipe:[…]` name that was
    // taken for a file to replace (ZT_NOT_FOUND)
    const piped = spawnSync(
      "sh",
      ["-c", '"$0" "$1" seg compile -m "$2" -o /dev/stdout | cat', process.execPath, ZT_BIN, model],
      { encoding: "utf8", timeout: 60_000 },
    );
    expect(piped.status, piped.stderr).toBe(0);
    expect(piped.stdout).toMatch(/^#!\/usr\/sbin\/nft -f\n/);
    // the option is refused first, not the model it would never have compiled
    const gone = await runZt(["seg", "compile", "-m", join(dir(), "nope.yaml"), "-t", "bogus"]);
    expectCleanError(gone, 64, "ZT_USAGE", /--target: expected nftables or k8s, got "bogus"/);
  });
});

describe("zt seg: an output that names an input", { timeout: 60_000 }, () => {
  const dir = tempDirForSuite("zt-seg-overwrite-");

  it("is refused before anything is read or written: the log or the model it names stays as it was", async () => {
    const log = join(dir(), "kern.log");
    writeFileSync(log, FLOW);
    const model = join(dir(), "segments.yaml");
    writeFileSync(model, MODEL);
    for (const [args, named] of [
      [["seg", "learn", "--from", log, "--out", log], /--out: .*kern\.log is also --from/],
      [
        ["seg", "learn", "--from", log, "-m", model, "--model-out", model],
        /--model-out: .*segments\.yaml is also --model/,
      ],
      [
        ["seg", "compile", "-m", model, "-o", join(dir(), ".", "segments.yaml")],
        /--out: .*segments\.yaml is also --model/,
      ],
    ] as const) {
      const r = await runZt([...args]);
      expectCleanError(r, 64, "ZT_USAGE", named);
      expect(r.stdout).toBe("");
    }
    expect(readFileSync(log, "utf8")).toBe(FLOW);
    expect(readFileSync(model, "utf8")).toBe(MODEL);
  });
});

describe("zt seg apply: a compiled script", { timeout: 60_000 }, () => {
  const dir = tempDirForSuite("zt-seg-apply-");

  it("with --host, --segment or --router is refused before anything is applied (they were ignored)", async () => {
    const model = join(dir(), "segments.yaml");
    writeFileSync(model, MODEL);
    const script = join(dir(), "router.nft");
    const c = await runZt(["seg", "compile", "-m", model, "-o", script]);
    expect(c.code, c.stderr).toBe(0);
    const state = join(dir(), "state");
    // In a namespace that does not exist: were the refusal missing, nft fails there
    // instead of loading the script into this host's own ruleset.
    const netns = ["--netns", `zt-no-such-ns-${process.pid}`];
    for (const option of [["--host", "10.0.2.10"], ["--segment", "api"], ["--router"]]) {
      const r = await runZt(["seg", "apply", script, ...option, "--state-dir", state, ...netns]);
      expectCleanError(
        r,
        64,
        "ZT_USAGE",
        new RegExp(`${option[0]}: .*router\\.nft is a compiled ruleset`),
      );
      expect(r.stdout).toBe("");
    }
    expect(readdirSync(dir()).sort()).toEqual(["router.nft", "segments.yaml"]);
  });
});
