/**
 * Files the real `bin/zt` rewrites in place (`zt policy fmt`) or writes with `-o` (`zt seg
 * compile`): a write cut short — here by a file size limit (prlimit --fsize), as a full
 * disk or a crash would — leaves the old file whole, never a truncated one; a completed
 * rewrite keeps the file's mode and writes through a symlink.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  lstatSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exitCodeFor } from "../src/core/errors.js";
import { ROOT, tempDir, ZT_BIN } from "./helpers/zt-process.js";

let dir: string;
beforeAll(() => {
  dir = tempDir("zt-atomic-");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs bin/zt with RLIMIT_FSIZE = `fsize` bytes when given (writes past it fail EFBIG). */
function zt(args: string[], fsize?: number): { code: number; out: string; err: string } {
  const argv = [process.execPath, ZT_BIN, ...args];
  const r =
    fsize === undefined
      ? spawnSync(argv[0]!, argv.slice(1), { cwd: dir, encoding: "utf8", timeout: 120_000 })
      : spawnSync("prlimit", [`--fsize=${fsize}`, ...argv], {
          cwd: dir,
          encoding: "utf8",
          timeout: 120_000,
        });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** One policy on one line; formatting spreads it over ~120 indented lines (larger). */
function longPolicy(): string {
  const conds = Array.from({ length: 120 }, (_, i) => `context.a${i} == "v${i}"`).join(" && ");
  return `permit(principal, action, resource) when { ${conds} };\n`;
}

describe("zt policy fmt", () => {
  it("a rewrite cut short (file size limit) leaves the policy file whole, and says why", () => {
    const file = join(dir, "cut.cedar");
    const text = longPolicy();
    writeFileSync(file, text);
    // Room for the old text, not for the formatted one.
    const r = zt(["policy", "fmt", file], Buffer.byteLength(text) + 16);
    expect(r.code, r.err).toBe(exitCodeFor("ZT_UNAVAILABLE"));
    expect(r.err).toMatch(/^zt: error ZT_UNAVAILABLE: .*cut\.cedar: file too large/);
    expect(readFileSync(file, "utf8")).toBe(text);
    expect(readdirSync(dir).filter((f) => f.includes("cut.cedar"))).toEqual(["cut.cedar"]);
    // and the policy still formats once the limit is gone
    expect(zt(["policy", "fmt", file]).code).toBe(0);
    expect(readFileSync(file, "utf8")).not.toBe(text);
  });

  it("keeps the file's mode and writes through a symlink (the link stays a link)", () => {
    const target = join(dir, "real.cedar");
    const link = join(dir, "link.cedar");
    writeFileSync(target, longPolicy());
    chmodSync(target, 0o640);
    symlinkSync(target, link);
    const r = zt(["policy", "fmt", link]);
    expect(r.code, r.err).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(statSync(target).mode & 0o777).toBe(0o640);
    expect(readFileSync(target, "utf8")).toMatch(/^permit \(principal, action, resource\)\nwhen/);
  });
});

describe("zt seg compile -o", () => {
  it("an output cut short leaves the previous output whole", () => {
    const out = join(dir, "rules.nft");
    const previous = "# the ruleset in use\n";
    writeFileSync(out, previous);
    const model = join(ROOT, "examples", "segments.yaml");
    const full = zt(["seg", "compile", "-m", model]);
    expect(full.code, full.err).toBe(0);
    const r = zt(["seg", "compile", "-m", model, "-o", out], Buffer.byteLength(full.out) - 100);
    expect(r.code, r.err).toBe(exitCodeFor("ZT_UNAVAILABLE"));
    expect(readFileSync(out, "utf8")).toBe(previous);
    expect(zt(["seg", "compile", "-m", model, "-o", out]).code).toBe(0);
    expect(readFileSync(out, "utf8")).toBe(full.out);
  });
});
