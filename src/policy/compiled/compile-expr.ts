/**
 * Compiles Cedar's JSON expression form (as produced by cedar-wasm's policyToJson) into
 * JS closures, once, at load. Semantics follow cedar-policy-core's evaluator: operands
 * are evaluated left to right before an operator checks their types; `&&`, `||` and
 * `if` short-circuit; any error aborts the policy (which Cedar then skips and reports).
 */
import { compareValues, EXTENSION_FUNCTIONS } from "./extensions.js";
import { valueFromJson } from "./json-values.js";
import {
  addLong,
  CedarEvalError,
  CRecord,
  CSet,
  EntityRef,
  isLong,
  sameEntity,
  mulLong,
  policyRef,
  negLong,
  subLong,
  typeError,
  valueEquals,
  type Long,
  type Value,
} from "./values.js";

/** What a compiled expression can see while it runs. */
export interface EvalEnv {
  principal: EntityRef;
  action: EntityRef;
  resource: EntityRef;
  context: CRecord;
  entities: EntityAccess;
}

/** Entity data as the evaluator needs it (attributes and tags already converted). */
export interface EntityData {
  /** The attributes, read lazily from the entity's JSON (validated when first converted). */
  attrs: CRecord;
  tags: Map<string, Value> | undefined;
}

export interface EntityAccess {
  /** undefined when the entity does not exist. */
  data(e: EntityRef): EntityData | undefined;
  /** `a in b` through the hierarchy (a ≠ b). */
  isIn(a: EntityRef, b: EntityRef): boolean;
  /**
   * False when `e` is certainly neither the uid whose `ancestorFilterBit` is `bit` nor in
   * it (a quick test before `sameEntity` / `isIn`); true when it may be.
   */
  mayBeOrBeIn(e: EntityRef, bit: number): boolean;
}

export type Compiled = (env: EvalEnv) => Value;

/** Slot values of a template link (`?principal`, `?resource`). */
export type SlotEnv = ReadonlyMap<string, EntityRef>;

interface Node {
  f: Compiled;
  /** Present when the expression is a constant (evaluated once at compile time). */
  k?: { v: Value };
}

type Json = Record<string, unknown>;

function asBool(v: Value): boolean {
  if (typeof v === "boolean") return v;
  throw typeError("Bool", v);
}

function asLongV(v: Value): Long {
  if (isLong(v)) return v;
  throw typeError("Long", v);
}

function asEntity(v: Value): EntityRef {
  if (v instanceof EntityRef) return v;
  throw typeError("entity", v);
}

function asSet(v: Value): CSet {
  if (v instanceof CSet) return v;
  throw typeError("Set", v);
}

function asString(v: Value): string {
  if (typeof v === "string") return v;
  throw typeError("String", v);
}

export function isIn(env: EvalEnv, a: EntityRef, rhs: Value): boolean {
  if (rhs instanceof EntityRef) return sameEntity(a, rhs) || env.entities.isIn(a, rhs);
  if (rhs instanceof CSet) {
    const targets: EntityRef[] = [];
    for (const x of rhs.items.values()) targets.push(asEntity(x));
    for (const t of targets) if (sameEntity(a, t) || env.entities.isIn(a, t)) return true;
    return false;
  }
  throw typeError("entity or Set", rhs);
}

export function getAttr(env: EvalEnv, v: Value, attr: string): Value {
  if (v instanceof CRecord) {
    const r = v.get(attr);
    if (r === undefined) throw new CedarEvalError(`record does not have the attribute \`${attr}\``);
    return r;
  }
  if (v instanceof EntityRef) {
    const d = env.entities.data(v);
    if (!d) throw new CedarEvalError(`entity \`${v.type}::"${v.id}"\` does not exist`);
    const r = d.attrs.get(attr);
    if (r === undefined)
      throw new CedarEvalError(`\`${v.type}::"${v.id}"\` does not have the attribute \`${attr}\``);
    return r;
  }
  throw typeError("record or entity", v);
}

export function hasAttr(env: EvalEnv, v: Value, attr: string): boolean {
  if (v instanceof CRecord) return v.has(attr);
  if (v instanceof EntityRef) return env.entities.data(v)?.attrs.has(attr) ?? false;
  throw typeError("record or entity", v);
}

/**
 * `like` patterns: `*` is a wildcard over Unicode scalar values; literals match exactly.
 * Matched as literal segments between wildcards: the first anchored at the start, the last
 * at the end, the others found leftmost in order (greedy leftmost is optimal when `*` is
 * the only metacharacter). Linear-ish in the input whatever the pattern: a backtracking
 * regex took O(n^k) for k wildcards, seconds per request on a 16 KB path.
 * (Code units suffice: literals are whole characters, so a match never splits a pair.)
 */
export function compileLike(pattern: unknown[]): (s: string) => boolean {
  const segments: string[] = [""];
  for (const el of pattern) {
    if (el === "Wildcard") segments.push("");
    else segments[segments.length - 1] += (el as { Literal: string }).Literal;
  }
  const first = segments[0]!;
  if (segments.length === 1) return (s) => s === first;
  const last = segments[segments.length - 1]!;
  const middle = segments.slice(1, -1).filter((m) => m !== "");
  const fixed = first.length + last.length;
  return (s) => {
    if (s.length < fixed || !s.startsWith(first) || !s.endsWith(last)) return false;
    const end = s.length - last.length;
    let i = first.length;
    for (const m of middle) {
      const j = s.indexOf(m, i);
      if (j < 0 || j + m.length > end) return false;
      i = j + m.length;
    }
    return true;
  };
}

/** Compiles one expression. Slots are bound from `slots` (template links). */
export function compileExpr(expr: unknown, slots: SlotEnv): Compiled {
  return compile(expr as Json, slots).f;
}

function evalAll(fs: Compiled[], env: EvalEnv): Value[] {
  const out: Value[] = [];
  for (const f of fs) out.push(f(env));
  return out;
}

function konst(v: Value): Node {
  return { f: () => v, k: { v } };
}

/** Folds a node whose children are all constant, unless evaluating it raises an error. */
function fold(node: Node, children: Node[]): Node {
  if (!children.every((c) => c.k)) return node;
  try {
    return konst(node.f(undefined as unknown as EvalEnv));
  } catch {
    return node;
  }
}

function compile(e: Json, slots: SlotEnv): Node {
  const keys = Object.keys(e);
  if (keys.length !== 1) throw new Error(`unexpected expression: ${JSON.stringify(e)}`);
  const op = keys[0]!;
  const body = e[op] as Json;
  switch (op) {
    case "Value": {
      try {
        const v = valueFromJson(body);
        // An entity literal (`principal in Group::"g"`) is the shared constant, as in scopes.
        return konst(v instanceof EntityRef ? policyRef(v) : v);
      } catch (err) {
        return {
          f: () => {
            throw err;
          },
        };
      }
    }
    case "Var":
      switch (body as unknown as string) {
        case "principal":
          return { f: (env) => env.principal };
        case "action":
          return { f: (env) => env.action };
        case "resource":
          return { f: (env) => env.resource };
        case "context":
          return { f: (env) => env.context };
      }
      throw new Error(`unknown variable ${String(body)}`);
    case "Slot": {
      const v = slots.get(body as unknown as string);
      if (!v)
        return {
          f: () => {
            throw new CedarEvalError(`unlinked slot ${String(body)}`);
          },
        };
      return konst(v);
    }
    case "!": {
      const a = compile(body["arg"] as Json, slots);
      const af = a.f;
      return fold({ f: (env) => !asBool(af(env)) }, [a]);
    }
    case "neg": {
      const a = compile(body["arg"] as Json, slots);
      const af = a.f;
      return fold({ f: (env) => negLong(asLongV(af(env))) }, [a]);
    }
    case "isEmpty": {
      const a = compile(body["arg"] as Json, slots);
      const af = a.f;
      return fold({ f: (env) => asSet(af(env)).size === 0 }, [a]);
    }
    case "&&":
    case "||": {
      const l = compile(body["left"] as Json, slots);
      const r = compile(body["right"] as Json, slots);
      const lf = l.f;
      const rf = r.f;
      const node: Node =
        op === "&&"
          ? { f: (env) => asBool(lf(env)) && asBool(rf(env)) }
          : { f: (env) => asBool(lf(env)) || asBool(rf(env)) };
      return fold(node, [l, r]);
    }
    case "if-then-else": {
      const c = compile(body["if"] as Json, slots);
      const t = compile(body["then"] as Json, slots);
      const el = compile(body["else"] as Json, slots);
      const cf = c.f;
      const tf = t.f;
      const ef = el.f;
      return fold({ f: (env) => (asBool(cf(env)) ? tf(env) : ef(env)) }, [c, t, el]);
    }
    case "==":
    case "!=":
    case "<":
    case "<=":
    case ">":
    case ">=":
    case "+":
    case "-":
    case "*":
    case "in":
    case "contains":
    case "containsAll":
    case "containsAny":
    case "getTag":
    case "hasTag":
      return binary(op, body, slots);
    case ".": {
      const l = compile(body["left"] as Json, slots);
      const lf = l.f;
      const attr = body["attr"] as string;
      if (l.k && l.k.v instanceof CRecord)
        return fold({ f: (env) => getAttr(env, lf(env), attr) }, [l]);
      return { f: (env) => getAttr(env, lf(env), attr) };
    }
    case "has": {
      const l = compile(body["left"] as Json, slots);
      const lf = l.f;
      const raw = body["attr"];
      const path = Array.isArray(raw) ? (raw as string[]) : [raw as string];
      const node: Node =
        path.length === 1
          ? { f: (env) => hasAttr(env, lf(env), path[0]!) }
          : {
              f: (env) => {
                let v = lf(env);
                for (let i = 0; i < path.length; i++) {
                  if (!hasAttr(env, v, path[i]!)) return false;
                  if (i < path.length - 1) v = getAttr(env, v, path[i]!);
                }
                return true;
              },
            };
      if (l.k && l.k.v instanceof CRecord) return fold(node, [l]);
      return node;
    }
    case "like": {
      const l = compile(body["left"] as Json, slots);
      const lf = l.f;
      const m = compileLike(body["pattern"] as unknown[]);
      return fold({ f: (env) => m(asString(lf(env))) }, [l]);
    }
    case "is": {
      const l = compile(body["left"] as Json, slots);
      const lf = l.f;
      const type = body["entity_type"] as string;
      if (body["in"] === undefined)
        return fold({ f: (env) => asEntity(lf(env)).type === type }, [l]);
      const r = compile(body["in"] as Json, slots);
      const rf = r.f;
      return {
        f: (env) => {
          const ent = asEntity(lf(env));
          if (ent.type !== type) return false;
          return isIn(env, ent, rf(env));
        },
      };
    }
    case "Set": {
      const items = (body as unknown as Json[]).map((x) => compile(x, slots));
      const fs = items.map((i) => i.f);
      return fold({ f: (env) => new CSet(evalAll(fs, env)) }, items);
    }
    case "Record": {
      const entries = Object.entries(body).map(([k, x]) => [k, compile(x as Json, slots)] as const);
      const fs = entries.map(([k, n]) => [k, n.f] as const);
      return fold(
        {
          f: (env) => {
            const m = new Map<string, Value>();
            for (const [k, f] of fs) m.set(k, f(env));
            return new CRecord(m);
          },
        },
        entries.map(([, n]) => n),
      );
    }
    default: {
      const ext = EXTENSION_FUNCTIONS[op];
      if (!ext || !Array.isArray(body)) throw new Error(`unsupported expression: ${op}`);
      const args = (body as unknown as Json[]).map((x) => compile(x, slots));
      const fs = args.map((a) => a.f);
      const fn = ext.fn;
      if (fs.length !== ext.arity) {
        const name = op;
        const want = ext.arity;
        return {
          f: (env) => {
            for (const f of fs) f(env);
            throw new CedarEvalError(`wrong number of arguments to ${name}: expected ${want}`);
          },
        };
      }
      if (fs.length === 1) {
        const a0 = fs[0]!;
        return fold({ f: (env) => fn([a0(env)]) }, args);
      }
      if (fs.length === 2) {
        const a0 = fs[0]!;
        const a1 = fs[1]!;
        return fold({ f: (env) => fn([a0(env), a1(env)]) }, args);
      }
      return fold({ f: (env) => fn(evalAll(fs, env)) }, args);
    }
  }
}

function binary(op: string, body: Json, slots: SlotEnv): Node {
  const l = compile(body["left"] as Json, slots);
  const r = compile(body["right"] as Json, slots);
  const lf = l.f;
  const rf = r.f;
  let f: Compiled;
  switch (op) {
    case "==":
      f = (env) => valueEquals(lf(env), rf(env));
      break;
    case "!=":
      f = (env) => !valueEquals(lf(env), rf(env));
      break;
    case "<":
      f = (env) => compareValues(lf(env), rf(env), false);
      break;
    case "<=":
      f = (env) => compareValues(lf(env), rf(env), true);
      break;
    case ">":
      f = (env) => {
        const a = lf(env);
        return compareValues(rf(env), a, false);
      };
      break;
    case ">=":
      f = (env) => {
        const a = lf(env);
        return compareValues(rf(env), a, true);
      };
      break;
    case "+":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        return addLong(asLongV(a), asLongV(b));
      };
      break;
    case "-":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        return subLong(asLongV(a), asLongV(b));
      };
      break;
    case "*":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        return mulLong(asLongV(a), asLongV(b));
      };
      break;
    case "in":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        return isIn(env, asEntity(a), b);
      };
      break;
    case "contains":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        return asSet(a).has(b);
      };
      break;
    case "containsAll":
      f = (env) => {
        const a = asSet(lf(env));
        const b = asSet(rf(env));
        for (const k of b.items.keys()) if (!a.items.has(k)) return false;
        return true;
      };
      break;
    case "containsAny":
      f = (env) => {
        const a = asSet(lf(env));
        const b = asSet(rf(env));
        for (const k of b.items.keys()) if (a.items.has(k)) return true;
        return false;
      };
      break;
    case "getTag":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        const ent = asEntity(a);
        const tag = asString(b);
        const d = env.entities.data(ent);
        if (!d) throw new CedarEvalError(`entity \`${ent.type}::"${ent.id}"\` does not exist`);
        const v = d.tags?.get(tag);
        if (v === undefined) throw new CedarEvalError(`entity does not have the tag \`${tag}\``);
        return v;
      };
      break;
    case "hasTag":
      f = (env) => {
        const a = lf(env);
        const b = rf(env);
        const ent = asEntity(a);
        const tag = asString(b);
        return env.entities.data(ent)?.tags?.has(tag) ?? false;
      };
      break;
    default:
      throw new Error(`unsupported operator ${op}`);
  }
  // Folding entity-dependent operators would need entities: only fold pure ones.
  if (op === "in" || op === "getTag" || op === "hasTag") return { f };
  return fold({ f }, [l, r]);
}
