import * as cedar from "./cedar-wasm.js";
import type { PolicyJson } from "@cedar-policy/cedar-wasm/nodejs";
import { compileExpr, type EvalEnv, type SlotEnv } from "./compiled/compile-expr.js";
import {
  actionMatches,
  actionScopeFrom,
  CompiledEngine,
  contextFrom,
  scopeFrom,
  scopeMatches,
  ViewAccess,
} from "./compiled/compiled-engine.js";
import { exactPolicyJson } from "./compiled/exact-json.js";
import { entityFromJson } from "./compiled/json-values.js";
import { CedarEvalError, EntityRef } from "./compiled/values.js";
import { ZtError } from "../core/errors.js";
import type {
  AuthorizationRequest,
  AuthorizationResult,
  EntityView,
  LoadedPolicy,
} from "./types.js";

/** Why one policy did or did not apply. */
export interface PolicyExplanation {
  id: string;
  effect: "permit" | "forbid";
  file?: string;
  line?: number;
  /** "satisfied": it applied; "scope": its scope did not match; "condition": a condition was false; "error". */
  outcome: "satisfied" | "scope" | "condition" | "error";
  scope: { principal: boolean; action: boolean; resource: boolean };
  /** For "condition" / "error": the clause (and the first failing `&&` part of it), as Cedar text. */
  failed?: { clause: "when" | "unless"; text: string; part?: string; error?: string };
}

export interface Explanation {
  result: AuthorizationResult;
  policies: PolicyExplanation[];
}

function exprText(body: unknown): string {
  const res = cedar.policyToText({
    effect: "permit",
    principal: { op: "All" },
    action: { op: "All" },
    resource: { op: "All" },
    conditions: [{ kind: "when", body: body as PolicyJson["conditions"][number]["body"] }],
  });
  if (res.type === "failure") return "(expression)";
  const m = /when\s*\{\s*([\s\S]*?)\s*\};?\s*$/.exec(res.text);
  return m ? m[1]!.replace(/\s+/g, " ") : res.text;
}

function conjuncts(body: unknown): unknown[] {
  const o = body as Record<string, { left: unknown; right: unknown }>;
  if (o && typeof o === "object" && "&&" in o)
    return [...conjuncts(o["&&"]!.left), ...conjuncts(o["&&"]!.right)];
  return [body];
}

function explainOne(id: string, p: LoadedPolicy, slots: SlotEnv, env: EvalEnv): PolicyExplanation {
  const json = exactPolicyJson(p.text, p.json, p.kind === "template");
  const principal = scopeFrom(json.principal as Record<string, unknown>, slots);
  const resource = scopeFrom(json.resource as Record<string, unknown>, slots);
  const action = actionScopeFrom(json.action as Record<string, unknown>);
  const scope = {
    principal: principal !== "unlinked" && scopeMatches(principal, env.principal, env.entities),
    action: actionMatches(action, env.action, env.entities),
    resource: resource !== "unlinked" && scopeMatches(resource, env.resource, env.entities),
  };
  const base: PolicyExplanation = { id, effect: json.effect, scope, outcome: "satisfied" };
  if (p.file !== undefined) base.file = p.file;
  if (p.line !== undefined) base.line = p.line;
  if (!scope.principal || !scope.action || !scope.resource) return { ...base, outcome: "scope" };
  for (const c of json.conditions) {
    const clause = c.kind;
    const parts = clause === "when" ? conjuncts(c.body) : [c.body];
    for (const part of parts) {
      let v: unknown;
      try {
        v = compileExpr(part, slots)(env);
      } catch (e) {
        // Invalid entity data is not a CedarEvalError (it fails the whole request): shown too.
        if (!(e instanceof Error)) throw e;
        return {
          ...base,
          outcome: "error",
          failed: { clause, text: exprText(c.body), part: exprText(part), error: e.message },
        };
      }
      if (typeof v !== "boolean") {
        return {
          ...base,
          outcome: "error",
          failed: { clause, text: exprText(c.body), error: "condition is not a Bool" },
        };
      }
      const holds = clause === "when" ? v : !v;
      if (!holds) {
        const failed: NonNullable<PolicyExplanation["failed"]> = { clause, text: exprText(c.body) };
        if (parts.length > 1) failed.part = exprText(part);
        return { ...base, outcome: "condition", failed };
      }
    }
  }
  return base;
}

/**
 * Explains one decision: the engine's result, and for every policy whether its scope
 * matched and which condition (down to the first false `&&` part) stopped it.
 */
export function explainRequest(
  engine: CompiledEngine,
  request: AuthorizationRequest,
  entities: EntityView,
): Explanation {
  const result = engine.authorize(request, entities);
  let context: EvalEnv["context"];
  try {
    context = contextFrom(request.context);
  } catch (e) {
    // A context value no engine can build (`ip("bad")`) is the caller's input, not a fault
    // in zt: the engine's decision above is already a request-level policy-error.
    if (e instanceof CedarEvalError)
      throw new ZtError("ZT_POLICY_ENTITY_INVALID", `context: ${e.message}`);
    throw e;
  }
  const env: EvalEnv = {
    principal: entityFromJson(request.principal),
    action: entityFromJson(request.action),
    resource: entityFromJson(request.resource),
    context,
    entities: new ViewAccess(entities, engine.schemaActions),
  };
  const set = engine.policySet;
  const byId = new Map(set.policies.map((p) => [p.id, p]));
  const policies: PolicyExplanation[] = [];
  for (const p of set.policies)
    if (p.kind === "static") policies.push(explainOne(p.id, p, new Map(), env));
  for (const link of set.templateLinks) {
    const t = byId.get(link.templateId);
    if (!t) continue;
    const slots = new Map<string, EntityRef>();
    for (const [k, v] of Object.entries(link.values))
      slots.set(k.startsWith("?") ? k : `?${k}`, new EntityRef(v.type, v.id));
    policies.push(explainOne(link.newId, t, slots, env));
  }
  return { result, policies };
}
