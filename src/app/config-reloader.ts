import { countConfigReload } from "../audit/index.js";
import {
  adoptConfigReload,
  planConfigReload,
  reloadableConfigVersion,
  type ConfigReloadPlan,
  type ZtConfig,
} from "../config/index.js";
import { isZtError } from "../core/errors.js";
import type { AppContext } from "./app-context.js";
import type { ReloadCut } from "../proxy/index.js";
import type { PepNode } from "./pep-node.js";
import type { Services } from "./services.js";

export interface ConfigReloaderOptions {
  ctx: AppContext;
  services: Services;
  /** This process's PEP, when it runs one. */
  pep?: PepNode | undefined;
  /** One line for the log per reload (and one naming the keys that need a restart). */
  log: (line: string) => void;
  /**
   * The primary audits and counts each reload it applies or refuses; a PEP worker
   * applies the primary's (already audited) result and audits only a failure of its own
   * (shown in /readyz).
   */
  primary: boolean;
  /**
   * Called with the process's config as soon as a reload's keys are adopted into it, in
   * the same synchronous step (nothing runs in between): for parts that keep their own
   * copy of a reloadable key, such as the jails' never-ban list (`trusted_proxies`,
   * `api.trusted_proxies`), which must change together with who is trusted.
   */
  onAdopted?: ((config: ZtConfig) => void) | undefined;
}

export interface ConfigReloadResult {
  ok: boolean;
  /** Why it was refused (the last good config stays in force). */
  error?: string;
  plan?: ConfigReloadPlan;
}

/** What /readyz shows of the config in force. */
export interface ConfigReloadStatus {
  /** Digest of the reloadable settings in force (the same in every process of one zt). */
  config_version: string;
  /** The last reload's error, while the last good config stays in force; else null. */
  config_error: string | null;
  /** Keys changed in zt.yaml at the last reload that only a restart applies. */
  config_restart_required: string[];
}

/**
 * Reloads of zt.yaml (SIGHUP) in one zt process: the primary re-reads and validates the
 * file as at start; a PEP worker is handed the primary's result. The reloadable keys
 * (`RELOADABLE_KEYS`) are applied to the PEP, to the App entities policies see, and to
 * the process's config object; the other changed keys are named as needing a restart.
 * All or nothing: an invalid file, or new routes whose needs cannot be met (zt's SVID
 * for `upstream_mtls`, a listener certificate for a new host), leave the last good
 * config in force, logged, audited (`config.reload`, failure) and shown in /readyz.
 */
export class ConfigReloader {
  readonly #o: ConfigReloaderOptions;
  #queue: Promise<unknown> = Promise.resolve();
  #error: string | undefined;
  #restartRequired: string[] = [];
  #version: string;

  constructor(o: ConfigReloaderOptions) {
    this.#o = o;
    this.#version = reloadableConfigVersion(o.ctx.config);
  }

  /**
   * Reloads from `read()` (a validated config; it throws when the file is invalid), one
   * reload at a time in the order asked. Never rejects.
   */
  reload(read: () => ZtConfig): Promise<ConfigReloadResult> {
    const run = this.#queue.then(() => this.#reload(read));
    this.#queue = run;
    return run;
  }

  status(): ConfigReloadStatus {
    return {
      config_version: this.#version,
      config_error: this.#error ?? null,
      config_restart_required: this.#restartRequired,
    };
  }

  async #reload(read: () => ZtConfig): Promise<ConfigReloadResult> {
    const { ctx, services, pep, log } = this.#o;
    let plan: ConfigReloadPlan;
    try {
      plan = planConfigReload(ctx.config, read());
    } catch (e) {
      return this.#refused("config-invalid", e);
    }
    let cut: ReloadCut | undefined;
    if (plan.applied.length > 0) {
      try {
        cut = await pep?.reconfigure(plan.config);
      } catch (e) {
        return this.#refused("config-apply-failed", e);
      }
      adoptConfigReload(ctx.config, plan);
      this.#o.onAdopted?.(ctx.config);
      services.snapshot.setApps(ctx.config.routes);
      this.#version = reloadableConfigVersion(ctx.config);
    }
    this.#error = undefined;
    this.#restartRequired = plan.restartRequired;
    if (this.#o.primary) countConfigReload("applied");
    const other = plan.applied.filter((k) => k !== "routes");
    if (this.#o.primary && plan.applied.length + plan.restartRequired.length > 0)
      ctx.audit.record({
        kind: "config.reload",
        outcome: "success",
        data: {
          config_version: this.#version,
          routes_added: plan.routes.added,
          routes_removed: plan.routes.removed,
          routes_changed: plan.routes.changed,
          changed: other,
          restart_required: plan.restartRequired,
          connections_cut: cut?.cut ?? 0,
          connections_left_to_finish: cut?.draining ?? 0,
        },
      });
    const parts = [
      ...(plan.routes.added.length ? [`routes added: ${plan.routes.added.join(", ")}`] : []),
      ...(plan.routes.removed.length ? [`routes removed: ${plan.routes.removed.join(", ")}`] : []),
      ...(plan.routes.changed.length ? [`routes changed: ${plan.routes.changed.join(", ")}`] : []),
      ...(other.length ? [`${other.join(", ")} changed`] : []),
      ...(cut?.cut ? [`${exchanges(cut.cut)} cut`] : []),
      ...(cut?.draining
        ? [`${exchanges(cut.draining)} left to finish within limits.reload_grace`]
        : []),
    ];
    log(`config reloaded (${parts.length ? parts.join("; ") : "no change applied"})`);
    // After the grace: how many were still open (a WebSocket, a stream …) and were cut.
    void cut?.drained.then((n) => {
      if (n > 0)
        log(
          `config reload: ${exchanges(n)} on a removed or changed route still open after limits.reload_grace: cut`,
        );
    });
    if (plan.restartRequired.length)
      log(
        `config: ${plan.restartRequired.join(", ")} changed in zt.yaml: not applied, only a restart applies ${plan.restartRequired.length === 1 ? "it" : "them"}`,
      );
    return { ok: true, plan };
  }

  #refused(reason: "config-invalid" | "config-apply-failed", e: unknown): ConfigReloadResult {
    const message = isZtError(e) ? e.message : String((e as Error).message ?? e);
    this.#error = message;
    if (this.#o.primary) countConfigReload("refused");
    this.#o.ctx.audit.record({
      kind: "config.reload",
      outcome: "failure",
      reason,
      data: { error: message },
    });
    this.#o.log(`config reload refused, keeping the last good config: ${message}`);
    return { ok: false, error: message };
  }
}

/** "1 connection", "3 connections": the exchanges a reload cut or left to finish. */
function exchanges(n: number): string {
  return `${n} connection${n === 1 ? "" : "s"}`;
}
