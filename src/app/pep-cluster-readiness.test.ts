import { describe, expect, it } from "vitest";
import {
  clusterReadiness,
  POLICY_SKEW_GRACE_MS,
  type WorkerSlotReport,
} from "./pep-cluster-readiness.js";
import type { PepWorkerStatus } from "./pep-worker.js";

const fine: PepWorkerStatus = {
  policy_version: "v2",
  policy_error: null,
  reload_generation: 3,
  config_version: "c2",
  config_error: null,
  store: "fresh",
  store_last_contact_ms: 20,
};
const listening = (worker: number, s: Partial<PepWorkerStatus> = {}): WorkerSlotReport => ({
  worker,
  state: "listening",
  status: { ...fine, ...s },
});
const check = (reports: WorkerSlotReport[]) =>
  clusterReadiness({
    primaryPolicyVersion: "v2",
    primaryConfigVersion: "c2",
    generation: 3,
    reports,
  });

describe("clusterReadiness", () => {
  it("is ready when every listening worker runs the primary's set and reloads, in contact", () => {
    const r = check([listening(1), listening(2)]);
    expect(r.ready).toBe(true);
    expect(r.detail.proxy_workers_listening).toBe(2);
    expect(r.detail.proxy_workers_not_ready).toEqual([]);
  });

  it("reports a refused reload that kept the same set as the primary's, and stays ready", () => {
    const r = check([
      listening(1, { policy_error: "main.cedar:1:9: unexpected end" }),
      listening(2),
    ]);
    expect(r.ready).toBe(true);
    expect(r.detail.proxy_worker_status[0]).toMatchObject({
      worker: 1,
      policy_error: "main.cedar:1:9: unexpected end",
    });
  });

  it("fails closed on a listening worker with another set, an old reload, a lost store or no answer", () => {
    const r = check([
      listening(1, { policy_version: "v1", policy_error: "bad", reload_generation: 2 }),
      listening(2, { store: "degraded", store_last_contact_ms: 6_000.4 }),
      { worker: 3, state: "listening" },
    ]);
    expect(r.ready).toBe(false);
    expect(r.detail.proxy_workers_not_ready).toEqual([
      "worker 1 (pep-1) serves policy version v1, not v2 (the primary's): bad",
      "worker 1 (pep-1) has not applied reload 3 (at 2)",
      "worker 2 (pep-2): store degraded, last contact 6000 ms ago",
      "worker 3 (pep-3) did not answer",
    ]);
  });

  it("fails closed on a worker that could not apply the primary's config reload, naming why", () => {
    const r = check([
      listening(1, { config_version: "c1", config_error: "zt's SVID: store unreachable" }),
      listening(2),
    ]);
    expect(r.ready).toBe(false);
    expect(r.detail.proxy_workers_not_ready).toEqual([
      "worker 1 (pep-1) serves config version c1, not c2 (the primary's): zt's SVID: store unreachable",
    ]);
  });

  it("names a slot that does not listen with its last error, and is not ready with none listening", () => {
    const down: WorkerSlotReport = { worker: 2, state: "down", last_error: "ZT_POLICY_INVALID: x" };
    const some = check([listening(1), down]);
    expect(some.ready).toBe(true);
    expect(some.detail.proxy_worker_status[1]).toEqual({
      worker: 2,
      state: "down",
      last_error: "ZT_POLICY_INVALID: x",
    });
    const none = check([{ worker: 1, state: "starting" }, down]);
    expect(none.ready).toBe(false);
    expect(none.detail.proxy_workers_not_ready).toEqual(["no PEP worker listens"]);
  });

  it("gives a worker a moment to apply a policy edit the primary applied first, then fails closed", () => {
    const skewed = [listening(1, { policy_version: "v1" }), listening(2)];
    const at = (ms: number) =>
      clusterReadiness({
        primaryPolicyVersion: "v2",
        generation: 3,
        reports: skewed,
        policySkewMs: () => ms,
      });
    expect(at(0).ready).toBe(true);
    expect(at(POLICY_SKEW_GRACE_MS - 1).ready).toBe(true);
    expect(at(POLICY_SKEW_GRACE_MS).ready).toBe(false);
    expect(at(POLICY_SKEW_GRACE_MS).detail.proxy_workers_not_ready).toEqual([
      "worker 1 (pep-1) serves policy version v1, not v2 (the primary's)",
    ]);
  });

  it("says a worker resyncing from the store is (its last contact is no number)", () => {
    const r = check([
      listening(1, { store: "stale", store_last_contact_ms: null as unknown as number }),
    ]);
    expect(r.ready).toBe(false);
    expect(r.detail.proxy_workers_not_ready).toEqual([
      "worker 1 (pep-1): store stale, resyncing from the store (no contact counted yet)",
    ]);
  });
});
