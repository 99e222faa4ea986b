/**
 * The rollout state machine (apply → pending → confirmed | rolled back) with a recording
 * stand-in for nft, so it runs everywhere; the real nft path is in segment-rollout.test.ts.
 */
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
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
  rollbackNow,
  type NftRunner,
} from "../src/segment/index.js";

/** Keeps "the live table" as the last script loaded, like nft -f of zt's replace-table scripts. */
class FakeNft implements NftRunner {
  live: string | undefined;
  loads: string[] = [];
  failNext = false;
  /** While set, `nft -f` waits for it (a long load); `loading` tells it has started. */
  gate: Promise<void> | undefined;
  loading = false;
  async run(args: string[], input?: string): Promise<string> {
    if (args[0] === "-c") {
      if (input?.includes("broken")) throw new NftCommandError(args, 1, "Error: syntax error");
      return "";
    }
    if (args[0] === "-f") {
      this.loading = true;
      await this.gate;
      this.loading = false;
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

  it("confirm and rollback before any apply say that nothing was applied (not a lock error)", async () => {
    // the state directory does not exist yet
    const c = await confirmApply(opts).catch((e: unknown) => e);
    expect(isZtError(c) && c.code).toBe("ZT_NOT_FOUND");
    expect((c as Error).message).toBe(`nothing was applied (no state in ${stateDir})`);
    expect(await rollbackIfPending(opts)).toBe(false);
    expect(nft.loads).toEqual([]);
  });

  it("a script that changes another table is refused before anything is saved or loaded: its rollback could not undo it", async () => {
    const zt = script("zt");
    for (const [text, line, stmt] of [
      ["flush ruleset\n" + zt, 1, "flush ruleset"],
      [
        zt +
          "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n",
        6,
        "table inet filter {}",
      ],
      ["table inet zt {}; delete table ip nat\n", 1, "delete table ip nat"],
      [zt.replace("\t# zt", '\tinclude "/etc/nftables.d/x.nft"'), 4, "include"],
      ["table inet zt {\n}\n}\nflush ruleset\n", 3, "}"],
    ] as const) {
      const e = await applyRuleset(text, {
        ...opts,
        confirmWithinMs: 60_000,
        source: "x.nft",
      }).catch((x: unknown) => x);
      expect(isZtError(e) && e.code, text).toBe("ZT_SEG_APPLY_FAILED");
      expect((e as Error).message).toContain(`(line ${line}: ${JSON.stringify(stmt)})`);
    }
    expect(nft.loads).toEqual([]);
    await expect(stat(join(stateDir, "state.json"))).rejects.toThrow();
    // quoted strings and comments are not statements
    await applyRuleset(
      zt.replace("\t# zt", '\tchain c {\n\t\tcounter comment "} ; flush ruleset # include"\n\t}') +
        "# flush ruleset\n",
      { ...opts, confirmWithinMs: 0, source: "x.nft" },
    );
    expect(nft.loads).toHaveLength(1);
  });

  it("a damaged state.json is named, not an internal JSON error", async () => {
    await mkdir(stateDir, { recursive: true });
    await writeFile(join(stateDir, "state.json"), '{"status":');
    for (const op of [() => confirmApply(opts), () => rollbackIfPending(opts)]) {
      const e = await op().catch((x: unknown) => x);
      expect(isZtError(e) && e.code).toBe("ZT_SEG_APPLY_FAILED");
      expect((e as Error).message).toMatch(/state\.json: unreadable state \(not JSON/);
    }
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

  it("zt seg rollback with nothing pending says why, with a stable code (it printed `nothing pending` and exited 1)", async () => {
    // nothing applied: as confirm says it
    const none = await rollbackNow(opts).catch((x: unknown) => x);
    expect(isZtError(none) && none.code).toBe("ZT_NOT_FOUND");
    expect((none as Error).message).toBe(
      `nothing was applied (no state in ${stateDir}); nothing to roll back`,
    );
    // confirmed: nothing pending, and the confirmed table stays
    await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a.yaml" });
    const confirmed = await rollbackNow(opts).catch((x: unknown) => x);
    expect(isZtError(confirmed) && confirmed.code).toBe("ZT_CONFLICT");
    expect((confirmed as Error).message).toMatch(
      /^nothing pending: the last apply \([0-9a-f]{12} from a\.yaml\) was confirmed at 2026-11-22T00:00:00\.000Z; apply the model you want instead$/,
    );
    expect(nft.live).toContain("# A");
    // pending: rolled back now; a second rollback finds it rolled back
    await applyRuleset(script("B"), { ...opts, confirmWithinMs: 60_000, source: "b.yaml" });
    clock.advance(5_000);
    expect(await rollbackNow(opts)).toMatchObject({ status: "rolled-back", source: "b.yaml" });
    expect(nft.live).toContain("# A");
    const again = await rollbackNow(opts).catch((x: unknown) => x);
    expect(isZtError(again) && again.code).toBe("ZT_CONFLICT");
    expect((again as Error).message).toMatch(
      /^nothing pending: the last apply \([0-9a-f]{12} from b\.yaml\) was already rolled back at 2026-11-22T00:00:05\.000Z$/,
    );
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

  it("arms the rollback with the pending state on disk before the ruleset is loaded", async () => {
    const seen: { live: string | undefined; onDisk: unknown; token: string }[] = [];
    const { state } = await applyRuleset(script("A"), {
      ...opts,
      confirmWithinMs: 60_000,
      source: "a",
      armRollback: async (st) => {
        seen.push({
          live: nft.live,
          onDisk: JSON.parse(await readFile(join(stateDir, "state.json"), "utf8")),
          token: st.token,
        });
      },
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.live).toBeUndefined(); // not loaded yet
    expect(seen[0]!.token).toBe(state.token);
    expect(seen[0]!.onDisk).toMatchObject({
      status: "pending",
      token: state.token,
      deadline: Date.UTC(2026, 10, 22) + 60_000,
    });
    expect(nft.live).toContain("# A");
    // what the armed timer does at the deadline
    expect(await rollbackIfPending({ ...opts, token: state.token })).toBe(true);
    expect(nft.live).toBeUndefined();
  });

  it("nft -f failing after the rollback was armed puts the state back; the armed timer does nothing", async () => {
    await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a" });
    const before = await readFile(join(stateDir, "state.json"), "utf8");
    nft.failNext = true;
    let armed: string | undefined;
    const e = await applyRuleset(script("B"), {
      ...opts,
      confirmWithinMs: 60_000,
      source: "b",
      armRollback: async (st) => {
        armed = st.token;
      },
    }).catch((x: unknown) => x);
    expect(isZtError(e) && e.code).toBe("ZT_SEG_APPLY_FAILED");
    expect(armed).toBeDefined();
    expect(await readFile(join(stateDir, "state.json"), "utf8")).toBe(before);
    expect(await rollbackIfPending({ ...opts, token: armed! })).toBe(false);
    expect(nft.live).toContain("# A");
    // arming itself fails: nothing is loaded
    const e2 = await applyRuleset(script("C"), {
      ...opts,
      confirmWithinMs: 60_000,
      source: "c",
      armRollback: () => Promise.reject(new Error("cannot spawn")),
    }).catch((x: unknown) => x);
    expect(isZtError(e2) && e2.code).toBe("ZT_SEG_APPLY_FAILED");
    expect(nft.live).toContain("# A");
    expect(nft.loads.some((l) => l.includes("# C"))).toBe(false);
    expect(await readFile(join(stateDir, "state.json"), "utf8")).toBe(before);
  });

  it("a live holder's lock is never broken, however long it holds it", async () => {
    await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a" });
    let release!: () => void;
    nft.gate = new Promise((r) => (release = r));
    const applying = applyRuleset(script("B"), { ...opts, confirmWithinMs: 60_000, source: "b" });
    while (!nft.loading) await new Promise((r) => setTimeout(r, 10));
    // as if the load had been running for an hour
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(join(stateDir, "lock"), hourAgo, hourAgo);
    let done = false;
    const confirming = confirmApply(opts).finally(() => (done = true));
    await new Promise((r) => setTimeout(r, 300)); // time for confirm to try the lock many times
    expect(done).toBe(false); // still waiting for the apply
    release();
    const { state } = await applying;
    const c = await confirming;
    expect(c).toMatchObject({ status: "confirmed", token: state.token, source: "b" });
  });

  it("a lock left by a process that has exited is broken at once", async () => {
    const dead = spawnSync(process.execPath, ["-e", ""]).pid!;
    await mkdir(stateDir, { recursive: true });
    await mkdir(join(stateDir, "lock"));
    await writeFile(
      join(stateDir, "lock", "owner"),
      JSON.stringify({ pid: dead, start: null, host: hostname(), token: "gone" }),
    );
    const { state } = await applyRuleset(script("A"), { ...opts, confirmWithinMs: 0, source: "a" });
    expect(state.status).toBe("confirmed");
    expect(nft.live).toContain("# A");
  });
});
