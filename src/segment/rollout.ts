import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { Clock } from "../core/clock.js";
import { ZtError } from "../core/errors.js";
import { ZT_TABLE } from "./compile-nftables.js";
import { NftCommandError, type NftRunner } from "./nft-runner.js";

/**
 * Commit-confirmed rollout of zt's nftables table. State lives in a small directory:
 * `state.json`, `current.nft` (what was applied), `previous.nft` (what a rollback
 * restores: the last confirmed table, or a script that removes zt's table when there was
 * none). A pending apply is rolled back by a timer process unless confirmed in time.
 */

export const DEFAULT_SEG_STATE_DIR = "/var/lib/zt/seg";

const stateSchema = z.object({
  status: z.enum(["pending", "confirmed", "rolled-back"]),
  digest: z.string(),
  source: z.string(),
  appliedAt: z.number(),
  token: z.string(),
  deadline: z.number().nullable(),
  netns: z.string().nullable(),
  rolledBackAt: z.number().nullable().default(null),
  confirmedAt: z.number().nullable().default(null),
});
export type RolloutState = z.infer<typeof stateSchema>;

export interface RolloutOptions {
  stateDir: string;
  nft: NftRunner;
  clock: Clock;
  netns?: string;
}

const EMPTY_PREVIOUS = `table inet ${ZT_TABLE} {}\ndelete table inet ${ZT_TABLE}\n`;

function digestOf(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

export async function readRolloutState(stateDir: string): Promise<RolloutState | undefined> {
  let text: string;
  try {
    text = await readFile(join(stateDir, "state.json"), "utf8");
  } catch {
    return undefined;
  }
  const parsed = stateSchema.safeParse(JSON.parse(text));
  if (!parsed.success)
    throw new ZtError("ZT_SEG_APPLY_FAILED", `${join(stateDir, "state.json")}: unreadable state`);
  return parsed.data;
}

/** Serialises state changes between apply, confirm and the rollback timer (mkdir is atomic). */
async function withLock<T>(stateDir: string, body: () => Promise<T>): Promise<T> {
  const lock = join(stateDir, "lock");
  for (let i = 0; ; i++) {
    try {
      await mkdir(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > 30_000) await rm(lock, { recursive: true, force: true });
      if (i > 200)
        throw new ZtError("ZT_CONFLICT", `${lock}: another zt seg command holds the lock`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  try {
    return await body();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

function applyFailed(what: string, e: unknown): ZtError {
  if (e instanceof ZtError) return e;
  const msg =
    e instanceof NftCommandError
      ? (e.stderr || e.message).split("\n").slice(0, 9).join("\n")
      : (e as Error).message;
  return new ZtError("ZT_SEG_APPLY_FAILED", `${what}: ${msg}`, {}, { cause: e });
}

/** The live zt table as a script that restores it exactly, or the removal script. */
async function snapshotLive(nft: NftRunner): Promise<string> {
  try {
    const listing = await nft.run(["list", "table", "inet", ZT_TABLE]);
    return `${EMPTY_PREVIOUS}${listing}`;
  } catch (e) {
    if (e instanceof NftCommandError && /No such file or directory/.test(e.stderr))
      return EMPTY_PREVIOUS;
    throw applyFailed("reading the current table", e);
  }
}

export interface ApplyOptions {
  /** 0 = no confirmation needed. */
  confirmWithinMs: number;
  source: string;
}

export interface ApplyResult {
  state: RolloutState;
}

/**
 * Checks (`nft -c`) and applies a ruleset atomically, keeping the previous table for
 * rollback. With a confirmation window the state is `pending` and the caller must start
 * the rollback timer (see `rollbackIfPending`). A second apply while one is pending keeps
 * the last confirmed table as the rollback target.
 */
export async function applyRuleset(
  ruleset: string,
  opts: RolloutOptions & ApplyOptions,
): Promise<ApplyResult> {
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  return withLock(opts.stateDir, async () => {
    const prev = await readRolloutState(opts.stateDir);
    try {
      await opts.nft.run(["-c", "-f", "-"], ruleset);
    } catch (e) {
      throw applyFailed("the ruleset does not load (nft -c)", e);
    }
    if (prev?.status !== "pending")
      await writeAtomic(join(opts.stateDir, "previous.nft"), await snapshotLive(opts.nft));
    try {
      await opts.nft.run(["-f", "-"], ruleset);
    } catch (e) {
      throw applyFailed("nft -f", e);
    }
    await writeAtomic(join(opts.stateDir, "current.nft"), ruleset);
    const now = opts.clock.now();
    const state: RolloutState = {
      status: opts.confirmWithinMs > 0 ? "pending" : "confirmed",
      digest: digestOf(ruleset),
      source: opts.source,
      appliedAt: now,
      token: randomBytes(12).toString("hex"),
      deadline: opts.confirmWithinMs > 0 ? now + opts.confirmWithinMs : null,
      netns: opts.netns ?? null,
      rolledBackAt: null,
      confirmedAt: opts.confirmWithinMs > 0 ? null : now,
    };
    await writeAtomic(join(opts.stateDir, "state.json"), JSON.stringify(state, null, 2));
    return { state };
  });
}

/** Confirms a pending apply, which stops its rollback. */
export async function confirmApply(opts: RolloutOptions): Promise<RolloutState> {
  return withLock(opts.stateDir, async () => {
    const st = await readRolloutState(opts.stateDir);
    if (!st)
      throw new ZtError("ZT_NOT_FOUND", "nothing was applied (no state in " + opts.stateDir + ")");
    if (st.status === "rolled-back") {
      throw new ZtError(
        "ZT_CONFLICT",
        "too late: the apply was already rolled back; apply it again",
      );
    }
    if (st.status === "confirmed") return st;
    const next: RolloutState = { ...st, status: "confirmed", confirmedAt: opts.clock.now() };
    await writeAtomic(join(opts.stateDir, "state.json"), JSON.stringify(next, null, 2));
    return next;
  });
}

/**
 * Restores the previous table if the apply identified by `token` is still pending.
 * Returns true when it rolled back. Called by the timer process when the window ends,
 * and by `zt seg rollback`.
 */
export async function rollbackIfPending(
  opts: RolloutOptions & { token?: string },
): Promise<boolean> {
  return withLock(opts.stateDir, async () => {
    const st = await readRolloutState(opts.stateDir);
    if (!st || st.status !== "pending") return false;
    if (opts.token !== undefined && st.token !== opts.token) return false;
    const previous = await readFile(join(opts.stateDir, "previous.nft"), "utf8");
    try {
      await opts.nft.run(["-f", "-"], previous);
    } catch (e) {
      throw applyFailed("rollback", e);
    }
    const next: RolloutState = { ...st, status: "rolled-back", rolledBackAt: opts.clock.now() };
    await writeAtomic(join(opts.stateDir, "state.json"), JSON.stringify(next, null, 2));
    return true;
  });
}

export interface RuleCounter {
  chain: string;
  handle: number;
  rule: string;
  packets: number;
  bytes: number;
}

export interface SegStatus {
  state: RolloutState | null;
  live: boolean;
  /** True when the live table was loaded from a different ruleset than the state records. */
  counters: Record<string, number>;
  rules: RuleCounter[];
}

type NftJson = { nftables: Record<string, Record<string, unknown>>[] };

/** The applied version and per-rule counters read from `nft -j list table inet zt`. */
export async function readStatus(opts: RolloutOptions): Promise<SegStatus> {
  const state = (await readRolloutState(opts.stateDir)) ?? null;
  let json: NftJson;
  try {
    json = JSON.parse(await opts.nft.run(["-j", "list", "table", "inet", ZT_TABLE])) as NftJson;
  } catch (e) {
    if (e instanceof NftCommandError && /No such file or directory/.test(e.stderr)) {
      return { state, live: false, counters: {}, rules: [] };
    }
    throw applyFailed("nft -j list", e);
  }
  const counters: Record<string, number> = {};
  const rules: RuleCounter[] = [];
  for (const item of json.nftables) {
    const c = item["counter"] as { name: string; packets: number } | undefined;
    if (c) counters[c.name] = c.packets;
    const r = item["rule"] as
      | { chain: string; handle: number; comment?: string; expr: Record<string, unknown>[] }
      | undefined;
    if (!r) continue;
    const cnt = r.expr.find((x) => "counter" in x)?.["counter"] as
      { packets?: number; bytes?: number } | string | undefined;
    if (!cnt) continue;
    const packets = typeof cnt === "object" ? (cnt.packets ?? 0) : (counters[cnt] ?? 0);
    const bytes = typeof cnt === "object" ? (cnt.bytes ?? 0) : 0;
    rules.push({
      chain: r.chain,
      handle: r.handle,
      rule: r.comment ?? describeRule(r.expr),
      packets,
      bytes,
    });
  }
  return { state, live: true, counters, rules };
}

function describeRule(expr: Record<string, unknown>[]): string {
  const verdict = expr
    .map((x) => Object.keys(x)[0])
    .filter((k) => k === "accept" || k === "drop" || k === "jump" || k === "goto");
  const ct = expr.find((x) => "match" in x && JSON.stringify(x).includes('"ct"'));
  if (ct)
    return `ct state ${JSON.stringify((ct["match"] as { right: unknown }).right).replace(/"/g, "")} ${verdict.join(" ")}`;
  return verdict.join(" ") || "rule";
}
