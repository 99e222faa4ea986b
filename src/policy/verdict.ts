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

/** Effect and annotations by policy id (a Map, or an engine's faster lookup). */
export interface MetaLookup {
  get(id: string): PolicyMeta | undefined;
}

export interface VerdictInput {
  decision: "allow" | "deny";
  reasons: string[];
  errors: PolicyError[];
  meta: MetaLookup;
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
  const reasons = input.reasons.length > 1 ? [...input.reasons].sort() : input.reasons.slice();
  const determining: DeterminingPolicy[] = [];
  let annotatedReason: string | undefined;
  let onlyStepUp = true;
  for (const id of reasons) {
    const m = input.meta.get(id);
    const annotations = m ? m.annotations : {};
    determining.push({ id, effect: m ? m.effect : "forbid", annotations });
    if (annotatedReason === undefined && annotations["reason"])
      annotatedReason = annotations["reason"];
    if (!isStepUpForbid(m)) onlyStepUp = false;
  }
  let verdict: AuthorizationResult["verdict"];
  let reason: string;
  if (input.decision === "allow") {
    verdict = "allow";
    reason = annotatedReason ?? "allowed";
  } else if (reasons.length === 0) {
    verdict = "deny";
    reason = input.errors.length > 0 ? "policy-error" : "no-matching-permit";
  } else {
    let erroredForbid = false;
    for (const e of input.errors) {
      const m = input.meta.get(e.policyId);
      if (!m || (m.effect === "forbid" && !isStepUpForbid(m))) erroredForbid = true;
    }
    if (onlyStepUp && !erroredForbid && input.allowsWithoutStepUp()) {
      verdict = "step-up";
      reason = annotatedReason ?? "step-up-required";
    } else {
      verdict = "deny";
      reason = annotatedReason ?? "forbidden";
    }
  }
  return { decision: input.decision, verdict, reasons, errors: input.errors, reason, determining };
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
