/**
 * The rollout state machine (apply → pending → confirmed | rolled back) with a recording
 * stand-in for nft, so it runs everywhere; the real nft path is in segment-rollout.test.ts.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/core/clock.js";
import { isZtError } from "../src/core/errors.js";
import {
  applyRuleset,
  confirmApply,
  NftCommandError,
  readStatus,
  rollbackIfPending,
  type NftRunner,
} from "../src/segment/index.js";

/** Keeps "the live table" as the last script loaded, like nft -f of zt's replace-table scripts. */
class FakeNft implements NftRunner {
  live: string | undefined;
  loads: string[] = [];
  failNext = false;
  async run(args: string[], input?: string): Promise<string> {
    if (args[0] === "-c") {
      if (input?.includes("broken")) throw new NftCommandError(args, 1, "Error: syntax error");
      return "";
    }
    if (args[0] === "-f") {
      if (this.failNext) {
        this.failNext = false;
        throw new NftCommandError(args, 1, "Error: Could not process rule");
      }
      this.loads.push(input ?? "");
      const body = (input ?? "").replace("table inet zt {}\ndelete table inet zt\n", "");
      this.live = body.trim() === "" ? undefined : body;
      return "";
    }
    if (args.join(" ") === "list table inet zt") {
      if (this.live === undefined)
        throw new NftCommandError(args, 1, "Error: No such file or directory");
      return this.live;
    }
    if (args.join(" ") === "-j list table inet zt") {
      if (this.live === undefined)
        throw new NftCommandError(args, 1, "Error: No such file or directory");
      return JSON.stringify({
        nftables: [
          { metainfo: {} },
          {
            counter: {
              family: "inet",
              name: "zt_drop",
              table: "zt",
              handle: 1,
              packets: 7,
              bytes: 420,
            },
          },
          {
            rule: {
              family: "inet",
              table: "zt",
              chain: "input",
              handle: 9,
              comment: "allowed flows",
              expr: [{ counter: { packets: 3, bytes: 180 } }, { accept: null }],
            },
          },
          {
            rule: {
              family: "inet",
              table: "zt",
              chain: "zt_enforce",
              handle: 4,
              expr: [{ log: {} }, { counter: "zt_drop" }, { drop: null }],
            },
          },
        ],
      });
    }
    throw new Error(`unexpected nft ${args.join(" ")}`);
  }
}

const script = (name: string) =>
  `table inet zt {}\ndelete table inet zt\ntable inet zt {\n\t# ${name}\n}\n`;

describe("rollout state machine", () => {
  let stateDir: string;
  let nft: FakeNft;
  let clock: ManualClock;
  let opts: { stateDir: string; nft: FakeNft; clock: ManualClock };

  beforeEach(async () => {
    stateDir = join(await mkdtemp(join(tmpdir(), "zt-seg-state-")), "state");
    nft = new FakeNft();
    clock = new ManualClock(Date.UTC(2026, 10, 22));
    opts = { stateDir, nft, clock };
  });
  afterEach(async () => {
    await rm(join(stateDir, ".."), { recursive: true, force: true });
  });

  it("first apply with a window: pending with a deadline; rollback removes zt's table", async () => {
    const { state } = await applyRuleset(script("A"), {
      ...opts,
      confirmWithinMs: 60_000,
      source: "a.yaml",
    });
    expect(state).toMatchObject({
      status: "pending",
      deadline: Date.UTC(2026, 10, 22) + 60_000,
      source: "a.yaml",
    });
    expect(nft.live).toContain("# A");
    expect((await stat(join(stateDir, "state.json"))).mode & 0o777).toBe(0o600);
    expect(await rollbackIfPending({ ...opts, token: "not-the-token" })).toBe(false);
    expect(nft.live).toContain("# A");
    expect(await rollbackIfPending({ ...opts, token: state.token })).toBe(true);
    expect(nft.live).toBeUndefined(); // there was no zt table before: the rollback deletes it
    expect(await rollbackIfPending({ ...opts, token: state.token })).toBe(false);
    await expect(confirmApply(opts)).rejects.toMatchObject({ code: "ZT_CONFLICT" });
  });

  it("a second apply while pending keeps the last confirmed table as the rollback target", async () => {
    await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a" });
    await applyRuleset(script("B"), { ...opts, confirmWithinMs: 60_000, source: "b" });
    const { state } = await applyRuleset(script("C"), {
      ...opts,
      confirmWithinMs: 60_000,
      source: "c",
    });
    expect(nft.live).toContain("# C");
    expect(await rollbackIfPending({ ...opts, token: state.token })).toBe(true);
    expect(nft.live).toContain("# A");
    expect(await readFile(join(stateDir, "previous.nft"), "utf8")).toMatch(
      /^table inet zt \{\}\ndelete table inet zt\n/,
    );
  });

  it("confirm stops the rollback", async () => {
    const { state } = await applyRuleset(script("A"), {
      ...opts,
      confirmWithinMs: 60_000,
      source: "a",
    });
    clock.advance(10_000);
    const c = await confirmApply(opts);
    expect(c).toMatchObject({ status: "confirmed", confirmedAt: Date.UTC(2026, 10, 22) + 10_000 });
    expect(await rollbackIfPending({ ...opts, token: state.token })).toBe(false);
    expect(nft.live).toContain("# A");
  });

  it("a ruleset nft refuses changes nothing", async () => {
    await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a" });
    const before = await readFile(join(stateDir, "state.json"), "utf8");
    for (const bad of [script("broken"), script("B")]) {
      if (bad.includes("# B")) nft.failNext = true;
      const e = await applyRuleset(bad, { ...opts, confirmWithinMs: 0, source: "x" }).catch(
        (x: unknown) => x,
      );
      expect(isZtError(e) && e.code).toBe("ZT_SEG_APPLY_FAILED");
    }
    expect(nft.live).toContain("# A");
    expect(await readFile(join(stateDir, "state.json"), "utf8")).toBe(before);
  });

  it("status reads named and per-rule counters", async () => {
    expect((await readStatus(opts)).live).toBe(false);
    await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a" });
    const s = await readStatus(opts);
    expect(s.counters).toEqual({ zt_drop: 7 });
    expect(s.rules).toEqual([
      { chain: "input", handle: 9, rule: "allowed flows", packets: 3, bytes: 180 },
      { chain: "zt_enforce", handle: 4, rule: "drop", packets: 7, bytes: 0 },
    ]);
    expect(s.state?.status).toBe("confirmed");
  });
});
