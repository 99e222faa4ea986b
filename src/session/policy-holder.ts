import { watch, type FSWatcher } from "node:fs";
import type { AppContext } from "../app/index.js";
import { isZtError, ZtError } from "../core/errors.js";
import {
  assertPolicyTests,
  createPolicyEngine,
  loadPolicySet,
  type PolicyEngine,
} from "../policy/index.js";

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
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
  }

  /** Loads the configured policy directory; throws ZT_POLICY_INVALID when it is bad. */
  load(): PolicyEngine {
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

  /** Reloads when files in the policy directory change. */
  watch(onReload?: (r: PolicyLoadReport) => void): void {
    try {
      this.#watcher = watch(this.#ctx.config.policies, () => {
        if (this.#debounce) clearTimeout(this.#debounce);
        this.#debounce = setTimeout(() => onReload?.(this.reload()), 200);
      });
      this.#watcher.on("error", () => undefined);
    } catch {
      /* watching is a convenience; SIGHUP and `zt policy reload` still work */
    }
  }

  close(): void {
    this.#watcher?.close();
    if (this.#debounce) clearTimeout(this.#debounce);
  }
}
