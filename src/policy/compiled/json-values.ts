import { EXTENSION_FUNCTIONS, parseDatetime, parseIp } from "./extensions.js";
import type { CedarEntity } from "../types.js";
import type { EntityData } from "./compile-expr.js";
import { CedarEvalError, CRecord, CSet, EntityRef, longFromBigInt, type Value } from "./values.js";

/**
 * Converts a value in Cedar's JSON value format (`__entity`, `__extn` escapes, arrays as
 * sets, objects as records) to a runtime value. Integers may be bigints (from a
 * precision-preserving JSON parser) or JS numbers.
 */
export function valueFromJson(v: unknown): Value {
  switch (typeof v) {
    case "boolean":
    case "string":
      return v;
    case "number": {
      if (!Number.isInteger(v)) throw new CedarEvalError(`not a Cedar Long: ${v}`);
      if (Number.isSafeInteger(v)) return v === 0 ? 0 : v;
      const l = longFromBigInt(BigInt(v));
      if (l === undefined) throw new CedarEvalError(`Long out of range: ${v}`);
      return l;
    }
    case "bigint": {
      const l = longFromBigInt(v);
      if (l === undefined) throw new CedarEvalError(`Long out of range: ${v}`);
      return l;
    }
    case "object":
      break;
    default:
      throw new CedarEvalError(`not a Cedar value: ${typeof v}`);
  }
  if (v === null) throw new CedarEvalError("null is not a Cedar value");
  if (Array.isArray(v)) {
    if (v.length === 0) return EMPTY_SET;
    const items: Value[] = [];
    for (const x of v) items.push(valueFromJson(x));
    return new CSet(items);
  }

  const o = v as Record<string, unknown>;
  if (o["__entity"] !== undefined || o["__extn"] !== undefined) {
    // An escape only when it has the escape's shape; otherwise Cedar reads the object as
    // an ordinary record with a `__entity` / `__extn` attribute (as cedar-wasm does).
    const k = soleKey(o);
    if (k === "__entity" && isTypeAndId(o["__entity"])) return entityFromJson(o["__entity"]);
    if (k === "__extn" && isFnAndArg(o["__extn"])) return extnFromJson(o["__extn"]);
  }
  return recordFromJson(o);
}

function isTypeAndId(u: unknown): boolean {
  if (typeof u !== "object" || u === null || Array.isArray(u)) return false;
  const e = u as { type?: unknown; id?: unknown };
  return typeof e.type === "string" && typeof e.id === "string";
}

function isFnAndArg(u: unknown): boolean {
  if (typeof u !== "object" || u === null || Array.isArray(u)) return false;
  const x = u as { fn?: unknown; arg?: unknown; args?: unknown };
  return typeof x.fn === "string" && (x.arg !== undefined || x.args !== undefined);
}

/** The object's only own enumerable key, or undefined when it has none or several. */
function soleKey(o: Record<string, unknown>): string | undefined {
  let only: string | undefined;
  for (const k in o) {
    if (!Object.hasOwn(o, k)) continue;
    if (only !== undefined) return undefined;
    only = k;
  }
  return only;
}

/**
 * A JSON object as a Cedar record. Every attribute is validated now (a bad value is an
 * error here, as when converting eagerly); strings, booleans and safe integers are their
 * own runtime values and are read from the object when a policy asks (no Map is built for
 * them), the rest is converted now.
 */
export function recordFromJson(o: Record<string, unknown>): CRecord {
  let converted: (string | Value)[] | undefined;
  let absent = false;
  // Own enumerable string keys, in for-in order (V8 answers from the shape's enum cache).
  let keys = Object.keys(o);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const x = o[k];
    if (typeof x === "string" || typeof x === "boolean") continue;
    if (typeof x === "number" && Number.isSafeInteger(x)) continue;
    // An attribute set to `undefined` is absent, as cedar-wasm reads it (and JSON writes it).
    if (x === undefined) {
      absent = true;
      continue;
    }
    const v = valueFromJson(x);
    if (converted === undefined) converted = [k, v];
    else converted.push(k, v);
  }
  if (absent) keys = keys.filter((k) => o[k] !== undefined);
  if (converted !== undefined && converted.length > 2 * LAZY_CONVERTED_MAX) {
    // Many structured attributes: a Map answers faster than scanning the list.
    const map = new Map<string, Value>();
    for (const k of keys) {
      const x = o[k];
      map.set(k, x === 0 ? 0 : (x as Value)); // structured values are replaced just below
    }
    for (let i = 0; i < converted.length; i += 2)
      map.set(converted[i] as string, converted[i + 1]!);
    return new CRecord(map);
  }
  return CRecord.lazy(o, converted, keys);
}

/** Above this many converted (non-primitive) attributes a record is Map-backed. */
const LAZY_CONVERTED_MAX = 8;

/** Sets are never changed after construction, so every empty one can be this one. */
const EMPTY_SET = new CSet([]);

export function entityFromJson(u: unknown): EntityRef {
  const e = u as { type?: unknown; id?: unknown } | null;
  if (!e || typeof e.type !== "string" || typeof e.id !== "string")
    throw new CedarEvalError("invalid entity reference");
  return new EntityRef(e.type, e.id);
}

export function extnFromJson(x: unknown): Value {
  const o = x as { fn?: unknown; arg?: unknown; args?: unknown } | null;
  if (!o || typeof o.fn !== "string") throw new CedarEvalError("invalid extension value");
  // Hot path (request contexts): the two constructors the PEP uses on every request.
  if (typeof o.arg === "string" && o.args === undefined) {
    if (o.fn === "ip") {
      const r = parseIp(o.arg);
      if (r) return r;
    } else if (o.fn === "datetime") {
      const r = parseDatetime(o.arg);
      if (r) return r;
    }
  }
  const f = EXTENSION_FUNCTIONS[o.fn];
  if (!f) throw new CedarEvalError(`unknown extension function ${o.fn}`);
  const args = Array.isArray(o.args) ? o.args : [o.arg];
  if (args.length !== f.arity) throw new CedarEvalError(`wrong number of arguments to ${o.fn}`);
  const vals: Value[] = [];
  for (const a of args) vals.push(valueFromJson(a));
  return f.fn(vals);
}

/** An entity's attributes and tags as runtime values (throws CedarEvalError on a bad value). */
export function convertEntity(raw: CedarEntity): EntityData {
  const attrs = recordFromJson((raw.attrs ?? {}) as Record<string, unknown>);
  let tags: Map<string, Value> | undefined;
  if (raw.tags) {
    tags = new Map();
    for (const [k, v] of Object.entries(raw.tags))
      if (v !== undefined) tags.set(k, valueFromJson(v));
  }
  return { attrs, tags };
}
