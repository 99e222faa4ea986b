import type { AppContext } from "../app/index.js";
import { countPolicyWatchError } from "../audit/index.js";
import { isZtError, ZtError } from "../core/errors.js";
import {
  assertPolicyTests,
  createPolicyEngine,
  loadPolicySet,
  type PolicyEngine,
} from "../policy/index.js";
import {
  PolicyFolderWatch,
  type PolicyFolderWatchOptions,
  type PolicyWatchStatus,
} from "./policy-folder-watch.js";

export type { PolicyWatchStatus } from "./policy-folder-watch.js";

export interface PolicyWatchOptions extends Pick<
  PolicyFolderWatchOptions,
  "pollIntervalMs" | "debounceMs" | "watch"
> {
  /** Told about each failure of the folder watch (a line for the log). */
  onWatchError?: (message: string) => void;
}

export interface PolicyLoadReport {
  ok: boolean;
  version: string | undefined;
  error?: string;
  policies: number;
}

/**
 * Holds the policy set in force. A new set replaces it only after it parsed and
 * validated completely; on a bad reload the last good set stays and the error is
 * reported (and audited). The first load must succeed or zt refuses to start.
 */
export class PolicyHolder {
  readonly #ctx: AppContext;
  #engine: PolicyEngine | undefined;
  #lastError: string | undefined;
  #folder: PolicyFolderWatch | undefined;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
  }

  /** Loads the configured policy directory; throws ZT_POLICY_INVALID when it is bad. */
  load(): PolicyEngine {
    // What the content check compares against: an edit from here on is a change.
    this.#folder?.noteLoaded();
    const set = loadPolicySet(this.#ctx.config.policies);
    const engine = createPolicyEngine(this.#ctx.config.policy_engine, set);
    // Configured policy tests must pass before a set goes into force.
    assertPolicyTests(engine, this.#ctx.config.policy_tests);
    this.#engine = engine;
    this.#lastError = undefined;
    return engine;
  }

  /** The engine in force. Throws if nothing was ever loaded (callers deny). */
  get engine(): PolicyEngine {
    if (!this.#engine) throw new ZtError("ZT_UNAVAILABLE", "no policy set loaded");
    return this.#engine;
  }

  /** Reloads; on failure keeps the previous set. */
  reload(): PolicyLoadReport {
    const before = this.#engine?.policySet.version;
    try {
      const engine = this.load();
      if (engine.policySet.version !== before) {
        this.#ctx.audit.record({
          kind: "policy.load",
          outcome: "success",
          data: { version: engine.policySet.version, policies: engine.policySet.policies.length },
        });
        void this.#ctx.events
          .publish("policy.changed", { version: engine.policySet.version })
          .catch(() => undefined);
      }
      return {
        ok: true,
        version: engine.policySet.version,
        policies: engine.policySet.policies.length,
      };
    } catch (e) {
      const message = isZtError(e) ? e.message : String((e as Error).message ?? e);
      this.#lastError = message;
      this.#ctx.audit.record({
        kind: "policy.load",
        outcome: "failure",
        reason: "policy-invalid",
        data: { error: message },
      });
      return {
        ok: false,
        version: before,
        error: message,
        policies: this.#engine?.policySet.policies.length ?? 0,
      };
    }
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /**
   * Reloads when files in the policy directory change. A failing file watch (folder
   * removed or replaced, inotify or descriptor limits) is logged through `onWatchError`,
   * audited (`policy.watch`), counted (`zt_policy_watch_errors_total`) and shown in
   * `watchStatus()`; the folder is then followed by a periodic content check and the
   * watch re-established, so edits still apply.
   */
  watch(onReload?: (r: PolicyLoadReport) => void, options: PolicyWatchOptions = {}): void {
    if (this.#folder) return;
    this.#folder = new PolicyFolderWatch(this.#ctx.config.policies, {
      onChange: () => {
        const r = this.reload();
        onReload?.(r);
      },
      onError: (message) => {
        countPolicyWatchError();
        this.#ctx.audit.record({
          kind: "policy.watch",
          outcome: "failure",
          reason: "policy-watch-failed",
          data: { folder: this.#ctx.config.policies, error: message },
        });
        options.onWatchError?.(message);
      },
      ...(options.pollIntervalMs !== undefined ? { pollIntervalMs: options.pollIntervalMs } : {}),
      ...(options.debounceMs !== undefined ? { debounceMs: options.debounceMs } : {}),
      ...(options.watch !== undefined ? { watch: options.watch } : {}),
    });
    this.#folder.start();
  }

  /** How the policy folder is followed (for /readyz); mode `off` when not watched. */
  watchStatus(): PolicyWatchStatus {
    return this.#folder?.status() ?? { mode: "off", errors: 0, error: null };
  }

  close(): void {
    this.#folder?.close();
  }
}
