import type {
  AuthorizationResult,
  DeterminingPolicy,
  LoadedPolicy,
  LoadedPolicySet,
  PolicyError,
} from "./types.js";

/** What a verdict needs to know about one policy (static or template-linked). */
export interface PolicyMeta {
  effect: "permit" | "forbid";
  annotations: Record<string, string>;
}

/** Effect and annotations per policy id, template links inheriting their template's. */
export function policyMetaIndex(set: LoadedPolicySet): Map<string, PolicyMeta> {
  const out = new Map<string, PolicyMeta>();
  const byId = new Map<string, LoadedPolicy>(set.policies.map((p) => [p.id, p]));
  for (const p of set.policies) {
    if (p.kind === "static") out.set(p.id, { effect: p.effect, annotations: p.annotations });
  }
  for (const link of set.templateLinks) {
    const t = byId.get(link.templateId);
    if (t) out.set(link.newId, { effect: t.effect, annotations: t.annotations });
  }
  return out;
}

/** True for a forbid marked `@step_up` (any value). */
export function isStepUpForbid(meta: PolicyMeta | undefined): boolean {
  return !!meta && meta.effect === "forbid" && "step_up" in meta.annotations;
}

export interface VerdictInput {
  decision: "allow" | "deny";
  reasons: string[];
  errors: PolicyError[];
  meta: ReadonlyMap<string, PolicyMeta>;
  /**
   * Would the request be allowed after a step-up: with fresh MFA (`mfa_age_seconds` = 0)
   * and the `@step_up` forbids satisfied? Only called when every determining policy is a
   * step-up forbid.
   */
  allowsWithoutStepUp: () => boolean;
}

/**
 * zt's verdict on top of Cedar's decision:
 * - allow → `allow`;
 * - deny caused only by `@step_up` forbids, with no other forbid erroring, and allowed once
 *   MFA is fresh and those are lifted → `step-up` (re-authenticate with MFA, then retry);
 * - otherwise `deny`.
 * `reason` is the `@reason` of the first determining policy (by id) that has one, else
 * `allowed` / `step-up-required` / `forbidden`, or `no-matching-permit` / `policy-error`
 * when nothing determined a deny.
 */
export function decideVerdict(input: VerdictInput): AuthorizationResult {
  const reasons = [...input.reasons].sort();
  const determining: DeterminingPolicy[] = [];
  let annotated: DeterminingPolicy | undefined;
  let onlyStepUp = true;
  for (const id of reasons) {
    const m = input.meta.get(id);
    const d: DeterminingPolicy = {
      id,
      effect: m?.effect ?? "forbid",
      annotations: m?.annotations ?? {},
    };
    determining.push(d);
    if (!annotated && d.annotations["reason"]) annotated = d;
    if (!isStepUpForbid(m)) onlyStepUp = false;
  }
  const base = { decision: input.decision, reasons, errors: input.errors, determining };
  if (input.decision === "allow") {
    return { ...base, verdict: "allow", reason: annotated?.annotations["reason"] ?? "allowed" };
  }
  if (reasons.length === 0) {
    const reason = input.errors.length > 0 ? "policy-error" : "no-matching-permit";
    return { ...base, verdict: "deny", reason };
  }
  let erroredForbid = false;
  for (const e of input.errors) {
    const m = input.meta.get(e.policyId);
    if (!m || (m.effect === "forbid" && !isStepUpForbid(m))) erroredForbid = true;
  }
  if (onlyStepUp && !erroredForbid && input.allowsWithoutStepUp()) {
    return {
      ...base,
      verdict: "step-up",
      reason: annotated?.annotations["reason"] ?? "step-up-required",
    };
  }
  return { ...base, verdict: "deny", reason: annotated?.annotations["reason"] ?? "forbidden" };
}

/** The fail-closed result for an exception inside an engine. */
export function policyErrorResult(message: string): AuthorizationResult {
  return {
    decision: "deny",
    verdict: "deny",
    reasons: [],
    errors: [{ policyId: "", message }],
    reason: "policy-error",
    determining: [],
  };
}
