/**
 * zt's policy engine (NIST SP 800-207 PE/PDP): Cedar policies, parsed and validated by
 * @cedar-policy/cedar-wasm, evaluated by a `PolicyEngine`. This file is the capability's
 * only public face (also exported as the package entry `zt/policy`).
 *
 * @example
 * const set = loadPolicySet("./policies");
 * const engine = createPolicyEngine("compiled", set);
 * const entities = new EntityStore([{ uid: { type: "User", id: "alice" }, attrs: { name: "alice" }, parents: [] }]);
 * const result = engine.authorize(
 *   { principal: { type: "User", id: "alice" }, action: { type: "Action", id: "GET" },
 *     resource: { type: "App", id: "whoami" }, context: httpContext({ ... }) },
 *   entities,
 * );
 * result.verdict; // "allow" | "deny" | "step-up"
 */
import { CompiledEngine } from "./compiled/compiled-engine.js";
import { ReferenceEngine } from "./reference-engine.js";
import { explainRequest, type Explanation } from "./explain.js";
import type { AuthorizationRequest, EntityView, LoadedPolicySet, PolicyEngine } from "./types.js";

export type * from "./types.js";
export { ZT_SCHEMA, HTTP_ACTIONS } from "./zt-schema.js";
export { loadPolicySet, parsePolicies, parseSchema } from "./policy-loader.js";
export type { LoadPolicySetOptions, ParsePoliciesOptions, PolicySource } from "./policy-loader.js";
export { EntityStore, uidKey } from "./entity-store.js";
export { decideVerdict } from "./verdict.js";
export {
  cedarIp,
  cedarDatetime,
  cedarDuration,
  cedarDecimal,
  cedarEntity,
  httpContext,
} from "./cedar-values.js";
export type { HttpContextInput } from "./cedar-values.js";

export { runPolicyTests, assertPolicyTests, parseUid } from "./policy-tests.js";
export type { PolicyTestOutcome } from "./policy-tests.js";
export { formatPolicyText } from "./policy-format.js";
export { findConformanceCases, runConformanceCase } from "./conformance.js";
export type { ConformanceResult, ConformanceOptions } from "./conformance.js";
export {
  schemaModel,
  canonicalContext,
  canonicalEntities,
  assertContextTypes,
} from "./schema-values.js";
export type { SchemaModel } from "./schema-values.js";
export { parseJsonExact } from "./json-bigint.js";
export { assertCedarJsonRecord } from "./json-value-check.js";
export type { Explanation, PolicyExplanation } from "./explain.js";

/**
 * Explains one decision over a policy set: the result, and for every policy whether its
 * scope matched and which condition stopped it. Uses the compiled evaluator.
 */
export function explainDecision(
  set: LoadedPolicySet,
  request: AuthorizationRequest,
  entities: EntityView,
): Explanation {
  return explainRequest(new CompiledEngine(set), request, entities);
}

export type PolicyEngineKind = "compiled" | "reference";

/**
 * Builds an engine over a loaded policy set. "reference" evaluates with
 * @cedar-policy/cedar-wasm; "compiled" is zt's own evaluator for the hot path.
 */
export function createPolicyEngine(kind: PolicyEngineKind, set: LoadedPolicySet): PolicyEngine {
  switch (kind) {
    case "reference":
      return new ReferenceEngine(set);
    case "compiled":
      return new CompiledEngine(set);
  }
}
