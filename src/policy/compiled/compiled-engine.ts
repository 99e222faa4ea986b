import { EntityStore, mayBeAncestor, type StoreEntry } from "../entity-store.js";
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
import type { MetaLookup, PolicyMeta } from "../verdict.js";
import {
  compileExpr,
  type EntityAccess,
  type EntityData,
  type EvalEnv,
  type SlotEnv,
} from "./compile-expr.js";
import { schemaActionEntities } from "../schema-values.js";
import { exactPolicyJson } from "./exact-json.js";
import { convertEntity, entityFromJson, recordFromJson } from "./json-values.js";
import { CedarEvalError, CRecord, EntityRef, policyRef, sameEntity, type Value } from "./values.js";

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
  /** Effect and annotations (for the verdict). */
  meta: PolicyMeta | undefined;
  /**
   * The conditions may read `context.mfa_age_seconds` (or the context as a whole): only
   * such policies can change their answer after a step-up.
   */
  readsMfa: boolean;
  /** Being on the principal's (resource's) candidate list proves the scope matches. */
  principalListed: boolean;
  resourceListed: boolean;
  /**
   * `ancestorFilterBit` of the uid the principal (resource) scope names with `==`, `in` or
   * `is … in`; -1 for the others. Kept on the policy so that most scopes that do not match
   * are told apart from the policy object alone.
   */
  principalBit: number;
  resourceBit: number;
}

/** The context attribute a step-up refreshes. */
const MFA_AGE = "mfa_age_seconds";

/**
 * Whether an expression (Cedar's JSON form) may read context attribute `attr`: true for
 * `context.attr` / `context has attr`, and for any other use of `context` (passed whole,
 * compared, …); false when every use of `context` reads some other attribute.
 */
export function readsContextAttr(node: unknown, attr: string): boolean {
  if (node === null || typeof node !== "object") return false;
  if (Array.isArray(node)) return node.some((n) => readsContextAttr(n, attr));
  const o = node as Record<string, unknown>;
  if (o["Var"] === "context") return true;
  for (const op of [".", "has"]) {
    const b = o[op] as { left?: unknown; attr?: unknown } | undefined;
    if (b && typeof b === "object") {
      const left = b.left as Record<string, unknown> | undefined;
      if (left && left["Var"] === "context") {
        const first = Array.isArray(b.attr) ? (b.attr as unknown[])[0] : b.attr;
        return typeof first !== "string" || first === attr;
      }
    }
  }
  for (const v of Object.values(o)) if (readsContextAttr(v, attr)) return true;
  return false;
}

export function scopeFrom(c: Record<string, unknown>, slots: SlotEnv): Scope | "unlinked" {
  const resolve = (x: Record<string, unknown>): EntityRef | undefined => {
    const e = "slot" in x ? slots.get(x["slot"] as string) : entityFromJson(x["entity"]);
    return e === undefined ? undefined : policyRef(e);
  };
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
  if (c["op"] === "==") return { op: "==", entities: [policyRef(entityFromJson(c["entity"]))] };
  const list = "entities" in c ? (c["entities"] as unknown[]) : [c["entity"]];
  return { op: "in", entities: list.map((x) => policyRef(entityFromJson(x))) };
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

/**
 * Compiled conditions by their JSON text and slot values, shared by the policies of one
 * engine: policy sets are repetitive (one pattern per team or app, constants aside), and
 * policies with the same conditions then evaluate the same closures — fewer to compile,
 * less memory, and the ones a decision runs are already in the CPU cache. Compiled
 * conditions hold no state (constants only), so sharing them is safe.
 */
export type ConditionCache = Map<string, ((env: EvalEnv) => boolean) | undefined>;

/** An injective text for a JSON-like value that may hold bigints (exact Longs). */
export function typedKey(v: unknown): string {
  switch (typeof v) {
    case "bigint":
      return `B${v}`;
    case "number":
      return `N${v}`;
    case "string":
      return `S${JSON.stringify(v)}`;
    case "boolean":
      return v ? "T" : "F";
    case "object": {
      if (v === null) return "Z";
      if (Array.isArray(v)) return `[${v.map(typedKey).join(",")}]`;
      const parts: string[] = [];
      for (const [k, x] of Object.entries(v)) parts.push(`${JSON.stringify(k)}:${typedKey(x)}`);
      return `{${parts.join(",")}}`;
    }
    default:
      return "U";
  }
}

function sharedCondition(
  conds: { kind: string; body: unknown }[],
  slots: SlotEnv,
  cache: ConditionCache,
): ((env: EvalEnv) => boolean) | undefined {
  let key = typedKey(conds);
  // Cedar allows slots only in scopes; the key still names any slot values, so a
  // condition compiled with them is never shared with one compiled without.
  for (const [slot, e] of slots) key += `\u0000${slot}=${e.key}`;
  if (cache.has(key)) return cache.get(key);
  const f = compileCondition(conds, slots);
  cache.set(key, f);
  return f;
}

export function compilePolicy(
  id: string,
  p: LoadedPolicy,
  slots: SlotEnv,
  meta: PolicyMeta | undefined,
  conditions: ConditionCache = new Map(),
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
    condition: sharedCondition(
      json.conditions as { kind: string; body: unknown }[],
      slots,
      conditions,
    ),
    stepUp: isStepUpForbid(meta),
    meta,
    readsMfa: readsContextAttr(json.conditions, MFA_AGE),
    principalListed: listedMeansMatched(principal),
    resourceListed: listedMeansMatched(resource),
    principalBit: scopeBit(principal),
    resourceBit: scopeBit(resource),
  };
}

/** The filter bit of the uid a scope names (-1: none, or `is T` alone). */
function scopeBit(s: Scope): number {
  if (s.op === "==" || s.op === "in") return s.entity.filterBit;
  if (s.op === "is" && s.in) return s.in.filterBit;
  return -1;
}

// ---------------- entity access ----------------

/** Converted entity data for foreign views, by entity object. */
const entityCache = new WeakMap<CedarEntity, EntityData>();

function entityData(raw: CedarEntity): EntityData {
  let d = entityCache.get(raw);
  if (d === undefined) entityCache.set(raw, (d = convertEntityOrFail(raw)));
  return d;
}

/**
 * An entity's converted data. Invalid entity data (a `null`, a fraction, a bad `__extn`)
 * fails the whole request, as Cedar refuses such entities before evaluating anything: as a
 * policy error it would only skip the policy reading it, and a `forbid` skipped lets a
 * `permit` through. Not a CedarEvalError, so `authorize` turns it into a deny.
 */
function convertEntityOrFail(raw: CedarEntity): EntityData {
  try {
    return convertEntity(raw);
  } catch (e) {
    if (!(e instanceof CedarEvalError)) throw e;
    throw new Error(`entity \`${raw.uid.type}::${JSON.stringify(raw.uid.id)}\`: ${e.message}`);
  }
}

/**
 * Converted entity data for store entries. Kept on the entry when converting cost
 * something (structured attributes or tags); an entity of strings, booleans and integers
 * only is wrapped afresh per decision instead, over the attribute names the store noted on
 * insert (`plainKeys`: no value is read until a policy asks for it — each one read is a
 * cache miss for a random user): a wrapper kept for every principal ever seen grows the
 * old generation, and each new heap page is a page fault inside some decision — measured
 * as most of the cold tail.
 */
function entryData(entry: StoreEntry): EntityData {
  const d = entry.derived as EntityData | undefined;
  if (d !== undefined) return d;
  const keys = entry.plainKeys;
  if (keys !== undefined)
    return { attrs: CRecord.lazy(entry.plainAttrs!, undefined, keys), tags: undefined };
  const fresh = convertEntityOrFail(entry.entity);
  if (fresh.tags !== undefined || !fresh.attrs.primitiveOnly) entry.derived = fresh;
  return fresh;
}

/** Entity access over any `EntityView` (tools, tests, foreign stores). */
export class ViewAccess implements EntityAccess {
  constructor(
    private readonly view: EntityView,
    /** The schema's actions, for those the view does not hold (see `schemaActions`). */
    private readonly actions?: EntityStore,
  ) {}
  private raw(e: EntityRef): CedarEntity | undefined {
    const raw =
      this.view instanceof EntityStore
        ? this.view.getByKey(e.key)
        : this.view.get({ type: e.type, id: e.id });
    return raw ?? this.actions?.getByKey(e.key);
  }
  data(e: EntityRef): EntityData | undefined {
    const raw = this.raw(e);
    return raw ? entityData(raw) : undefined;
  }
  isIn(a: EntityRef, b: EntityRef): boolean {
    const inView =
      this.view instanceof EntityStore
        ? this.view.isInKey(a.key, b.key)
        : this.view.isIn({ type: a.type, id: a.id }, { type: b.type, id: b.id });
    if (inView || this.actions === undefined) return inView;
    const own =
      this.view instanceof EntityStore
        ? this.view.getByKey(a.key)
        : this.view.get({ type: a.type, id: a.id });
    return own === undefined && this.actions.isInKey(a.key, b.key);
  }
  mayBeOrBeIn(): boolean {
    return true;
  }
}

/**
 * The hot path's entity access, one per decision over zt's `EntityStore`: the request's
 * principal and resource are looked up once (entity, ancestors and converted attributes
 * come in one store record) however many policies ask about them.
 */
class RequestAccess implements EntityAccess {
  private principalEntry: StoreEntry | null | undefined;
  private actionEntry: StoreEntry | null | undefined;
  private resourceEntry: StoreEntry | null | undefined;
  /** The principal's converted data, once per decision (it may not be kept on the entry). */
  private principalData: EntityData | undefined;
  constructor(
    private readonly store: EntityStore,
    private readonly principal: EntityRef,
    private readonly action: EntityRef,
    private readonly resource: EntityRef,
    /** The schema's actions, for those the store does not hold (see `schemaActions`). */
    private readonly actions: EntityStore | undefined,
  ) {}

  private lookup(e: EntityRef): StoreEntry | undefined {
    const en = this.store.entryOf(e.type, e.id);
    return en !== undefined || this.actions === undefined ? en : this.actions.entryOf(e.type, e.id);
  }

  private entry(e: EntityRef): StoreEntry | undefined {
    if (e === this.principal) {
      if (this.principalEntry === undefined) this.principalEntry = this.lookup(e) ?? null;
      return this.principalEntry ?? undefined;
    }
    if (e === this.resource) {
      if (this.resourceEntry === undefined) this.resourceEntry = this.lookup(e) ?? null;
      return this.resourceEntry ?? undefined;
    }
    if (e === this.action) {
      // Asked once per candidate whose action scope lists several actions.
      if (this.actionEntry === undefined) this.actionEntry = this.lookup(e) ?? null;
      return this.actionEntry ?? undefined;
    }
    return this.lookup(e);
  }

  data(e: EntityRef): EntityData | undefined {
    if (e === this.principal && this.principalData !== undefined) return this.principalData;
    const en = this.entry(e);
    if (en === undefined) return undefined;
    const d = entryData(en);
    if (e === this.principal) this.principalData = d;
    return d;
  }

  isIn(a: EntityRef, b: EntityRef): boolean {
    if (sameEntity(a, b)) return true;
    const en = this.entry(a);
    if (en === undefined || !mayBeAncestor(en, b.filterBit)) return false;
    return en.ancestors?.has(b.key) ?? false;
  }

  mayBeOrBeIn(e: EntityRef, bit: number): boolean {
    const en = this.entry(e);
    return en === undefined || mayBeAncestor(en, bit);
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

/** Policies a dimension certainly has to look at for `e`, before ancestors are counted. */
function ownBucketsSize(dim: DimIndex, e: EntityRef): number {
  return (
    dim.all.length +
    (dim.eq.get(e.key)?.length ?? 0) +
    (dim.is.get(e.type)?.length ?? 0) +
    (dim.inn.get(e.key)?.length ?? 0)
  );
}

/**
 * The policies whose constraint on this dimension may match `e` (sorted, distinct): the
 * unconstrained ones, `== e`, `is e.type`, and `in X` / `is … in X` for `e` and every
 * ancestor X of `e` (from the store; dimensions with `in` buckets need one).
 */
function candidateList(
  dim: DimIndex,
  e: EntityRef,
  store: EntityStore | undefined,
  policies: readonly CompiledPolicy[],
  actions: EntityStore | undefined,
): CandidateList {
  const parts: number[][] = [dim.all];
  let total = dim.all.length;
  const add = (l: number[] | undefined): void => {
    if (l !== undefined) {
      parts.push(l);
      total += l.length;
    }
  };
  add(dim.eq.get(e.key));
  add(dim.is.get(e.type));
  if (store !== undefined && dim.inn.size > 0) {
    add(dim.inn.get(e.key));
    const from = actions !== undefined && store.entryByKey(e.key) === undefined ? actions : store;
    for (const k of from.ancestorKeysByKey(e.key)) add(dim.inn.get(k));
  }
  const all = new Int32Array(total);
  let n = 0;
  for (const l of parts) for (let i = 0; i < l.length; i++) all[n++] = l[i]!;
  all.sort();
  let w = 0;
  for (let i = 0; i < n; i++) if (i === 0 || all[i] !== all[i - 1]) all[w++] = all[i]!;
  return interleaved(Array.from(all.subarray(0, w), (i) => policies[i]!));
}

/**
 * Candidate policies in policy order, each preceded by its principal filter bit:
 * `[principalBit, policy, principalBit, policy, …]`. The policy objects themselves, not
 * their indexes, and the bit next to them: a candidate whose principal scope cannot match
 * is passed over without reading the policy object (with thousands of policies, each
 * object read is a cache miss, and most candidates of a resource are for other users).
 */
type CandidateList = readonly (number | CompiledPolicy)[];

function interleaved(policies: readonly CompiledPolicy[]): CandidateList {
  const out: (number | CompiledPolicy)[] = [];
  for (const p of policies) out.push(p.principalBit, p);
  return out;
}

/** Number of policies in a candidate list. */
function count(l: CandidateList): number {
  return l.length >> 1;
}

/**
 * One dimension's candidate lists by entity, as type → id → list (looked up without
 * joining the request's uid into a key). Cleared when it holds CANDIDATE_CACHE_LIMIT.
 */
class ListCache {
  private readonly byType = new Map<string, Map<string, CandidateList>>();
  private size = 0;
  get(e: EntityRef): CandidateList | undefined {
    return this.byType.get(e.type)?.get(e.id);
  }
  set(e: EntityRef, l: CandidateList): void {
    if (this.size >= CANDIDATE_CACHE_LIMIT) this.clear();
    let ids = this.byType.get(e.type);
    if (!ids) this.byType.set(e.type, (ids = new Map()));
    ids.set(e.id, l);
    this.size++;
  }
  clear(): void {
    this.byType.clear();
    this.size = 0;
  }
}

/** Bound on each dimension's cache of candidate lists (entities; cleared when full). */
const CANDIDATE_CACHE_LIMIT = 50_000;

/**
 * A dimension only narrows by its ancestor-dependent buckets when it would cut the work by
 * more than this many policies: building such a list walks the entity's ancestors, sorts
 * and allocates, and for principals is cached per user (one of possibly every user, rarely
 * reused), while a candidate whose scope does not match is mostly rejected by its filter
 * bit from the policy object alone (measured: 4 made the 10,000-policy benchmark build a
 * principal list on most decisions, for lists no shorter than the resource's).
 */
const NARROWING_MARGIN = 16;

/** Dimensions in the order they are tried: action and resource lists are almost always cached. */
const DIM_ORDER = [1, 2, 0] as const;

export function scopeMatches(s: Scope, e: EntityRef, acc: EntityAccess): boolean {
  switch (s.op) {
    case "All":
      return true;
    case "==":
      return sameEntity(e, s.entity);
    case "in":
      return sameEntity(e, s.entity) || acc.isIn(e, s.entity);
    case "is":
      if (e.type !== s.type) return false;
      return !s.in || sameEntity(e, s.in) || acc.isIn(e, s.in);
  }
}

export function actionMatches(s: ActionScope, e: EntityRef, acc: EntityAccess): boolean {
  if (s.op === "All") return true;
  if (s.op === "==") return sameEntity(e, s.entities[0]!);
  for (const t of s.entities) if (sameEntity(e, t) || acc.isIn(e, t)) return true;
  return false;
}

/**
 * Whether a scope constraint is certainly satisfied by every entity whose candidate list
 * holds the policy: all but `is T in X` (listed under X, whatever the entity's type).
 */
function listedMeansMatched(s: Scope | ActionScope): boolean {
  return s.op !== "is" || s.in === undefined;
}

/** Bits of `listed`: the candidate list proves the principal / action / resource constraint. */
const LISTED_PRINCIPAL = 1;
const LISTED_ACTION = 2;
const LISTED_RESOURCE = 4;
const LISTED_BY_DIM = [LISTED_PRINCIPAL, LISTED_ACTION, LISTED_RESOURCE] as const;

/**
 * Whether a candidate's principal scope may match, from its filter bit alone (-1: no bit;
 * false only when the principal is certainly neither the uid the scope names nor in it).
 */
function principalMayMatch(bit: number, env: EvalEnv): boolean {
  return bit < 0 || env.entities.mayBeOrBeIn(env.principal, bit);
}

/**
 * The policy's scope holds for the request. `listed`: the dimensions (LISTED_* bits) whose
 * constraint the candidate list the policy was taken from already proves — those are not
 * checked again (the principal's and resource's only where the listing proves them).
 */
function scopesMatch(p: CompiledPolicy, env: EvalEnv, listed: number): boolean {
  const acc = env.entities;
  // (The principal's filter bit was tested from the candidate list: principalMayMatch.)
  if (
    !((listed & LISTED_PRINCIPAL) !== 0 && p.principalListed) &&
    !scopeMatches(p.principal, env.principal, acc)
  )
    return false;
  if ((listed & LISTED_ACTION) === 0 && !actionMatches(p.action, env.action, acc)) return false;
  if (!((listed & LISTED_RESOURCE) !== 0 && p.resourceListed)) {
    const bit = p.resourceBit;
    if (bit >= 0 && !acc.mayBeOrBeIn(env.resource, bit)) return false;
    if (!scopeMatches(p.resource, env.resource, acc)) return false;
  }
  return true;
}

interface RunOutcome {
  decision: "allow" | "deny";
  reasons: string[];
  /** The policies `reasons` names, in the same order. */
  determining: CompiledPolicy[];
  errors: PolicyError[];
  /** A satisfied permit's conditions do not read `mfa_age_seconds`. */
  mfaFreePermit: boolean;
}

/**
 * zt's compiled Cedar evaluator: policies compiled to closures at load, candidates found
 * through a scope index (principal / action / resource), entity hierarchy answered by the
 * entity store's precomputed ancestor sets.
 *
 * Per decision: the request's three entity uids and its context are converted once; the
 * candidate list of each dimension is cached per entity key (for `in` buckets: per store
 * and hierarchy version), so a decision usually looks only at the few policies whose scope
 * can match and evaluates their conditions.
 */
export class CompiledEngine implements PolicyEngine {
  readonly kind = "compiled" as const;
  readonly policies: CompiledPolicy[];
  /** Every policy, as a candidate list (when no dimension can narrow). */
  private readonly everyPolicy: CandidateList;
  private readonly meta: Map<string, PolicyMeta>;
  private readonly dims: [DimIndex, DimIndex, DimIndex];
  private readonly lists: [ListCache, ListCache, ListCache];
  private listsStore: EntityStore | undefined;
  /** What the last `candidates` list proves (LISTED_* bits). */
  private listedDims = 0;
  private listsVersion = -1;
  /**
   * The schema's action entities (with their groups as parents) when it declares action
   * groups: an entity store fed from zt's tables holds no actions, and an action it does
   * not hold is looked up here (see `schemaActionEntities`).
   */
  readonly schemaActions: EntityStore | undefined;

  constructor(readonly policySet: LoadedPolicySet) {
    this.meta = policyMetaIndex(policySet);
    const actions = policySet.schema ? schemaActionEntities(policySet.schema) : [];
    this.schemaActions = actions.some((a) => a.parents.length > 0)
      ? new EntityStore(actions)
      : undefined;
    const byId = new Map(policySet.policies.map((p) => [p.id, p]));
    const conditions: ConditionCache = new Map();
    const list: CompiledPolicy[] = [];
    for (const p of policySet.policies) {
      if (p.kind === "static")
        list.push(compilePolicy(p.id, p, new Map(), this.meta.get(p.id), conditions));
    }
    for (const link of policySet.templateLinks) {
      const t = byId.get(link.templateId);
      if (!t) throw new Error(`template link ${link.newId}: no template ${link.templateId}`);
      const slots = new Map<string, EntityRef>();
      for (const [k, v] of Object.entries(link.values)) {
        const slot = k.startsWith("?") ? k : `?${k}`;
        slots.set(slot, new EntityRef(v.type, v.id));
      }
      list.push(compilePolicy(link.newId, t, slots, this.meta.get(link.newId), conditions));
    }
    this.policies = list;
    this.everyPolicy = interleaved(list);
    this.dims = [newDim(), newDim(), newDim()];
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      indexScope(this.dims[0], p.principal, i);
      indexScope(this.dims[2], p.resource, i);
      const a = this.dims[1];
      if (p.action.op === "All") a.all.push(i);
      else if (p.action.op === "==") push(a.eq, p.action.entities[0]!.key, i);
      else for (const key of new Set(p.action.entities.map((x) => x.key))) push(a.inn, key, i);
    }
    this.lists = [new ListCache(), new ListCache(), new ListCache()];
  }

  authorize(request: AuthorizationRequest, entities: EntityView): AuthorizationResult {
    try {
      const principal = entityFromJson(request.principal);
      const action = entityFromJson(request.action);
      const resource = entityFromJson(request.resource);
      const env: EvalEnv = {
        principal,
        action,
        resource,
        context: contextFrom(request.context),
        entities:
          entities instanceof EntityStore
            ? new RequestAccess(entities, principal, action, resource, this.schemaActions)
            : new ViewAccess(entities, this.schemaActions),
      };
      return this.evaluate(env, entities);
    } catch (e) {
      return policyErrorResult((e as Error)?.message ?? String(e));
    }
  }

  /** Evaluates with a prepared environment (used by tools that parse inputs with a schema). */
  evaluate(env: EvalEnv, entities: EntityView): AuthorizationResult {
    const store = entities instanceof EntityStore ? entities : undefined;
    const candidates = this.candidates(env, store);
    const listed = this.listedDims;
    const r = this.run(env, candidates, listed);
    return decideVerdict({
      decision: r.decision,
      reasons: r.reasons,
      errors: r.errors,
      meta: r.determining.length === 0 ? this.meta : new DeterminingMeta(r.determining, this.meta),
      allowsWithoutStepUp: () => this.allowedAfterStepUp(env, candidates, listed, r.mfaFreePermit),
    });
  }

  /**
   * Would Cedar allow the request after a step-up — with `mfa_age_seconds` = 0 and the
   * `@step_up` forbids lifted? Only asked when every satisfied forbid was a step-up one and
   * none erred, so only policies whose conditions read the MFA age can answer differently
   * from the first run: those are evaluated again (forbids first, stopping at the first
   * answer); the others keep their first-run outcome. Equivalent to evaluating every
   * candidate again on the refreshed context (tested against that).
   */
  private allowedAfterStepUp(
    env: EvalEnv,
    candidates: CandidateList,
    listed: number,
    mfaFreePermit: boolean,
  ): boolean {
    const fresh: EvalEnv = { ...env, context: withFreshMfa(env.context) };
    const n = candidates.length;
    for (let j = 0; j < n; j += 2) {
      if (!principalMayMatch(candidates[j] as number, env)) continue;
      const p = candidates[j + 1] as CompiledPolicy;
      if (p.effect === "forbid" && !p.stepUp && p.readsMfa && this.applies(p, fresh, listed))
        return false;
    }
    if (mfaFreePermit) return true;
    for (let j = 0; j < n; j += 2) {
      if (!principalMayMatch(candidates[j] as number, env)) continue;
      const p = candidates[j + 1] as CompiledPolicy;
      if (p.effect === "permit" && p.readsMfa && this.applies(p, fresh, listed)) return true;
    }
    return false;
  }

  /** The policy's scope matches and its conditions hold (an error: it does not apply). */
  private applies(p: CompiledPolicy, env: EvalEnv, listed: number): boolean {
    if (!scopesMatch(p, env, listed)) return false;
    if (p.condition === undefined) return true;
    try {
      return p.condition(env);
    } catch (e) {
      if (!(e instanceof CedarEvalError)) throw e;
      return false;
    }
  }

  /** Evaluates the candidates. */
  private run(env: EvalEnv, candidates: CandidateList, listed: number): RunOutcome {
    let forbids: CompiledPolicy[] | undefined;
    let permits: CompiledPolicy[] | undefined;
    let mfaFreePermit = false;
    const errors: PolicyError[] = [];
    const n = candidates.length;
    for (let j = 0; j < n; j += 2) {
      if (!principalMayMatch(candidates[j] as number, env)) continue;
      const p = candidates[j + 1] as CompiledPolicy;
      if (!scopesMatch(p, env, listed)) continue;
      const cond = p.condition;
      if (cond !== undefined) {
        let sat: boolean;
        try {
          sat = cond(env);
        } catch (e) {
          if (!(e instanceof CedarEvalError)) throw e;
          errors.push({ policyId: p.id, message: e.message });
          continue;
        }
        if (!sat) continue;
      }
      if (p.effect === "forbid") (forbids ??= []).push(p);
      else {
        (permits ??= []).push(p);
        if (!p.readsMfa) mfaFreePermit = true;
      }
    }
    if (errors.length > 1) errors.sort(byPolicyId);
    const determining = forbids ?? permits;
    return {
      decision: forbids === undefined && permits !== undefined ? "allow" : "deny",
      reasons: determining === undefined ? [] : determining.map(idOf),
      determining: determining ?? [],
      errors,
      mfaFreePermit,
    };
  }

  /**
   * The smallest candidate list among the three dimensions (undefined: every policy). Lists
   * are cached per entity key; those that depend on ancestors are dropped whenever the
   * store or its hierarchy changes.
   */
  private candidates(env: EvalEnv, store: EntityStore | undefined): CandidateList {
    if (store !== undefined && (store !== this.listsStore || store.version !== this.listsVersion)) {
      for (let d = 0; d < 3; d++) if (this.dims[d]!.inn.size > 0) this.lists[d]!.clear();
      this.listsStore = store;
      this.listsVersion = store.version;
    }
    let best: CandidateList | undefined;
    let bestDim = -1;
    for (const d of DIM_ORDER) {
      const dim = this.dims[d];
      const e = d === 0 ? env.principal : d === 1 ? env.action : env.resource;
      const usesHierarchy = dim.inn.size > 0;
      if (usesHierarchy && store === undefined) continue; // cannot enumerate ancestors
      // Cheapest test first, before any lookup: the unconstrained policies alone leave
      // too little to gain (the principal's dimension, usually: its cache would be keyed
      // by every user).
      if (
        best !== undefined &&
        dim.all.length + (usesHierarchy ? NARROWING_MARGIN : 0) >= count(best)
      )
        continue;
      const cache = this.lists[d];
      let l = cache.get(e);
      if (l === undefined) {
        if (best !== undefined) {
          const floor = ownBucketsSize(dim, e);
          const size = count(best);
          if (floor >= size || (usesHierarchy && floor + NARROWING_MARGIN >= size)) continue;
        }
        l = candidateList(dim, e, store, this.policies, this.schemaActions);
        cache.set(e, l);
      }
      if (best === undefined || count(l) < count(best)) {
        best = l;
        bestDim = d;
      }
    }
    if (best === undefined) {
      this.listedDims = 0;
      return this.everyPolicy;
    }
    this.listedDims = LISTED_BY_DIM[bestDim as 0 | 1 | 2];
    return best;
  }
}

const idOf = (p: CompiledPolicy): string => p.id;

/**
 * Annotations for a verdict: the determining policies' from the policy objects the
 * decision already holds (with thousands of policies, a lookup in the id map is a cache
 * miss or two each), any other id's from the map.
 */
class DeterminingMeta implements MetaLookup {
  constructor(
    private readonly determining: readonly CompiledPolicy[],
    private readonly all: ReadonlyMap<string, PolicyMeta>,
  ) {}
  get(id: string): PolicyMeta | undefined {
    for (const p of this.determining) if (p.id === id) return p.meta;
    return this.all.get(id);
  }
}

function byPolicyId(a: PolicyError, b: PolicyError): number {
  return a.policyId < b.policyId ? -1 : a.policyId > b.policyId ? 1 : 0;
}

/** The context as it will be after a successful step-up: `mfa_age_seconds` = 0 (when present). */
function withFreshMfa(ctx: CRecord): CRecord {
  return ctx.has("mfa_age_seconds") ? ctx.withAttr("mfa_age_seconds", 0) : ctx;
}

/** Converts a JSON context record (Cedar JSON value format) to a runtime record. */
export function contextFrom(ctx: Record<string, unknown>): CRecord {
  if (ctx === null || typeof ctx !== "object" || Array.isArray(ctx))
    throw new CedarEvalError("context must be a record");
  return recordFromJson(ctx);
}
