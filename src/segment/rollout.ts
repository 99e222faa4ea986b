import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import type { Clock } from "../core/clock.js";
import { ZtError } from "../core/errors.js";
import { ZT_TABLE } from "./compile-nftables.js";
import { NftCommandError, type NftRunner } from "./nft-runner.js";
import { checkScriptScope } from "./script-scope.js";
import { makeDirectories } from "../core/make-directories.js";
import { writeFileAtomically } from "../core/secure-files.js";

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

/**
 * A state file, replaced whole and durably (fsynced, then renamed): after a crash or power
 * loss the rollback still finds the previous ruleset and state it recorded, never a
 * truncated one.
 */
async function writeAtomic(path: string, text: string): Promise<void> {
  writeFileAtomically(path, text, 0o600);
}

export async function readRolloutState(stateDir: string): Promise<RolloutState | undefined> {
  let text: string;
  try {
    text = await readFile(join(stateDir, "state.json"), "utf8");
  } catch (e) {
    // Only "never applied" is no state: a --state-dir that is a file, or a state that
    // cannot be read, must not read as "nothing recorded" (or "nothing to roll back").
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ZtError(
      "ZT_SEG_APPLY_FAILED",
      `${join(stateDir, "state.json")}: unreadable state (not JSON: ${(e as Error).message})`,
    );
  }
  const parsed = stateSchema.safeParse(json);
  if (!parsed.success)
    throw new ZtError("ZT_SEG_APPLY_FAILED", `${join(stateDir, "state.json")}: unreadable state`);
  return parsed.data;
}

/**
 * Whether the state directory exists: before any apply it does not, and there is no lock
 * to take. One that exists must be safe to trust (see `checkOwnedPrivately`).
 */
async function stateDirExists(stateDir: string): Promise<boolean> {
  const exists = await stat(stateDir).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return false;
      throw e;
    },
  );
  if (exists) await checkOwnedPrivately(stateDir, "directory");
  return exists;
}

/**
 * What a rollback loads as root must be writable by nobody else, as sshd's `StrictModes`
 * asks of `authorized_keys`: the state directory and `previous.nft` are owned by this user
 * (or root) and neither group- nor world-writable, and `previous.nft` is a regular file, not
 * a link to one chosen by someone else. Anyone who could write them could otherwise have
 * the rollback timer load a ruleset of their choosing.
 */
async function checkOwnedPrivately(path: string, kind: "directory" | "file"): Promise<void> {
  const st = kind === "directory" ? await stat(path) : await lstat(path);
  const uid = process.getuid?.() ?? 0;
  const problem =
    kind === "directory" && !st.isDirectory()
      ? "is not a directory"
      : kind === "file" && !st.isFile()
        ? "is not a regular file"
        : st.uid !== uid && st.uid !== 0
          ? `is owned by uid ${st.uid}, not by this user (${uid}) or root`
          : (st.mode & 0o022) !== 0
            ? `is writable by ${st.mode & 0o002 ? "anyone" : "its group"} (mode ${(st.mode & 0o777).toString(8)})`
            : undefined;
  if (problem === undefined) return;
  throw new ZtError(
    "ZT_SEG_STATE_UNSAFE",
    `${path} ${problem}: zt seg will not trust its rollout state; make it owned by root and writable only by its owner (chmod go-w)`,
    { path },
  );
}

/** What a script out of scope does, for a refusal: `changes more than table inet zt (line …)`. */
function beyondZtTable(scope: { line: number; statement: string }): string {
  return `changes more than table inet ${ZT_TABLE} (line ${scope.line}: ${JSON.stringify(scope.statement.slice(0, 80))})`;
}

/** A lock whose holder shows no sign of life for this long is broken (see `withLock`). */
const LOCK_STALE_MS = 30_000;
/** How often the holder refreshes the lock's mtime while it works. */
const LOCK_HEARTBEAT_MS = 5_000;

interface LockOwner {
  pid: number;
  /** The holder's start time (field 22 of /proc/PID/stat), so a reused pid is not mistaken for it. */
  start: string | null;
  host: string;
  token: string;
}

async function procStart(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // the command name (field 2) may contain spaces and parentheses: count from the last ")"
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote `owner` still runs: true, false, or undefined (cannot tell). */
async function ownerAlive(owner: LockOwner): Promise<boolean | undefined> {
  if (owner.host !== hostname()) return undefined; // another machine sharing the directory
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return false;
    // EPERM: it exists but belongs to another user
  }
  if (owner.start === null) return true;
  const start = await procStart(owner.pid);
  return start === null ? true : start === owner.start;
}

async function readOwner(lock: string): Promise<LockOwner | undefined> {
  try {
    const o = JSON.parse(await readFile(join(lock, "owner"), "utf8")) as Partial<LockOwner>;
    if (typeof o.pid !== "number" || typeof o.host !== "string" || typeof o.token !== "string")
      return undefined;
    return {
      pid: o.pid,
      start: typeof o.start === "string" ? o.start : null,
      host: o.host,
      token: o.token,
    };
  } catch {
    return undefined;
  }
}

/**
 * Removes a lock left by a holder that is gone: its process has exited (same machine), or,
 * when that cannot be told (no owner file yet, another machine), its heartbeat stopped more
 * than LOCK_STALE_MS ago. A holder that is alive is never broken, however long it works (a
 * big `nft -f` may take a while). The lock is renamed away first, and put back if it turns
 * out another waiter had just taken it, so two waiters cannot both break it.
 */
async function breakIfStale(lock: string): Promise<void> {
  const owner = await readOwner(lock);
  const alive = owner ? await ownerAlive(owner) : undefined;
  if (alive === true) return;
  if (alive === undefined) {
    const age = await stat(lock).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    if (age <= LOCK_STALE_MS) return;
  }
  const aside = `${lock}.stale-${randomBytes(6).toString("hex")}`;
  try {
    await rename(lock, aside);
  } catch {
    return; // gone already, or someone else broke it
  }
  const moved = await readOwner(aside);
  const movedAge = await stat(aside).then(
    (s) => Date.now() - s.mtimeMs,
    () => Infinity,
  );
  if (moved?.token !== owner?.token || (!moved && movedAge <= LOCK_STALE_MS)) {
    // we moved a fresh lock someone took in between: give it back
    await rename(aside, lock).catch(() => undefined);
    return;
  }
  await rm(aside, { recursive: true, force: true });
}

/**
 * Serialises state changes between apply, confirm and the rollback timer. `mkdir` takes
 * the lock atomically; `owner` names the holder (pid, start time, host, a random token);
 * the holder refreshes the lock's mtime every LOCK_HEARTBEAT_MS and, on release, removes it
 * only if it is still its own. Waits up to `waitMs` for a live holder (ZT_CONFLICT after).
 */
async function withLock<T>(stateDir: string, body: () => Promise<T>, waitMs = 5_000): Promise<T> {
  const lock = join(stateDir, "lock");
  const owner: LockOwner = {
    pid: process.pid,
    start: await procStart(process.pid),
    host: hostname(),
    token: randomBytes(12).toString("hex"),
  };
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      await mkdir(lock);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      await breakIfStale(lock);
      if (Date.now() > deadline) {
        const holder = await readOwner(lock);
        throw new ZtError(
          "ZT_CONFLICT",
          `${lock}: another zt seg command holds the lock${holder ? ` (pid ${holder.pid} on ${holder.host})` : ""}`,
        );
      }
      await new Promise((r) => setTimeout(r, 25));
      continue;
    }
    try {
      await writeFile(join(lock, "owner"), JSON.stringify(owner), { mode: 0o600 });
    } catch (e) {
      await rm(lock, { recursive: true, force: true });
      throw e;
    }
    break;
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(lock, now, now).catch(() => undefined);
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await body();
  } finally {
    clearInterval(heartbeat);
    if ((await readOwner(lock))?.token === owner.token)
      await rm(lock, { recursive: true, force: true });
  }
}

function nsText(netns: string | null): string {
  return netns === null
    ? "this machine's own network namespace (no --netns)"
    : `network namespace ${JSON.stringify(netns)} (--netns ${netns})`;
}

/**
 * A pending apply's rollback target (`previous.nft`) is the table of the namespace it went
 * to: restoring it anywhere else would load that table into the wrong namespace and leave
 * the pending ruleset in place for good. Refuses when `opts.netns` is another namespace.
 */
function checkSameNetns(st: RolloutState, opts: RolloutOptions, what: string): void {
  const mine = opts.netns ?? null;
  if (st.netns === mine) return;
  throw new ZtError(
    "ZT_CONFLICT",
    `${what}: the pending apply (${st.digest.slice(0, 12)} from ${st.source}) went to ${nsText(st.netns)}, not to ${nsText(mine)}; confirm or roll it back there first`,
    { pendingNetns: st.netns, netns: mine },
  );
}

function applyFailed(what: string, e: unknown): ZtError {
  if (e instanceof ZtError) return e;
  const msg =
    e instanceof NftCommandError
      ? (e.stderr || e.message).split("\n").slice(0, 9).join("\n")
      : (e as Error).message;
  return new ZtError("ZT_SEG_APPLY_FAILED", `${what}: ${msg}`, {}, { cause: e });
}

/**
 * nft's own answer that `table inet zt` does not exist (`Error: No such file or
 * directory`, or `Error: Could not process rule: …` from older nft) — not `ip netns exec`
 * failing to enter a namespace that is not there, which ends in the same errno text.
 */
function isNoZtTable(e: unknown): boolean {
  return e instanceof NftCommandError && /^Error:.*No such file or directory/m.test(e.stderr);
}

/** The live zt table as a script that restores it exactly, or the removal script. */
async function snapshotLive(nft: NftRunner): Promise<string> {
  try {
    const listing = await nft.run(["list", "table", "inet", ZT_TABLE]);
    return `${EMPTY_PREVIOUS}${listing}`;
  } catch (e) {
    if (isNoZtTable(e)) return EMPTY_PREVIOUS;
    throw applyFailed("reading the current table", e);
  }
}

export interface ApplyOptions {
  /** 0 = no confirmation needed. */
  confirmWithinMs: number;
  source: string;
  /**
   * Starts whatever rolls the apply back at its deadline (the CLI's detached timer process).
   * Called only with a confirmation window, after the `pending` state is on disk and
   * **before** the ruleset is loaded, so no moment exists where the new ruleset is live but
   * nothing will roll it back. If it throws, nothing is applied.
   */
  armRollback?: (state: RolloutState) => Promise<void>;
}

export interface ApplyResult {
  state: RolloutState;
}

/**
 * Checks (`nft -c`) and applies a ruleset atomically, keeping the previous table for
 * rollback. With a confirmation window the state is written `pending` (with its token and
 * deadline) and the rollback armed (`armRollback`) before `nft -f` runs: if this process
 * dies at any point after that, the rollback still happens. If `nft -f` then fails, the
 * earlier state is put back (the armed rollback, holding a token that no longer matches,
 * does nothing). A second apply while one is pending keeps the last confirmed table as the
 * rollback target.
 */
export async function applyRuleset(
  ruleset: string,
  opts: RolloutOptions & ApplyOptions,
): Promise<ApplyResult> {
  makeDirectories(opts.stateDir, 0o700);
  await checkOwnedPrivately(opts.stateDir, "directory");
  return withLock(opts.stateDir, async () => {
    const statePath = join(opts.stateDir, "state.json");
    const prevText = await readFile(statePath, "utf8").catch(() => undefined);
    const scope = checkScriptScope(ruleset);
    if (!scope.ok) {
      throw new ZtError(
        "ZT_SEG_APPLY_FAILED",
        `the ruleset ${beyondZtTable(scope)}: a rollback restores only that table, so zt seg apply loads nothing else; nothing was changed`,
        { line: scope.line },
      );
    }
    const prev = await readRolloutState(opts.stateDir);
    // the rollback target kept below belongs to the pending apply's namespace
    if (prev?.status === "pending") checkSameNetns(prev, opts, "apply");
    try {
      await opts.nft.run(["-c", "-f", "-"], ruleset);
    } catch (e) {
      throw applyFailed("the ruleset does not load (nft -c)", e);
    }
    if (prev?.status !== "pending")
      await writeAtomic(join(opts.stateDir, "previous.nft"), await snapshotLive(opts.nft));
    const now = opts.clock.now();
    const pending = opts.confirmWithinMs > 0;
    const state: RolloutState = {
      status: pending ? "pending" : "confirmed",
      digest: digestOf(ruleset),
      source: opts.source,
      appliedAt: now,
      token: randomBytes(12).toString("hex"),
      deadline: pending ? now + opts.confirmWithinMs : null,
      netns: opts.netns ?? null,
      rolledBackAt: null,
      confirmedAt: pending ? null : now,
    };
    const restore = async () => {
      if (prevText === undefined) await rm(statePath, { force: true });
      else await writeAtomic(statePath, prevText);
    };
    if (pending) {
      await writeAtomic(statePath, JSON.stringify(state, null, 2));
      try {
        await opts.armRollback?.(state);
      } catch (e) {
        await restore();
        throw applyFailed("arming the rollback (nothing was applied)", e);
      }
    }
    try {
      await opts.nft.run(["-f", "-"], ruleset);
    } catch (e) {
      if (pending) await restore();
      throw applyFailed("nft -f", e);
    }
    await writeAtomic(join(opts.stateDir, "current.nft"), ruleset);
    if (!pending) await writeAtomic(statePath, JSON.stringify(state, null, 2));
    return { state };
  });
}

/** Confirms a pending apply, which stops its rollback. */
export async function confirmApply(opts: RolloutOptions): Promise<RolloutState> {
  const nothing = () =>
    new ZtError("ZT_NOT_FOUND", `nothing was applied (no state in ${opts.stateDir})`);
  if (!(await stateDirExists(opts.stateDir))) throw nothing();
  return withLock(opts.stateDir, async () => {
    const st = await readRolloutState(opts.stateDir);
    if (!st) throw nothing();
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
  if (!(await stateDirExists(opts.stateDir))) return false;
  return withLock(opts.stateDir, async () => {
    const st = await readRolloutState(opts.stateDir);
    if (!st || st.status !== "pending") return false;
    if (opts.token !== undefined && st.token !== opts.token) return false;
    await restorePrevious(opts, st);
    return true;
  });
}

/**
 * `zt seg rollback`: restores the previous table now. With nothing pending it says why, with
 * a stable code: ZT_NOT_FOUND when nothing was applied (as `confirmApply` says it),
 * ZT_CONFLICT when the last apply was confirmed or already rolled back.
 */
export async function rollbackNow(opts: RolloutOptions): Promise<RolloutState> {
  const nothing = () =>
    new ZtError(
      "ZT_NOT_FOUND",
      `nothing was applied (no state in ${opts.stateDir}); nothing to roll back`,
    );
  if (!(await stateDirExists(opts.stateDir))) throw nothing();
  return withLock(opts.stateDir, async () => {
    const st = await readRolloutState(opts.stateDir);
    if (!st) throw nothing();
    const last = `the last apply (${st.digest.slice(0, 12)} from ${st.source})`;
    if (st.status === "confirmed")
      throw new ZtError(
        "ZT_CONFLICT",
        `nothing pending: ${last} was confirmed at ${isoTime(st.confirmedAt ?? st.appliedAt)}; apply the model you want instead`,
      );
    if (st.status === "rolled-back")
      throw new ZtError(
        "ZT_CONFLICT",
        `nothing pending: ${last} was already rolled back at ${isoTime(st.rolledBackAt ?? st.appliedAt)}`,
      );
    return restorePrevious(opts, st);
  });
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

/** Loads `previous.nft` in place of a pending apply and records it rolled back; under the lock. */
async function restorePrevious(opts: RolloutOptions, st: RolloutState): Promise<RolloutState> {
  checkSameNetns(st, opts, "rollback");
  const previousPath = join(opts.stateDir, "previous.nft");
  await checkOwnedPrivately(previousPath, "file");
  const previous = await readFile(previousPath, "utf8");
  // Apply only ever saves zt's own table here; anything else was not written by zt.
  const scope = checkScriptScope(previous);
  if (!scope.ok) {
    throw new ZtError(
      "ZT_SEG_STATE_UNSAFE",
      `${previousPath} ${beyondZtTable(scope)}: zt seg apply never saves such a file, so it was changed by hand; nothing was loaded, and the pending ruleset is still live (apply a known-good model, or fix the file and run zt seg rollback)`,
      { path: previousPath, line: scope.line },
    );
  }
  try {
    await opts.nft.run(["-f", "-"], previous);
  } catch (e) {
    throw applyFailed("rollback", e);
  }
  const next: RolloutState = { ...st, status: "rolled-back", rolledBackAt: opts.clock.now() };
  await writeAtomic(join(opts.stateDir, "state.json"), JSON.stringify(next, null, 2));
  return next;
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
  counters: Record<string, number>;
  rules: RuleCounter[];
  /** The rollback timer's failure, while the apply it was armed for is still pending. */
  rollbackFailed: RollbackFailure | null;
}

/** Why the rollback timer could not roll a pending apply back (see `recordRollbackFailure`). */
export interface RollbackFailure {
  token: string;
  at: number;
  code: string;
  message: string;
}

const ROLLBACK_FAILED = "rollback-failed.json";

/**
 * The rollback timer runs detached, with nowhere to print: when it cannot roll back (the
 * saved table will not load, the state is unsafe to trust), it leaves the reason here for
 * `zt seg status`, which shows it for as long as that apply stays pending.
 */
export async function recordRollbackFailure(
  stateDir: string,
  token: string,
  at: number,
  e: unknown,
): Promise<void> {
  const failure: RollbackFailure = {
    token,
    at,
    code: e instanceof ZtError ? e.code : "ZT_INTERNAL",
    message: e instanceof Error ? e.message : String(e),
  };
  await writeAtomic(join(stateDir, ROLLBACK_FAILED), JSON.stringify(failure, null, 2));
}

async function readRollbackFailure(
  stateDir: string,
  state: RolloutState | null,
): Promise<RollbackFailure | null> {
  if (state?.status !== "pending") return null;
  const text = await readFile(join(stateDir, ROLLBACK_FAILED), "utf8").catch(() => undefined);
  if (text === undefined) return null;
  try {
    const f = JSON.parse(text) as Partial<RollbackFailure>;
    if (f.token !== state.token || typeof f.at !== "number") return null;
    return { token: f.token, at: f.at, code: String(f.code), message: String(f.message) };
  } catch {
    return null;
  }
}

type NftJson = { nftables: Record<string, Record<string, unknown>>[] };

/** The applied version and per-rule counters read from `nft -j list table inet zt`. */
export async function readStatus(opts: RolloutOptions): Promise<SegStatus> {
  const state = (await readRolloutState(opts.stateDir)) ?? null;
  const rollbackFailed = await readRollbackFailure(opts.stateDir, state);
  let json: NftJson;
  try {
    json = JSON.parse(await opts.nft.run(["-j", "list", "table", "inet", ZT_TABLE])) as NftJson;
  } catch (e) {
    if (isNoZtTable(e)) {
      return { state, live: false, counters: {}, rules: [], rollbackFailed };
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
  return { state, live: true, counters, rules, rollbackFailed };
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
