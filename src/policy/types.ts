import type { CedarValueJson, PolicyJson, SchemaJson } from "@cedar-policy/cedar-wasm/nodejs";

/**
 * The policy engine's public vocabulary. Both engines (the compiled evaluator and the
 * reference @cedar-policy/cedar-wasm binding) implement `PolicyEngine` over these types,
 * so swapping engines is one line in the composition root.
 */

export type CedarValue = CedarValueJson;

export interface EntityUid {
  type: string;
  id: string;
}

/** An entity in Cedar's JSON entity format. */
export interface CedarEntity {
  uid: EntityUid;
  attrs: Record<string, CedarValue>;
  parents: EntityUid[];
  tags?: Record<string, CedarValue>;
}

export interface AuthorizationRequest {
  principal: EntityUid;
  action: EntityUid;
  resource: EntityUid;
  context: Record<string, CedarValue>;
}

/** zt's verdict: Cedar's allow/deny, plus step-up when only `@step_up` policies deny. */
export type Verdict = "allow" | "deny" | "step-up";

export interface PolicyError {
  policyId: string;
  message: string;
}

export interface AuthorizationResult {
  /** Cedar's own decision. */
  decision: "allow" | "deny";
  /** zt's verdict (see Verdict). */
  verdict: Verdict;
  /** Determining policy ids, sorted (Cedar's `reason`). */
  reasons: string[];
  /** Policies whose evaluation raised an error (skipped, as Cedar does). */
  errors: PolicyError[];
  /**
   * A stable, kebab-case reason for the audit record and the 403 page: the `@reason`
   * annotation of the first determining forbid/permit, or `no-matching-permit`,
   * `policy-error` when nothing applied.
   */
  reason: string;
  /** The determining policies with their effect and annotations (same order as `reasons`). */
  determining?: DeterminingPolicy[];
}

export interface DeterminingPolicy {
  id: string;
  effect: "permit" | "forbid";
  annotations: Record<string, string>;
}

/** One policy or template of a loaded set, with where it came from. */
export interface LoadedPolicy {
  id: string;
  kind: "static" | "template";
  effect: "permit" | "forbid";
  json: PolicyJson;
  text: string;
  annotations: Record<string, string>;
  /** Source file and 1-based line, when loaded from files. */
  file?: string;
  line?: number;
}

export interface TemplateLinkSpec {
  templateId: string;
  newId: string;
  values: Record<string, EntityUid>;
}

/** A parsed, validated policy set: what engines are built from. Never partially loaded. */
export interface LoadedPolicySet {
  policies: LoadedPolicy[];
  templateLinks: TemplateLinkSpec[];
  schema?: SchemaJson<string> | undefined;
  /** A content hash of the policies, links and schema (changes whenever any of them does). */
  version: string;
}

/** Anything that can answer entity lookups for an authorization. */
export interface EntityView {
  get(uid: EntityUid): CedarEntity | undefined;
  /** True when `child` is `ancestor` or transitively a member of it. */
  isIn(child: EntityUid, ancestor: EntityUid): boolean;
  /** Every entity (used by reference engines, and tools). */
  all(): Iterable<CedarEntity>;
}

export interface PolicyEngine {
  readonly kind: "compiled" | "reference";
  readonly policySet: LoadedPolicySet;
  authorize(request: AuthorizationRequest, entities: EntityView): AuthorizationResult;
}
