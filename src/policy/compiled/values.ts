/**
 * Runtime values of zt's compiled Cedar evaluator.
 *
 * Long is a JS number while it is a safe integer and a bigint beyond (always in i64
 * range); the representation is canonical, so `===` is Cedar equality on Longs.
 */
import { ancestorFilterBit, internedKey } from "../entity-store.js";

export type Long = number | bigint;

export class EntityRef {
  #key: string | undefined;
  constructor(
    readonly type: string,
    readonly id: string,
    /** The key, when the caller has it (an interned one, for policy constants). */
    key?: string,
  ) {
    this.#key = key;
  }

  /**
   * `uidKey` of this uid, made on first use: a request's own uids are compared and looked
   * up by type and id, so most are never joined into a key at all.
   */
  get key(): string {
    return (this.#key ??= `${this.type}\u0000${this.id}`);
  }

  #filterBit = -1;
  /** `ancestorFilterBit(key)`, computed on first use (kept: policy constants ask it often). */
  get filterBit(): number {
    if (this.#filterBit < 0) this.#filterBit = ancestorFilterBit(this.key);
    return this.#filterBit;
  }
}

/** Policy constants' uids: one object per uid, shared by every policy naming it. */
const policyRefs = new Map<string, EntityRef>();

/**
 * A policy's constant uid (in a scope or a literal), holding the interned key (see
 * `internedKey`). One object per uid, shared by all policies (and engines): the actions
 * and groups thousands of policies name stay in the CPU cache, with their key and filter
 * bit computed once.
 */
export function policyRef(e: EntityRef): EntityRef {
  const key = internedKey(e.key);
  let r = policyRefs.get(key);
  if (r === undefined) policyRefs.set(key, (r = new EntityRef(e.type, e.id, key)));
  return r;
}

/** The same entity uid (no key built). */
export function sameEntity(a: EntityRef, b: EntityRef): boolean {
  return a === b || (a.id === b.id && a.type === b.type);
}

export class CSet {
  /** Canonical key → element (deduplicated). */
  readonly items: Map<string, Value>;
  constructor(values: Iterable<Value>) {
    this.items = new Map();
    for (const v of values) this.items.set(hashKey(v), v);
  }
  get size(): number {
    return this.items.size;
  }
  has(v: Value): boolean {
    return this.items.has(hashKey(v));
  }
}

/**
 * A record. Either backed by a Map, or (request contexts, see `CRecord.lazy`) by the
 * validated JSON object itself: its string, boolean and safe-integer attributes are read
 * from the JSON when asked for, the others were converted up front. Either way `get`/`has`
 * answer by attribute name and `map` is the full Map (built on first use).
 */
export class CRecord {
  private full: Map<string, Value> | undefined;
  private readonly raw: Record<string, unknown> | undefined;
  /** Converted attributes of a lazy record, as [name, value, name, value, …] (a handful). */
  private readonly converted: (string | Value)[] | undefined;
  /**
   * A lazy record's attribute names: the JSON object's own enumerable keys when it was
   * validated (scanned instead of asking the object: property names are internalized
   * strings, so a miss is a pointer comparison, and no C++ builtin call per lookup).
   */
  private readonly keys: readonly string[] | undefined;

  constructor(map: Map<string, Value>) {
    this.full = map;
    this.raw = undefined;
    this.converted = undefined;
    this.keys = undefined;
  }

  /**
   * A record over a JSON object whose own enumerable attributes are `keys` and are all
   * valid: strings, booleans and safe integers stay in `raw`; every other attribute's
   * runtime value is in `converted`.
   */
  static lazy(
    raw: Record<string, unknown>,
    converted: (string | Value)[] | undefined,
    keys: readonly string[],
  ): CRecord {
    const r = new CRecord(EMPTY_MAP);
    r.full = undefined;
    const w = r as unknown as { raw: unknown; converted: unknown; keys: unknown };
    w.raw = raw;
    w.converted = converted;
    w.keys = keys;
    return r;
  }

  get(k: string): Value | undefined {
    const full = this.full;
    if (full !== undefined) return full.get(k);
    const c = this.converted;
    if (c !== undefined)
      for (let i = 0; i < c.length; i += 2) if (c[i] === k) return c[i + 1] as Value;
    if (!this.keys!.includes(k)) return undefined;
    const v = this.raw![k];
    if (typeof v === "string" || typeof v === "boolean") return v;
    if (typeof v === "number" && Number.isSafeInteger(v)) return v === 0 ? 0 : v;
    // Only an accessor that changed its answer since validation gets here.
    throw new CedarEvalError(`context attribute \`${k}\` changed during evaluation`);
  }

  has(k: string): boolean {
    const full = this.full;
    if (full !== undefined) return full.has(k);
    const c = this.converted;
    if (c !== undefined) for (let i = 0; i < c.length; i += 2) if (c[i] === k) return true;
    return this.keys!.includes(k);
  }

  /** A lazy record whose attributes are all strings, booleans and integers (nothing converted). */
  get primitiveOnly(): boolean {
    return this.full === undefined && this.converted === undefined;
  }

  /** This record with one attribute set (used for the step-up re-evaluation). */
  withAttr(k: string, v: Value): CRecord {
    const full = this.full;
    if (full !== undefined) return new CRecord(new Map(full).set(k, v));
    // Earlier entries win in `get`, so the new value goes first.
    const keys = this.keys!.includes(k) ? this.keys! : [...this.keys!, k];
    return CRecord.lazy(this.raw!, [k, v, ...(this.converted ?? [])], keys);
  }

  get map(): Map<string, Value> {
    let m = this.full;
    if (m === undefined) {
      m = new Map();
      for (const k of this.keys!) m.set(k, this.get(k)!);
      this.full = m;
    }
    return m;
  }
}

const EMPTY_MAP: Map<string, Value> = new Map();

export class IpAddr {
  /** The IPv4 address as a number (hot path: no bigint arithmetic); -1 for IPv6. */
  readonly v4: number;
  constructor(
    readonly v6: boolean,
    /** 32- or 128-bit address. */
    readonly addr: bigint,
    readonly prefix: number,
  ) {
    this.v4 = v6 ? -1 : Number(addr);
  }
}

export class Decimal {
  /** Value × 10⁴, in i64 range. */
  constructor(readonly value: Long) {}
}

export class DateTime {
  /** Milliseconds since the Unix epoch, in i64 range. */
  constructor(readonly ms: Long) {}
}

export class Duration {
  constructor(readonly ms: Long) {}
}

export type Value =
  boolean | Long | string | EntityRef | CSet | CRecord | IpAddr | Decimal | DateTime | Duration;

/** An evaluation error: the policy that raised it is skipped and reported (Cedar semantics). */
export class CedarEvalError extends Error {
  override readonly name = "CedarEvalError";
}

export function typeName(v: Value): string {
  switch (typeof v) {
    case "boolean":
      return "Bool";
    case "number":
    case "bigint":
      return "Long";
    case "string":
      return "String";
  }
  if (v instanceof EntityRef) return `entity of type ${v.type}`;
  if (v instanceof CSet) return "Set";
  if (v instanceof CRecord) return "Record";
  if (v instanceof IpAddr) return "ipaddr";
  if (v instanceof Decimal) return "decimal";
  if (v instanceof DateTime) return "datetime";
  return "duration";
}

export function typeError(expected: string, got: Value): CedarEvalError {
  return new CedarEvalError(`type error: expected ${expected}, got ${typeName(got)}`);
}

// ---- Long arithmetic (i64, overflow is an error) ----

const I64_MAX = 9223372036854775807n;
const I64_MIN = -9223372036854775808n;
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

/** Canonical Long from a bigint, or undefined when outside i64. */
export function longFromBigInt(b: bigint): Long | undefined {
  if (b > I64_MAX || b < I64_MIN) return undefined;
  return b <= SAFE_MAX && b >= -SAFE_MAX ? Number(b) : b;
}

function overflow(op: string, a: Long, b: Long): CedarEvalError {
  return new CedarEvalError(`integer overflow while attempting to ${op} \`${a}\` and \`${b}\``);
}

export function addLong(a: Long, b: Long): Long {
  if (typeof a === "number" && typeof b === "number") {
    const r = a + b;
    if (Number.isSafeInteger(r)) return r;
  }
  const r = longFromBigInt(BigInt(a) + BigInt(b));
  if (r === undefined) throw overflow("add", a, b);
  return r;
}

export function subLong(a: Long, b: Long): Long {
  if (typeof a === "number" && typeof b === "number") {
    const r = a - b;
    if (Number.isSafeInteger(r)) return r;
  }
  const r = longFromBigInt(BigInt(a) - BigInt(b));
  if (r === undefined) throw overflow("subtract", a, b);
  return r;
}

export function mulLong(a: Long, b: Long): Long {
  if (typeof a === "number" && typeof b === "number") {
    const r = a * b;
    if (Number.isSafeInteger(r)) return r === 0 ? 0 : r;
  }
  const r = longFromBigInt(BigInt(a) * BigInt(b));
  if (r === undefined) throw overflow("multiply", a, b);
  return r;
}

export function negLong(a: Long): Long {
  if (typeof a === "number") return a === 0 ? 0 : -a;
  const r = longFromBigInt(-a);
  if (r === undefined)
    throw new CedarEvalError(`integer overflow while attempting to negate \`${a}\``);
  return r;
}

export function isLong(v: Value): v is Long {
  return typeof v === "number" || typeof v === "bigint";
}

// ---- equality and canonical keys ----

export function valueEquals(a: Value, b: Value): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object") return false;
  if (a instanceof EntityRef) return b instanceof EntityRef && sameEntity(a, b);
  if (a instanceof CSet) {
    if (!(b instanceof CSet) || a.size !== b.size) return false;
    for (const k of a.items.keys()) if (!b.items.has(k)) return false;
    return true;
  }
  if (a instanceof CRecord) {
    if (!(b instanceof CRecord) || a.map.size !== b.map.size) return false;
    for (const [k, v] of a.map) {
      const w = b.map.get(k);
      if (w === undefined || !valueEquals(v, w)) return false;
    }
    return true;
  }
  if (a instanceof IpAddr)
    return b instanceof IpAddr && a.v6 === b.v6 && a.addr === b.addr && a.prefix === b.prefix;
  if (a instanceof Decimal) return b instanceof Decimal && a.value === b.value;
  if (a instanceof DateTime) return b instanceof DateTime && a.ms === b.ms;
  if (a instanceof Duration) return b instanceof Duration && a.ms === b.ms;
  return false;
}

/** A canonical string for a value: equal values, and only they, have equal keys. */
export function hashKey(v: Value): string {
  switch (typeof v) {
    case "boolean":
      return v ? "t" : "f";
    case "number":
    case "bigint":
      return `l${v}`;
    case "string":
      return `s${v}`;
  }
  if (v instanceof EntityRef) return `e${v.key}`;
  if (v instanceof CSet) return `S${JSON.stringify([...v.items.keys()].sort())}`;
  if (v instanceof CRecord) {
    const entries = [...v.map.entries()].map(([k, x]) => [k, hashKey(x)]);
    entries.sort((x, y) => (x[0]! < y[0]! ? -1 : x[0]! > y[0]! ? 1 : 0));
    return `R${JSON.stringify(entries)}`;
  }
  if (v instanceof IpAddr) return `i${v.v6 ? 6 : 4}:${v.addr}/${v.prefix}`;
  if (v instanceof Decimal) return `d${v.value}`;
  if (v instanceof DateTime) return `T${v.ms}`;
  return `D${v.ms}`;
}
