import { EntityStore } from "../entity-store.js";
import type {
  AuthorizationRequest,
  AuthorizationResult,
  CedarEntity,
  EntityView,
  LoadedPolicy,
  LoadedPolicySet,
  PolicyEngine,
  PolicyError,
} from "../types.js";
import { decideVerdict, isStepUpForbid, policyErrorResult, policyMetaIndex } from "../verdict.js";
import type { PolicyMeta } from "../verdict.js";
import {
  compileExpr,
  type EntityAccess,
  type EntityData,
  type EvalEnv,
  type SlotEnv,
} from "./compile-expr.js";
import { exactPolicyJson } from "./exact-json.js";
import { entityFromJson, valueFromJson } from "./json-values.js";
import { CedarEvalError, CRecord, EntityRef, type Value } from "./values.js";

/** A scope constraint on principal or resource, with slots resolved. */
export type Scope =
  | { op: "All" }
  | { op: "=="; entity: EntityRef }
  | { op: "in"; entity: EntityRef }
  | { op: "is"; type: string; in?: EntityRef };

export type ActionScope = { op: "All" } | { op: "==" | "in"; entities: EntityRef[] };

export interface CompiledPolicy {
  id: string;
  effect: "permit" | "forbid";
  principal: Scope;
  action: ActionScope;
  resource: Scope;
  /** The when/unless conditions, conjoined; throws CedarEvalError on an evaluation error. */
  condition: ((env: EvalEnv) => boolean) | undefined;
  stepUp: boolean;
}

export function scopeFrom(c: Record<string, unknown>, slots: SlotEnv): Scope | "unlinked" {
  const resolve = (x: Record<string, unknown>): EntityRef | undefined =>
    "slot" in x ? slots.get(x["slot"] as string) : entityFromJson(x["entity"]);
  switch (c["op"]) {
    case "All":
      return { op: "All" };
    case "==":
    case "in": {
      const e = resolve(c);
      if (!e) return "unlinked";
      return c["op"] === "==" ? { op: "==", entity: e } : { op: "in", entity: e };
    }
    case "is": {
      const inner = c["in"] as Record<string, unknown> | undefined;
      if (!inner) return { op: "is", type: c["entity_type"] as string };
      const e = resolve(inner);
      return e ? { op: "is", type: c["entity_type"] as string, in: e } : "unlinked";
    }
  }
  throw new Error(`unsupported scope constraint ${String(c["op"])}`);
}

export function actionScopeFrom(c: Record<string, unknown>): ActionScope {
  if (c["op"] === "All") return { op: "All" };
  if (c["op"] === "==") return { op: "==", entities: [entityFromJson(c["entity"])] };
  const list = "entities" in c ? (c["entities"] as unknown[]) : [c["entity"]];
  return { op: "in", entities: list.map(entityFromJson) };
}

function compileCondition(
  conditions: { kind: string; body: unknown }[],
  slots: SlotEnv,
): ((env: EvalEnv) => boolean) | undefined {
  const parts = conditions.map((c) => ({ when: c.kind === "when", f: compileExpr(c.body, slots) }));
  if (parts.length === 0) return undefined;
  const check = (v: Value, when: boolean): boolean => {
    if (typeof v !== "boolean") throw new CedarEvalError(`type error: condition is not a Bool`);
    return when ? v : !v;
  };
  if (parts.length === 1) {
    const { when, f } = parts[0]!;
    return (env) => check(f(env), when);
  }
  return (env) => {
    for (const { when, f } of parts) if (!check(f(env), when)) return false;
    return true;
  };
}

export function compilePolicy(
  id: string,
  p: LoadedPolicy,
  slots: SlotEnv,
  meta: PolicyMeta | undefined,
): CompiledPolicy {
  const json = exactPolicyJson(p.text, p.json, p.kind === "template");
  const principal = scopeFrom(json.principal as Record<string, unknown>, slots);
  const resource = scopeFrom(json.resource as Record<string, unknown>, slots);
  if (principal === "unlinked" || resource === "unlinked")
    throw new Error(`policy ${id}: template slot without a value`);
  return {
    id,
    effect: json.effect,
    principal,
    action: actionScopeFrom(json.action as Record<string, unknown>),
    resource,
    condition: compileCondition(json.conditions as { kind: string; body: unknown }[], slots),
    stepUp: isStepUpForbid(meta),
  };
}

// ---------------- entity access ----------------

const entityCache = new WeakMap<CedarEntity, EntityData>();

function entityData(raw: CedarEntity): EntityData {
  let d = entityCache.get(raw);
  if (d) return d;
  const attrs = new Map<string, Value>();
  for (const [k, v] of Object.entries(raw.attrs ?? {})) attrs.set(k, valueFromJson(v));
  let tags: Map<string, Value> | undefined;
  if (raw.tags) {
    tags = new Map();
    for (const [k, v] of Object.entries(raw.tags)) tags.set(k, valueFromJson(v));
  }
  d = { attrs, tags };
  entityCache.set(raw, d);
  return d;
}

export class ViewAccess implements EntityAccess {
  constructor(private readonly view: EntityView) {}
  data(e: EntityRef): EntityData | undefined {
    const raw =
      this.view instanceof EntityStore
        ? this.view.getByKey(e.key)
        : this.view.get({ type: e.type, id: e.id });
    return raw ? entityData(raw) : undefined;
  }
  isIn(a: EntityRef, b: EntityRef): boolean {
    if (this.view instanceof EntityStore) return this.view.isInKey(a.key, b.key);
    return this.view.isIn({ type: a.type, id: a.id }, { type: b.type, id: b.id });
  }
}

// ---------------- scope index ----------------

interface DimIndex {
  all: number[];
  eq: Map<string, number[]>;
  inn: Map<string, number[]>;
  is: Map<string, number[]>;
}

function newDim(): DimIndex {
  return { all: [], eq: new Map(), inn: new Map(), is: new Map() };
}

function push(m: Map<string, number[]>, k: string, i: number): void {
  const l = m.get(k);
  if (l) l.push(i);
  else m.set(k, [i]);
}

function indexScope(dim: DimIndex, s: Scope, i: number): void {
  if (s.op === "All") dim.all.push(i);
  else if (s.op === "==") push(dim.eq, s.entity.key, i);
  else if (s.op === "in") push(dim.inn, s.entity.key, i);
  else if (s.in) push(dim.inn, s.in.key, i);
  else push(dim.is, s.type, i);
}

export function scopeMatches(s: Scope, e: EntityRef, acc: EntityAccess): boolean {
  switch (s.op) {
    case "All":
      return true;
    case "==":
      return e.key === s.entity.key;
    case "in":
      return e.key === s.entity.key || acc.isIn(e, s.entity);
    case "is":
      if (e.type !== s.type) return false;
      return !s.in || e.key === s.in.key || acc.isIn(e, s.in);
  }
}

export function actionMatches(s: ActionScope, e: EntityRef, acc: EntityAccess): boolean {
  if (s.op === "All") return true;
  if (s.op === "==") return e.key === s.entities[0]!.key;
  for (const t of s.entities) if (e.key === t.key || acc.isIn(e, t)) return true;
  return false;
}

/**
 * zt's compiled Cedar evaluator: policies compiled to closures at load, candidates found
 * through a scope index (principal / action / resource), entity hierarchy answered by the
 * entity store's precomputed ancestor sets.
 */
export class CompiledEngine implements PolicyEngine {
  readonly kind = "compiled" as const;
  readonly policies: CompiledPolicy[];
  private readonly meta: Map<string, PolicyMeta>;
  private readonly dims: [DimIndex, DimIndex, DimIndex];
  private readonly stamp: Int32Array;
  private epoch = 0;

  constructor(readonly policySet: LoadedPolicySet) {
    this.meta = policyMetaIndex(policySet);
    const byId = new Map(policySet.policies.map((p) => [p.id, p]));
    const list: CompiledPolicy[] = [];
    for (const p of policySet.policies) {
      if (p.kind === "static") list.push(compilePolicy(p.id, p, new Map(), this.meta.get(p.id)));
    }
    for (const link of policySet.templateLinks) {
      const t = byId.get(link.templateId);
      if (!t) throw new Error(`template link ${link.newId}: no template ${link.templateId}`);
      const slots = new Map<string, EntityRef>();
      for (const [k, v] of Object.entries(link.values)) {
        const slot = k.startsWith("?") ? k : `?${k}`;
        slots.set(slot, new EntityRef(v.type, v.id));
      }
      list.push(compilePolicy(link.newId, t, slots, this.meta.get(link.newId)));
    }
    this.policies = list;
    this.dims = [newDim(), newDim(), newDim()];
    list.forEach((p, i) => {
      indexScope(this.dims[0], p.principal, i);
      indexScope(this.dims[2], p.resource, i);
      const a = this.dims[1];
      if (p.action.op === "All") a.all.push(i);
      else if (p.action.op === "==") push(a.eq, p.action.entities[0]!.key, i);
      else for (const e of new Set(p.action.entities.map((x) => x.key))) push(a.inn, e, i);
    });
    this.stamp = new Int32Array(list.length);
  }

  authorize(request: AuthorizationRequest, entities: EntityView): AuthorizationResult {
    try {
      const acc = new ViewAccess(entities);
      const env: EvalEnv = {
        principal: entityFromJson(request.principal),
        action: entityFromJson(request.action),
        resource: entityFromJson(request.resource),
        context: contextFrom(request.context),
        entities: acc,
      };
      return this.evaluate(env, entities);
    } catch (e) {
      return policyErrorResult((e as Error)?.message ?? String(e));
    }
  }

  /** Evaluates with a prepared environment (used by tools that parse inputs with a schema). */
  evaluate(env: EvalEnv, entities: EntityView): AuthorizationResult {
    const r = this.run(env, entities, false);
    return decideVerdict({
      decision: r.decision,
      reasons: r.reasons,
      errors: r.errors,
      meta: this.meta,
      // After a step-up the user has fresh MFA and the @step_up forbids are satisfied.
      allowsWithoutStepUp: () =>
        this.run({ ...env, context: withFreshMfa(env.context) }, entities, true).decision ===
        "allow",
    });
  }

  private run(
    env: EvalEnv,
    entities: EntityView,
    skipStepUp: boolean,
  ): { decision: "allow" | "deny"; reasons: string[]; errors: PolicyError[] } {
    const satisfiedForbids: string[] = [];
    const satisfiedPermits: string[] = [];
    const errors: PolicyError[] = [];
    const acc = env.entities;
    const visit = (p: CompiledPolicy): void => {
      if (skipStepUp && p.stepUp) return;
      if (!scopeMatches(p.principal, env.principal, acc)) return;
      if (!actionMatches(p.action, env.action, acc)) return;
      if (!scopeMatches(p.resource, env.resource, acc)) return;
      let sat: boolean;
      try {
        sat = p.condition ? p.condition(env) : true;
      } catch (e) {
        if (!(e instanceof CedarEvalError)) throw e;
        errors.push({ policyId: p.id, message: e.message });
        return;
      }
      if (!sat) return;
      if (p.effect === "forbid") satisfiedForbids.push(p.id);
      else satisfiedPermits.push(p.id);
    };
    this.forCandidates(env, entities, visit);
    if (errors.length > 1) errors.sort(byPolicyId);
    const decision =
      satisfiedForbids.length === 0 && satisfiedPermits.length > 0 ? "allow" : "deny";
    const reasons = satisfiedForbids.length > 0 ? satisfiedForbids : satisfiedPermits;
    return { decision, reasons, errors };
  }

  /** Calls `visit` once for every policy whose scope index entry may match the request. */
  private forCandidates(
    env: EvalEnv,
    entities: EntityView,
    visit: (p: CompiledPolicy) => void,
  ): void {
    const store = entities instanceof EntityStore ? entities : undefined;
    // Pick the dimension (principal, action or resource) whose matching buckets hold the
    // fewest policies; only those are looked at.
    let best = -1;
    let bestSize = Infinity;
    for (let d = 0; d < 3; d++) {
      const dim = this.dims[d]!;
      const e = d === 0 ? env.principal : d === 1 ? env.action : env.resource;
      if (dim.inn.size > 0 && !store) continue; // cannot enumerate ancestors: no narrowing
      let size = dim.all.length;
      size += dim.eq.get(e.key)?.length ?? 0;
      size += dim.is.get(e.type)?.length ?? 0;
      if (dim.inn.size > 0 && store) {
        size += dim.inn.get(e.key)?.length ?? 0;
        for (const k of store.ancestorKeysByKey(e.key)) size += dim.inn.get(k)?.length ?? 0;
      }
      if (size < bestSize) {
        best = d;
        bestSize = size;
      }
    }
    const bestLists: number[][] = [];
    if (best >= 0) {
      const dim = this.dims[best]!;
      const e = best === 0 ? env.principal : best === 1 ? env.action : env.resource;
      bestLists.push(dim.all);
      const eq = dim.eq.get(e.key);
      if (eq) bestLists.push(eq);
      const is = dim.is.get(e.type);
      if (is) bestLists.push(is);
      if (dim.inn.size > 0 && store) {
        const own = dim.inn.get(e.key);
        if (own) bestLists.push(own);
        for (const k of store.ancestorKeysByKey(e.key)) {
          const l = dim.inn.get(k);
          if (l) bestLists.push(l);
        }
      }
    }
    if (best < 0) {
      for (const p of this.policies) visit(p);
      return;
    }
    const epoch = ++this.epoch;
    if (epoch === 0x7fffffff) {
      this.stamp.fill(0);
      this.epoch = 1;
    }
    const stamp = this.stamp;
    const e = this.epoch;
    for (const l of bestLists) {
      for (const i of l) {
        if (stamp[i] === e) continue;
        stamp[i] = e;
        visit(this.policies[i]!);
      }
    }
  }
}

function byPolicyId(a: PolicyError, b: PolicyError): number {
  return a.policyId < b.policyId ? -1 : a.policyId > b.policyId ? 1 : 0;
}

/** The context as it will be after a successful step-up: `mfa_age_seconds` = 0 (when present). */
function withFreshMfa(ctx: CRecord): CRecord {
  if (!ctx.map.has("mfa_age_seconds")) return ctx;
  return new CRecord(new Map(ctx.map).set("mfa_age_seconds", 0));
}

/** Converts a JSON context record (Cedar JSON value format) to a runtime record. */
export function contextFrom(ctx: Record<string, unknown>): CRecord {
  if (ctx === null || typeof ctx !== "object" || Array.isArray(ctx))
    throw new CedarEvalError("context must be a record");
  const m = new Map<string, Value>();
  for (const k in ctx) if (Object.hasOwn(ctx, k)) m.set(k, valueFromJson(ctx[k]));
  return new CRecord(m);
}
