import * as cedar from "./cedar-wasm.js";
import { ZtError } from "../core/errors.js";
import type { CedarEntity, EntityUid } from "./types.js";

/**
 * Cedar's "entities parsed with a schema": with a schema, JSON data may omit the
 * `__extn` / `__entity` escapes (`"source_ip": "10.0.0.1"` for an ipaddr attribute,
 * `{ "type": "User", "id": "alice" }` for an entity). This turns such data into the
 * explicit form every engine understands, and adds the schema's action entities
 * (with their action groups as parents).
 */
export interface SchemaModel {
  entityTypes: Map<string, { attrs?: SType; tags?: SType }>;
  actions: Map<string, { uid: EntityUid; parents: EntityUid[]; context?: SType }>;
}

type SType = Record<string, unknown>;

const EXTENSIONS: Record<string, string> = {
  ipaddr: "ip",
  decimal: "decimal",
  datetime: "datetime",
  duration: "duration",
};

function qualify(ns: string, name: string): string {
  return ns === "" ? name : `${ns}::${name}`;
}

/** Builds a model from Cedar schema text (or JSON). Throws ZT_POLICY_INVALID when it does not parse. */
export function schemaModel(schema: string | object): SchemaModel {
  let text: string;
  if (typeof schema === "string") text = schema;
  else {
    const t = cedar.schemaToText(schema as Parameters<typeof cedar.schemaToText>[0]);
    if (t.type === "failure")
      throw new ZtError(
        "ZT_POLICY_INVALID",
        `schema: ${t.errors.map((e) => e.message).join("; ")}`,
      );
    text = t.text;
  }
  const res = cedar.schemaToJsonWithResolvedTypes(text);
  if (res.type === "failure")
    throw new ZtError(
      "ZT_POLICY_INVALID",
      `schema: ${res.errors.map((e) => e.message).join("; ")}`,
    );
  const json = res.json as unknown as Record<string, Record<string, unknown>>;
  const common = new Map<string, SType>();
  for (const [ns, def] of Object.entries(json)) {
    for (const [name, t] of Object.entries((def["commonTypes"] ?? {}) as Record<string, SType>))
      common.set(qualify(ns, name), t);
  }
  const resolve = (t: SType | undefined, depth = 0): SType | undefined => {
    if (!t || depth > 64) return t;
    const name = t["type"] as string;
    const target = name === "EntityOrCommon" ? (t["name"] as string) : name;
    const c = common.get(target);
    if (c) return resolve(c, depth + 1);
    return t;
  };
  const model: SchemaModel = { entityTypes: new Map(), actions: new Map() };
  for (const [ns, def] of Object.entries(json)) {
    for (const [name, et] of Object.entries((def["entityTypes"] ?? {}) as Record<string, SType>)) {
      const entry: { attrs?: SType; tags?: SType } = {};
      const shape = resolve(et["shape"] as SType | undefined);
      if (shape) entry.attrs = shape;
      const tags = resolve(et["tags"] as SType | undefined);
      if (tags) entry.tags = tags;
      model.entityTypes.set(qualify(ns, name), entry);
    }
    const actionType = qualify(ns, "Action");
    for (const [id, a] of Object.entries((def["actions"] ?? {}) as Record<string, SType>)) {
      const parents = ((a["memberOf"] ?? []) as { id: string; type?: string }[]).map((p) => ({
        type: p.type ?? actionType,
        id: p.id,
      }));
      const applies = a["appliesTo"] as SType | undefined;
      const ctx = resolve(applies?.["context"] as SType | undefined);
      const entry: { uid: EntityUid; parents: EntityUid[]; context?: SType } = {
        uid: { type: actionType, id },
        parents,
      };
      if (ctx) entry.context = ctx;
      model.actions.set(`${actionType}\u0000${id}`, entry);
    }
  }
  const deep = (t: SType | undefined): SType | undefined => resolve(t);
  resolveCache.set(model, deep);
  return model;
}

const resolveCache = new WeakMap<SchemaModel, (t: SType | undefined) => SType | undefined>();

function typeName(t: SType): string {
  let name = t["type"] as string;
  if (name === "EntityOrCommon" || name === "Extension") name = t["name"] as string;
  return name.startsWith("__cedar::") ? name.slice("__cedar::".length) : name;
}

/** Rewrites `v` into explicit Cedar JSON according to type `t`. Unknown shapes pass through. */
export function canonicalValue(model: SchemaModel, t: SType | undefined, v: unknown): unknown {
  const resolve = resolveCache.get(model)!;
  const rt = resolve(t);
  if (!rt || v === null || v === undefined) return v;
  const name = typeName(rt);
  const ext = Object.hasOwn(EXTENSIONS, name) ? EXTENSIONS[name] : undefined;
  if (ext) {
    if (typeof v === "string") return { __extn: { fn: ext, arg: v } };
    const o = v as Record<string, unknown>;
    if (typeof o === "object" && !("__extn" in o) && typeof o["fn"] === "string")
      return { __extn: o };
    return v;
  }
  if (name === "Set" && Array.isArray(v))
    return v.map((x) => canonicalValue(model, rt["element"] as SType, x));
  if (name === "Record" && typeof v === "object" && !Array.isArray(v)) {
    const attrs = (rt["attributes"] ?? {}) as Record<string, SType>;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      // Own attributes only: `__proto__` or `constructor` is an attribute name like any other.
      Object.defineProperty(out, k, {
        value: canonicalValue(model, ownType(attrs, k), x),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  if (
    (name === "Entity" || model.entityTypes.has(name)) &&
    typeof v === "object" &&
    !Array.isArray(v)
  ) {
    const o = v as Record<string, unknown>;
    if ("__entity" in o) return v;
    if (typeof o["type"] === "string" && typeof o["id"] === "string")
      return { __entity: { type: o["type"], id: o["id"] } };
  }
  return v;
}

/** The declared type of attribute `k`: an own entry only (`constructor` is not Object's). */
function ownType(attrs: Record<string, SType>, k: string): SType | undefined {
  return Object.hasOwn(attrs, k) ? attrs[k] : undefined;
}

/** Sets `o[k]` as an own property: assigning `__proto__` would replace o's prototype instead. */
function setOwn(o: Record<string, unknown>, k: string, value: unknown): void {
  Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });
}

function uidOf(u: unknown): EntityUid {
  const o = u as Record<string, unknown>;
  const e = (o && typeof o === "object" && "__entity" in o ? o["__entity"] : o) as Record<
    string,
    unknown
  >;
  if (!e || typeof e["type"] !== "string" || typeof e["id"] !== "string")
    throw new ZtError("ZT_POLICY_INVALID", `invalid entity uid: ${JSON.stringify(u)}`);
  return { type: e["type"], id: e["id"] };
}

/** Entities from Cedar JSON, canonicalised with the schema (when given), plus the schema's actions. */
export function canonicalEntities(raw: unknown, model: SchemaModel | undefined): CedarEntity[] {
  if (!Array.isArray(raw)) throw new ZtError("ZT_POLICY_INVALID", "entities: expected an array");
  const out = new Map<string, CedarEntity>();
  for (const item of raw as Record<string, unknown>[]) {
    const uid = uidOf(item["uid"]);
    const et = model?.entityTypes.get(uid.type);
    const attrs: Record<string, unknown> = {};
    for (const [k, v] of Object.entries((item["attrs"] ?? {}) as Record<string, unknown>)) {
      const at = et?.attrs
        ? ownType((et.attrs["attributes"] ?? {}) as Record<string, SType>, k)
        : undefined;
      setOwn(attrs, k, model ? canonicalValue(model, at, v) : v);
    }
    const entity: CedarEntity = {
      uid,
      attrs: attrs as CedarEntity["attrs"],
      parents: ((item["parents"] ?? []) as unknown[]).map(uidOf),
    };
    if (item["tags"]) {
      const tags: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(item["tags"] as Record<string, unknown>))
        setOwn(tags, k, model && et?.tags ? canonicalValue(model, et.tags, v) : v);
      entity.tags = tags as NonNullable<CedarEntity["tags"]>;
    }
    out.set(`${uid.type}\u0000${uid.id}`, entity);
  }
  if (model) {
    for (const [key, a] of model.actions) {
      const existing = out.get(key);
      out.set(key, { uid: a.uid, attrs: existing?.attrs ?? {}, parents: a.parents });
    }
  }
  return [...out.values()];
}

/** A request context canonicalised with the action's context type from the schema. */
export function canonicalContext(
  model: SchemaModel | undefined,
  action: EntityUid,
  context: Record<string, unknown>,
): Record<string, unknown> {
  const a = model?.actions.get(`${action.type}\u0000${action.id}`);
  if (!model || !a?.context) return context;
  return canonicalValue(model, a.context, context) as Record<string, unknown>;
}

/**
 * The schema's action entities, with their action groups as parents. An entity store fed
 * from zt's tables holds no actions, yet `action in Action::"write"` must see the
 * hierarchy the schema declares (Cedar adds these entities when it parses entities with a
 * schema; `zt policy test` does too): without them such a scope never matched, and a
 * `forbid` on an action group validated but never applied.
 */
export function schemaActionEntities(schema: string | object): CedarEntity[] {
  const out: CedarEntity[] = [];
  for (const a of schemaModel(schema).actions.values())
    out.push({ uid: a.uid, attrs: {}, parents: a.parents });
  return out;
}

/**
 * Refuses, as `ZT_POLICY_ENTITY_INVALID` (exit 65) prefixed with `where`, a context whose
 * given attributes do not fit the schema (see contextTypeProblem). Without this a policy
 * test with `source_ip: "not-an-ip"` evaluated to a policy error, which is a deny: a test
 * expecting `deny` passed whatever the policies said.
 */
export function assertContextTypes(
  model: SchemaModel | undefined,
  schema: string | object | undefined,
  action: EntityUid,
  context: Record<string, unknown>,
  where: string,
): void {
  if (!model || schema === undefined) return;
  const problem = contextTypeProblem(model, schema, action, context);
  if (problem !== undefined) throw new ZtError("ZT_POLICY_ENTITY_INVALID", `${where}: ${problem}`);
}

/**
 * What is wrong with the attributes a request context *does* give, judged by Cedar
 * against the action's declared context type: a value of the wrong type (`"sixty"` for a
 * Long), an extension literal that does not parse (`source_ip: "not-an-ip"`), or an
 * attribute the schema does not declare (`mfa_age_secs`: a typo). `undefined` when they
 * conform, or when the schema declares no context for the action.
 *
 * Attributes the context leaves out are not a problem here (a policy test or
 * `zt policy explain` may give only what the policies read): Cedar's own check wants a
 * complete context, so each missing required attribute is filled with a placeholder of
 * its declared type for the check only. If the placeholders alone do not pass (a type
 * this filler does not know), no check is made rather than a wrong one.
 *
 * For tools, not for the PEP: `context` is in the canonical (explicit) form.
 */
export function contextTypeProblem(
  model: SchemaModel,
  schema: string | object,
  action: EntityUid,
  context: Record<string, unknown>,
): string | undefined {
  const a = model.actions.get(`${action.type}\u0000${action.id}`);
  if (!a?.context) return undefined;
  const resolve = resolveCache.get(model)!;
  type Call = Parameters<typeof cedar.checkParseContext>[0];
  const check = (ctx: Record<string, unknown>) =>
    cedar.checkParseContext({
      context: ctx as Call["context"],
      schema: schema as NonNullable<Call["schema"]>,
      action,
    });
  const problem = (ctx: Record<string, unknown>): string | undefined => {
    const answer = check(withPlaceholders(resolve, a.context, ctx) as Record<string, unknown>);
    if (answer.type === "success") return undefined;
    return answer.errors.map((e) => e.message.replace(/^while parsing context, /, "")).join("; ");
  };
  const whole = problem(context);
  if (whole === undefined || problem({}) !== undefined) return undefined;
  // Cedar names the attribute for an unknown one or a bad literal, but not for a value of
  // the wrong type ("context `{…}` is not valid"): find the attribute by checking each alone.
  const attrs = (resolve(a.context)?.["attributes"] ?? {}) as Record<string, SType>;
  for (const k of Object.keys(context)) {
    const alone = problem({ [k]: context[k] });
    if (alone === undefined) continue;
    const name = JSON.stringify(k);
    if (!/ is not valid for /.test(alone))
      return alone.includes(`\`${k}\``) ? alone : `attribute ${name}: ${alone}`;
    const declared = Object.hasOwn(attrs, k) ? attrs[k] : undefined;
    const type = declared ? typeLabel(resolve, declared) : "its declared type";
    let shown = JSON.stringify(context[k]) ?? String(context[k]);
    if (shown.length > 60) shown = `${shown.slice(0, 57)}...`;
    return `attribute ${name}: ${shown} is not a ${type}`;
  }
  return whole;
}

/** A declared type as a reader would write it: `Long`, `Set<String>`, `ipaddr`. */
function typeLabel(resolve: Resolver, t: SType): string {
  const rt = resolve(t) ?? t;
  const name = typeName(rt);
  return name === "Set" ? `Set<${typeLabel(resolve, rt["element"] as SType)}>` : name;
}

type Resolver = (t: SType | undefined) => SType | undefined;

/** `v` (a record, or nothing) with every required attribute it lacks set to a placeholder. */
function withPlaceholders(resolve: Resolver, t: SType | undefined, v: unknown): unknown {
  const rt = resolve(t);
  if (!rt || typeName(rt) !== "Record") return v;
  if (v !== undefined && (typeof v !== "object" || v === null || Array.isArray(v))) return v;
  const given = (v ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(given)) setOwn(out, k, given[k]);
  const attrs = (rt["attributes"] ?? {}) as Record<string, SType>;
  for (const k of Object.keys(attrs)) {
    const at = attrs[k]!;
    if (Object.hasOwn(given, k)) setOwn(out, k, withPlaceholders(resolve, at, given[k]));
    else if (at["required"] !== false) setOwn(out, k, placeholder(resolve, at));
  }
  return out;
}

function placeholder(resolve: Resolver, t: SType): unknown {
  const rt = resolve(t) ?? t;
  const name = typeName(rt);
  switch (name) {
    case "Long":
      return 0;
    case "String":
      return "";
    case "Bool":
    case "Boolean":
      return false;
    case "Set":
      return [];
    case "Record":
      return withPlaceholders(resolve, rt, {});
    case "ipaddr":
      return { __extn: { fn: "ip", arg: "0.0.0.0" } };
    case "decimal":
      return { __extn: { fn: "decimal", arg: "0.0" } };
    case "datetime":
      return { __extn: { fn: "datetime", arg: "1970-01-01" } };
    case "duration":
      return { __extn: { fn: "duration", arg: "0ms" } };
    default:
      return { __entity: { type: name, id: "" } };
  }
}
