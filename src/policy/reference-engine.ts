import * as cedar from "./cedar-wasm.js";
import type { EntityJson, PolicySet as WasmPolicySet } from "@cedar-policy/cedar-wasm/nodejs";
import { collectEntityRefs, uidKey } from "./entity-store.js";
import type {
  AuthorizationRequest,
  AuthorizationResult,
  CedarEntity,
  EntityUid,
  EntityView,
  LoadedPolicySet,
  PolicyEngine,
  PolicyError,
} from "./types.js";
import { schemaActionEntities } from "./schema-values.js";
import { decideVerdict, isStepUpForbid, policyErrorResult, policyMetaIndex } from "./verdict.js";
import type { PolicyMeta } from "./verdict.js";

let nextSetId = 0;

// Policies cross as text, not JSON: the JSON form carries Long literals as JS numbers,
// which lose precision beyond 2^53.
function toWasmPolicySet(set: LoadedPolicySet, keep: (id: string) => boolean): WasmPolicySet {
  const staticPolicies: Record<string, string> = {};
  const templates: Record<string, string> = {};
  for (const p of set.policies) {
    if (p.kind === "template") templates[p.id] = p.text;
    else if (keep(p.id)) staticPolicies[p.id] = p.text;
  }
  return {
    staticPolicies,
    templates,
    templateLinks: set.templateLinks
      .filter((l) => keep(l.newId))
      .map((l) => ({ templateId: l.templateId, newId: l.newId, values: l.values })),
  };
}

function preparse(set: WasmPolicySet): string {
  const id = `zt-${++nextSetId}`;
  const res = cedar.preparsePolicySet(id, set);
  if (res.type === "failure") {
    throw new Error(`cannot prepare policy set: ${res.errors.map((e) => e.message).join("; ")}`);
  }
  return id;
}

/**
 * Entity uids written as literals in policy conditions: their attributes or parents may be
 * read there. Scope literals (`principal in Group::"eng"`) need no entity data: the
 * request's own entities carry the ancestry.
 */
function policyLiterals(set: LoadedPolicySet): EntityUid[] {
  const out: EntityUid[] = [];
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== "object") return;
    if (Array.isArray(v)) {
      for (const x of v) walk(x);
      return;
    }
    const o = v as Record<string, unknown>;
    const e = (o["__entity"] ?? o) as Record<string, unknown>;
    if (
      typeof e["type"] === "string" &&
      typeof e["id"] === "string" &&
      Object.keys(e).length === 2
    ) {
      out.push({ type: e["type"], id: e["id"] });
      return;
    }
    for (const x of Object.values(o)) walk(x);
  };
  for (const p of set.policies) walk(p.json.conditions);
  return out;
}

/**
 * The reference engine: @cedar-policy/cedar-wasm's `statefulIsAuthorized` over a
 * preparsed policy set. Only entities reachable from the request (its uids, the
 * context and policy literals, through parents and attribute references) cross the
 * wasm boundary, so the cost does not grow with the size of the entity store.
 */
export class ReferenceEngine implements PolicyEngine {
  readonly kind = "reference" as const;
  private readonly setId: string;
  private withoutStepUpId: string | undefined;
  private readonly meta: Map<string, PolicyMeta>;
  private readonly literals: EntityUid[];
  /** The schema's action entities, for actions the entity view does not hold. */
  private readonly actions: Map<string, CedarEntity>;

  constructor(readonly policySet: LoadedPolicySet) {
    this.meta = policyMetaIndex(policySet);
    const actions = policySet.schema ? schemaActionEntities(policySet.schema) : [];
    this.actions = new Map(actions.map((a) => [uidKey(a.uid), a]));
    this.setId = preparse(toWasmPolicySet(policySet, () => true));
    this.literals = policyLiterals(policySet);
  }

  authorize(request: AuthorizationRequest, entities: EntityView): AuthorizationResult {
    try {
      const view: EntityView =
        this.actions.size === 0
          ? entities
          : {
              get: (uid) => entities.get(uid) ?? this.actions.get(uidKey(uid)),
              isIn: (a, b) => entities.isIn(a, b),
              all: () => entities.all(),
            };
      const slice = reachableEntities(request, view, this.literals);
      const first = this.call(this.setId, request, slice);
      return decideVerdict({
        ...first,
        meta: this.meta,
        allowsWithoutStepUp: () => {
          this.withoutStepUpId ??= preparse(
            toWasmPolicySet(this.policySet, (id) => !isStepUpForbid(this.meta.get(id))),
          );
          // After a step-up the user has fresh MFA and the @step_up forbids are satisfied.
          const fresh =
            "mfa_age_seconds" in request.context
              ? { ...request, context: { ...request.context, mfa_age_seconds: 0 } }
              : request;
          return this.call(this.withoutStepUpId, fresh, slice).decision === "allow";
        },
      });
    } catch (e) {
      return policyErrorResult((e as Error)?.message ?? String(e));
    }
  }

  private call(
    setId: string,
    request: AuthorizationRequest,
    slice: EntityJson[],
  ): { decision: "allow" | "deny"; reasons: string[]; errors: PolicyError[] } {
    const ans = cedar.statefulIsAuthorized({
      principal: request.principal,
      action: request.action,
      resource: request.resource,
      context: request.context,
      preparsedPolicySetId: setId,
      validateRequest: false,
      entities: slice,
    });
    if (ans.type === "failure") {
      throw new Error(ans.errors.map((e) => e.message).join("; "));
    }
    return {
      decision: ans.response.decision,
      reasons: ans.response.diagnostics.reason,
      errors: toPolicyErrors(ans.response.diagnostics.errors),
    };
  }
}

function toPolicyErrors(list: { policyId: string; error: { message: string } }[]): PolicyError[] {
  const out: PolicyError[] = [];
  for (const e of list) out.push({ policyId: e.policyId, message: e.error.message });
  return out;
}

/** The entities an authorization can observe: closure over parents and entity references. */
export function reachableEntities(
  request: AuthorizationRequest,
  entities: EntityView,
  extra: EntityUid[] = [],
): EntityJson[] {
  const seen = new Set<string>();
  const out: EntityJson[] = [];
  const queue: EntityUid[] = [request.principal, request.action, request.resource, ...extra];
  for (const v of Object.values(request.context)) collectEntityRefs(v, queue);
  while (queue.length > 0) {
    const uid = queue.pop()!;
    const key = uidKey(uid);
    if (seen.has(key)) continue;
    seen.add(key);
    const e: CedarEntity | undefined = entities.get(uid);
    if (!e) continue;
    out.push(e as EntityJson);
    for (const p of e.parents) queue.push(p);
    for (const v of Object.values(e.attrs)) collectEntityRefs(v, queue);
    if (e.tags) for (const v of Object.values(e.tags)) collectEntityRefs(v, queue);
  }
  return out;
}
