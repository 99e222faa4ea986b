import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, watch as fsWatch, type FSWatcher } from "node:fs";
import { basename, join } from "node:path";

/** How the policy folder is being followed, for /readyz (`policy_watch`). */
export interface PolicyWatchStatus {
  /** `watching`: file events (plus the periodic content check); `polling`: the content check only. */
  mode: "watching" | "polling" | "off";
  /** Watch failures since start (also `zt_policy_watch_errors_total`). */
  errors: number;
  /** The last failure, while the watch has not been re-established since. */
  error: string | null;
}

export interface PolicyFolderWatchOptions {
  /** Called (debounced) when the folder's content may have changed. */
  onChange: () => void;
  /** Called on each watch failure, with a message fit for the log (no file contents). */
  onError: (message: string) => void;
  /** Periodic content check, and retry of a failed watch (ms, default 5000). */
  pollIntervalMs?: number;
  /** Delay collecting a burst of file events into one change (ms, default 200). */
  debounceMs?: number;
  /** `fs.watch` (tests pass a wrapper to reach the real watcher). */
  watch?: typeof fsWatch;
}

/**
 * Follows a policy folder so that edits apply, and keeps doing so when the file watch
 * fails. `fs.watch` can fail at creation (EMFILE, ENOSPC from the inotify limits, a
 * missing folder), emit `error` later, or go silent: a watched folder that is removed or
 * renamed (an editor's or a deploy tool's atomic replace) reports one `rename` and
 * nothing after. Each of those is reported through `onError` and the folder is then
 * followed by a periodic content check (a hash of its files) while the watch is
 * re-established on every check; the check also runs while watching, as a safety net.
 */
export class PolicyFolderWatch {
  readonly #dir: string;
  readonly #o: PolicyFolderWatchOptions;
  readonly #watchFn: typeof fsWatch;
  #watcher: FSWatcher | undefined;
  #identity: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #seen: string;
  #closed = false;
  #status: PolicyWatchStatus = { mode: "off", errors: 0, error: null };

  constructor(dir: string, options: PolicyFolderWatchOptions) {
    this.#dir = dir;
    this.#o = options;
    this.#watchFn = options.watch ?? fsWatch;
    this.#seen = this.#fingerprint();
  }

  start(): void {
    this.#startWatcher();
    const every = Math.max(10, this.#o.pollIntervalMs ?? 5000);
    this.#timer = setInterval(() => this.#check(), every);
    this.#timer.unref();
  }

  status(): PolicyWatchStatus {
    return { ...this.#status };
  }

  /** Records the content the policy set in force was loaded from (call before loading). */
  noteLoaded(): void {
    this.#seen = this.#fingerprint();
  }

  close(): void {
    this.#closed = true;
    this.#stopWatcher();
    if (this.#timer) clearInterval(this.#timer);
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#timer = undefined;
    this.#debounce = undefined;
    this.#status.mode = "off";
  }

  #startWatcher(): boolean {
    if (this.#closed) return false;
    let w: FSWatcher;
    try {
      this.#identity = folderIdentity(this.#dir);
      w = this.#watchFn(this.#dir, (type, name) => this.#onEvent(w, type, name));
    } catch (e) {
      this.#fail(e);
      return false;
    }
    w.on("error", (e) => {
      if (this.#watcher === w) this.#fail(e);
    });
    this.#watcher = w;
    this.#status.mode = "watching";
    this.#status.error = null;
    return true;
  }

  #stopWatcher(): void {
    const w = this.#watcher;
    this.#watcher = undefined;
    try {
      w?.close();
    } catch {
      /* already closed */
    }
  }

  #onEvent(w: FSWatcher, type: string, name: string | Buffer | null): void {
    if (this.#watcher !== w) return;
    // Removed or replaced folder: the watch follows the old inode and will hear nothing
    // more. Linux reports it as a `rename` of the folder's own name (its inode number may
    // be reused at once by a new folder of that name, so the identity alone can miss it).
    const self = type === "rename" && name !== null && String(name) === basename(this.#dir);
    if (self || folderIdentity(this.#dir) !== this.#identity) {
      this.#fail(new Error("the policy folder was removed or replaced"));
      this.#changed();
      return;
    }
    this.#changed();
  }

  #fail(e: unknown): void {
    this.#stopWatcher();
    this.#status.mode = this.#closed ? "off" : "polling";
    this.#status.errors++;
    this.#status.error = describeWatchError(e);
    this.#o.onError(this.#status.error);
  }

  #changed(): void {
    if (this.#closed) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#o.onChange();
    }, this.#o.debounceMs ?? 200);
    this.#debounce.unref();
  }

  /** The periodic check: re-establish a failed watch, and reload on a content change. */
  #check(): void {
    if (this.#closed) return;
    if (this.#watcher && folderIdentity(this.#dir) !== this.#identity)
      this.#fail(new Error("the policy folder was removed or replaced"));
    if (!this.#watcher && folderIdentity(this.#dir) !== undefined) this.#startWatcher();
    if (this.#fingerprint() !== this.#seen) this.#changed();
  }

  /** A hash of the folder's files (names and contents); "missing" when it cannot be read. */
  #fingerprint(): string {
    try {
      const h = createHash("sha256");
      for (const name of readdirSync(this.#dir).sort()) {
        const p = join(this.#dir, name);
        if (!statSync(p).isFile()) continue;
        h.update(name).update("\0").update(readFileSync(p)).update("\0");
      }
      return h.digest("hex");
    } catch {
      return "missing";
    }
  }
}

/** dev:ino of the folder, or undefined when it is not there. */
function folderIdentity(dir: string): string | undefined {
  try {
    const s = statSync(dir);
    return s.isDirectory() ? `${s.dev}:${s.ino}` : undefined;
  } catch {
    return undefined;
  }
}

function describeWatchError(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown } | undefined;
  const code = typeof err?.code === "string" ? err.code : undefined;
  const message = typeof err?.message === "string" ? err.message : String(e);
  if (code === "ENOSPC" || code === "EMFILE")
    return `${message} (inotify or file descriptor limit reached: raise fs.inotify.max_user_watches / max_user_instances or ulimit -n)`;
  return message;
}
