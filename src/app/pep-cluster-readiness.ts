/**
 * Readiness of the PEP worker processes, for `/readyz`: pure, the primary gathers the
 * reports. Fail closed: a worker that serves (listens) counts against readiness when
 * it runs another policy set than the primary (for longer than a reload takes) or other
 * reloadable config settings, has not applied the primary's last reload, is out of
 * contact with the store, or does not answer at all.
 */
import type { PepWorkerStatus } from "./pep-worker.js";

/** One worker slot as the primary sees it. */
export interface WorkerSlotReport {
  /** 1-based slot number (the worker's PEP id is `pep-<worker>`). */
  worker: number;
  /** listening: serves traffic; starting: forked, not yet listening; down: waiting to be restarted. */
  state: "listening" | "starting" | "down";
  /** A listening worker's answer; absent when it did not answer in time. */
  status?: PepWorkerStatus;
  /** Why the slot's last worker failed or exited, while no worker of the slot listens. */
  last_error?: string;
}

export interface ClusterReadiness {
  ready: boolean;
  /** Merged into `/readyz`'s body. */
  detail: {
    proxy_workers: number;
    proxy_workers_listening: number;
    /** Every slot: state, and a listening worker's policy version, error, store contact. */
    proxy_worker_status: Array<Record<string, unknown>>;
    /** Each reason the workers make zt not ready, naming the worker. */
    proxy_workers_not_ready: string[];
  };
}

/**
 * How long a worker may run another policy set than the primary before it counts
 * against readiness: every process reloads on its own watch of the policy folder, so
 * right after an edit one has it a moment before the other. A health check in that
 * moment must not take the node out of its load balancer.
 */
export const POLICY_SKEW_GRACE_MS = 10_000;

export function clusterReadiness(o: {
  primaryPolicyVersion: string;
  /** Digest of the primary's reloadable config settings (absent: not compared). */
  primaryConfigVersion?: string;
  /** The primary's reload generation (SIGHUPs so far). */
  generation: number;
  reports: WorkerSlotReport[];
  /**
   * For how long each worker (by slot) has been seen on another set than the primary's
   * (see POLICY_SKEW_GRACE_MS); unknown counts as past the grace.
   */
  policySkewMs?: (worker: number) => number;
}): ClusterReadiness {
  const reasons: string[] = [];
  let listening = 0;
  const status = o.reports.map((r) => {
    const name = `worker ${r.worker} (pep-${r.worker})`;
    if (r.state !== "listening")
      return { worker: r.worker, state: r.state, last_error: r.last_error ?? null };
    listening++;
    const s = r.status;
    if (!s) {
      reasons.push(`${name} did not answer`);
      return { worker: r.worker, state: r.state, answered: false };
    }
    if (
      s.policy_version !== o.primaryPolicyVersion &&
      (o.policySkewMs?.(r.worker) ?? Infinity) >= POLICY_SKEW_GRACE_MS
    )
      reasons.push(
        `${name} serves policy version ${s.policy_version}, not ${o.primaryPolicyVersion} (the primary's)${s.policy_error ? `: ${s.policy_error}` : ""}`,
      );
    if (o.primaryConfigVersion !== undefined && s.config_version !== o.primaryConfigVersion)
      reasons.push(
        `${name} serves config version ${s.config_version}, not ${o.primaryConfigVersion} (the primary's)${s.config_error ? `: ${s.config_error}` : ""}`,
      );
    if (s.reload_generation < o.generation)
      reasons.push(`${name} has not applied reload ${o.generation} (at ${s.reload_generation})`);
    // As for the primary: out of contact for more than 5 s, it cannot hear revocations.
    if (s.store !== "fresh")
      reasons.push(
        `${name}: store ${s.store}, ${
          // Infinity (sent as null over IPC) while it resyncs after pruned events.
          typeof s.store_last_contact_ms === "number" && Number.isFinite(s.store_last_contact_ms)
            ? `last contact ${Math.round(s.store_last_contact_ms)} ms ago`
            : "resyncing from the store (no contact counted yet)"
        }`,
      );
    return { worker: r.worker, state: r.state, ...s };
  });
  if (listening === 0) reasons.push("no PEP worker listens");
  return {
    ready: reasons.length === 0,
    detail: {
      proxy_workers: o.reports.length,
      proxy_workers_listening: listening,
      proxy_worker_status: status,
      proxy_workers_not_ready: reasons,
    },
  };
}
