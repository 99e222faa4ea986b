import { ZtError } from "../core/errors.js";
import type { CedarEntity, CedarValue, EntityUid, EntityView } from "./types.js";

/** A stable map key for an entity uid. */
export function uidKey(uid: EntityUid): string {
  return `${uid.type}\u0000${uid.id}`;
}

/** One string object per uid key that ancestor sets or compiled policies hold. */
const interned = new Map<string, string>();

/**
 * The shared string object for a uid key. Ancestor sets and compiled policy scopes hold
 * these, so an `in` check finds its key by pointer (no character comparison), and the few
 * thousand group keys every user's set refers to stay in the CPU cache instead of one
 * copy per user. Grows with the distinct uids stored or named by policies.
 */
export function internedKey(key: string): string {
  const s = interned.get(key);
  if (s !== undefined) return s;
  interned.set(key, key);
  return key;
}

/**
 * Entities in Cedar's JSON format, with each entity's transitive ancestor set precomputed
 * so `isIn` is a set lookup. Updates are incremental: changing an entity's parents
 * recomputes only that entity and its descendants.
 *
 * Parents that are not (yet) in the store still count as ancestors, as in Cedar. Like
 * Cedar, the hierarchy must be acyclic: an update that would create a cycle is refused
 * (`ZT_POLICY_ENTITY_INVALID`) and leaves the store unchanged.
 */
export class EntityStore implements EntityView {
  /**
   * key → the entity, its strict ancestors and what engines derived from it, in one record
   * so a decision finds everything about an entity with one lookup.
   */
  private readonly entries = new Map<string, StoreEntry>();
  /**
   * The same entries by type, then id: the hot path looks a request's uid up without
   * joining it into a key (a request's strings are new; their hashes are computed once).
   */
  private readonly byType = new Map<string, Map<string, StoreEntry>>();
  /** key → keys of direct children (entities listing it as a parent). */
  private readonly children = new Map<string, Set<string>>();
  private hierarchyVersion = 0;

  constructor(entities: Iterable<CedarEntity> = []) {
    for (const e of entities) {
      const old = this.entries.get(uidKey(e.uid));
      if (old)
        for (const p of old.entity.parents) this.children.get(uidKey(p))?.delete(uidKey(e.uid));
      this.insertRaw(e);
    }
    for (const [key, entry] of this.entries) {
      const anc = this.computeAncestors(key);
      if (anc.has(key)) throw cycleError(key);
      assignAncestors(entry, key, anc);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Changes whenever any ancestor set may have changed (an entity added, removed, or given
   * other parents). Engines key caches derived from the hierarchy on it.
   */
  get version(): number {
    return this.hierarchyVersion;
  }

  get(uid: EntityUid): CedarEntity | undefined {
    return this.entries.get(uidKey(uid))?.entity;
  }

  /** Lookup by `uidKey` (hot path: no key building). */
  getByKey(key: string): CedarEntity | undefined {
    return this.entries.get(key)?.entity;
  }

  /**
   * The store's record for an entity (hot path: entity, ancestors and the engine's derived
   * data in one lookup). Treat it as read-only except for `derived`.
   */
  entryByKey(key: string): StoreEntry | undefined {
    return this.entries.get(key);
  }

  /** The store's record for the entity `type::id` (see `entryByKey`). */
  entryOf(type: string, id: string): StoreEntry | undefined {
    return this.byType.get(type)?.get(id);
  }

  /** Keys of every strict ancestor of the entity with this key. */
  ancestorKeysByKey(key: string): ReadonlySet<string> {
    return this.entries.get(key)?.ancestors ?? EMPTY;
  }

  has(uid: EntityUid): boolean {
    return this.entries.has(uidKey(uid));
  }

  isIn(child: EntityUid, ancestor: EntityUid): boolean {
    if (child.type === ancestor.type && child.id === ancestor.id) return true;
    return this.entries.get(uidKey(child))?.ancestors?.has(uidKey(ancestor)) ?? false;
  }

  /** Key-based variant of `isIn` for hot paths that already hold keys. */
  isInKey(childKey: string, ancestorKey: string): boolean {
    if (childKey === ancestorKey) return true;
    return this.entries.get(childKey)?.ancestors?.has(ancestorKey) ?? false;
  }

  /** Keys of every strict ancestor of `uid` (empty when unknown). */
  ancestorKeys(uid: EntityUid): ReadonlySet<string> {
    return this.entries.get(uidKey(uid))?.ancestors ?? EMPTY;
  }

  *all(): Iterable<CedarEntity> {
    for (const e of this.entries.values()) yield e.entity;
  }

  /** Inserts or replaces an entity; ancestor sets of it and its descendants are updated. */
  upsert(entity: CedarEntity): void {
    const key = uidKey(entity.uid);
    // The store is acyclic, so a new parent closes a cycle iff it is the entity or one of its descendants.
    for (const p of entity.parents) {
      const pk = uidKey(p);
      if (pk === key || this.entries.get(pk)?.ancestors?.has(key)) throw cycleError(key);
    }
    const oldEntry = this.entries.get(key);
    const old = oldEntry?.entity;
    if (old) for (const p of old.parents) this.children.get(uidKey(p))?.delete(key);
    const entry = this.insertRaw(entity);
    if (oldEntry !== undefined) {
      entry.ancestors = oldEntry.ancestors;
      entry.filterLo = oldEntry.filterLo;
      entry.filterHi = oldEntry.filterHi;
    }
    const parentsChanged =
      !old ||
      old.parents.length !== entity.parents.length ||
      old.parents.some((p, i) => uidKey(p) !== uidKey(entity.parents[i]!));
    if (parentsChanged || entry.ancestors === undefined) {
      this.refreshFrom(key);
      this.hierarchyVersion++;
    }
  }

  /** Removes an entity. Children still list it as a parent (Cedar semantics) but lose its ancestors. */
  remove(uid: EntityUid): boolean {
    const key = uidKey(uid);
    const old = this.entries.get(key);
    if (!old) return false;
    for (const p of old.entity.parents) this.children.get(uidKey(p))?.delete(key);
    const affected = this.descendants(key);
    this.entries.delete(key);
    this.byType.get(uid.type)?.delete(uid.id);
    for (const c of affected) this.setAncestors(c, undefined);
    for (const c of affected) this.setAncestors(c, this.computeAncestors(c));
    this.hierarchyVersion++;
    return true;
  }

  private setAncestors(key: string, anc: Set<string> | undefined): void {
    const e = this.entries.get(key);
    if (e) assignAncestors(e, key, anc);
  }

  private insertRaw(entity: CedarEntity): StoreEntry {
    const key = uidKey(entity.uid);
    const plainKeys = entity.tags === undefined ? primitiveAttrKeys(entity.attrs) : undefined;
    const entry: StoreEntry = {
      entity,
      ancestors: undefined,
      filterLo: FILTER_ALL,
      filterHi: FILTER_ALL,
      plainAttrs: plainKeys === undefined ? undefined : entity.attrs,
      plainKeys,
      derived: undefined,
    };
    this.entries.set(key, entry);
    let ids = this.byType.get(entity.uid.type);
    if (!ids) this.byType.set(entity.uid.type, (ids = new Map()));
    ids.set(entity.uid.id, entry);
    for (const p of entity.parents) {
      const pk = uidKey(p);
      let set = this.children.get(pk);
      if (!set) this.children.set(pk, (set = new Set()));
      set.add(key);
    }
    return entry;
  }

  private refreshFrom(key: string): void {
    // Invalidate first, so recomputation only reuses ancestor sets that are still right.
    const affected = [key, ...this.descendants(key)];
    for (const k of affected) this.setAncestors(k, undefined);
    for (const k of affected) this.setAncestors(k, this.computeAncestors(k));
  }

  /** Strict descendants of `key` (breadth first; cycle safe). */
  private descendants(key: string): string[] {
    const seen = new Set<string>([key]);
    const out: string[] = [];
    const queue = [key];
    while (queue.length > 0) {
      const k = queue.shift()!;
      for (const c of this.children.get(k) ?? EMPTY) {
        if (seen.has(c)) continue;
        seen.add(c);
        out.push(c);
        queue.push(c);
      }
    }
    return out;
  }

  private computeAncestors(key: string): Set<string> {
    const out = new Set<string>();
    const stack = [key];
    while (stack.length > 0) {
      const k = stack.pop()!;
      const e = this.entries.get(k);
      if (!e) continue;
      for (const p of e.entity.parents) {
        const pk = internedKey(uidKey(p));
        if (out.has(pk)) continue;
        out.add(pk);
        // Reuse a parent's ancestor set when it is known (known sets are always current).
        const known = this.entries.get(pk)?.ancestors;
        if (known) for (const a of known) out.add(a);
        else stack.push(pk);
      }
    }
    return out;
  }
}

/** One entity in an `EntityStore`. */
export interface StoreEntry {
  readonly entity: CedarEntity;
  /** Keys of all strict ancestors (undefined only while the store is updating). */
  ancestors: ReadonlySet<string> | undefined;
  /**
   * A filter over the entity's own key and `ancestors` (two 30-bit words; see
   * `ancestorFilterBit`): a key whose bit is clear is certainly neither, so most `==` and
   * `in` checks that fail touch neither the set nor the other uid. All bits set while
   * `ancestors` is unknown.
   */
  filterLo: number;
  filterHi: number;
  /**
   * The entity's attributes object when the entity has no tags and every attribute is a
   * string, a boolean or a safe integer (values Cedar uses as they are), with its own
   * enumerable keys (`plainKeys`, one shared array per attribute-name list). Lets an engine
   * read such an entity without scanning its values: for most principals (users), the
   * values are strings that a decision never reads.
   */
  readonly plainAttrs: Record<string, CedarValue> | undefined;
  readonly plainKeys: readonly string[] | undefined;
  /**
   * What an engine derived from this entity (the compiled engine: converted attributes and
   * tags, on first use — not on insert: converting 100k entities up front makes V8
   * pretenure the converter's allocation sites, and every request's context conversion
   * then allocates in old space, measured 3× slower). A replaced entity gets a new entry,
   * so this never outlives the entity it came from.
   */
  derived: unknown;
}

/** All filter bits set: every key may be an ancestor (the set decides). */
const FILTER_ALL = 0x3fffffff;

/**
 * The bit of a uid key in an entry's ancestor filter: 0–59 (FNV-1a of the key). Bits 0–29
 * are in `filterLo`, 30–59 in `filterHi` (small integers, stored unboxed).
 */
export function ancestorFilterBit(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % 60;
}

/**
 * Whether the uid key with bit `ancestorFilterBit(key)` may be the entry's own or one of
 * its ancestors (false: certainly neither).
 */
export function mayBeAncestor(entry: StoreEntry, bit: number): boolean {
  return bit < 30
    ? (entry.filterLo & (1 << bit)) !== 0
    : (entry.filterHi & (1 << (bit - 30))) !== 0;
}

function assignAncestors(
  entry: StoreEntry,
  key: string,
  anc: ReadonlySet<string> | undefined,
): void {
  entry.ancestors = anc;
  if (anc === undefined) {
    entry.filterLo = FILTER_ALL;
    entry.filterHi = FILTER_ALL;
    return;
  }
  const own = ancestorFilterBit(key);
  let lo = own < 30 ? 1 << own : 0;
  let hi = own < 30 ? 0 : 1 << (own - 30);
  for (const k of anc) {
    const bit = ancestorFilterBit(k);
    if (bit < 30) lo |= 1 << bit;
    else hi |= 1 << (bit - 30);
  }
  entry.filterLo = lo;
  entry.filterHi = hi;
}

/** Shared `plainKeys` arrays by their names (as JSON text: any name may hold any character); bounded. */
const keyLists = new Map<string, readonly string[]>();
const KEY_LISTS_MAX = 10_000;

/**
 * The own enumerable keys of `attrs` when every value is a string, a boolean or a safe
 * integer (undefined otherwise), as an array shared by every entity with the same names.
 */
function primitiveAttrKeys(
  attrs: Record<string, CedarValue> | undefined,
): readonly string[] | undefined {
  if (attrs === null || typeof attrs !== "object" || Array.isArray(attrs)) return undefined;
  const keys = Object.keys(attrs);
  for (const k of keys) {
    const v = attrs[k];
    if (typeof v === "string" || typeof v === "boolean") continue;
    if (typeof v === "number" && Number.isSafeInteger(v)) continue;
    return undefined;
  }
  const name = JSON.stringify(keys);
  const shared = keyLists.get(name);
  if (shared !== undefined) return shared;
  if (keyLists.size < KEY_LISTS_MAX) keyLists.set(name, keys);
  return keys;
}

function cycleError(key: string): ZtError {
  const [type, id] = key.split("\u0000");
  return new ZtError(
    "ZT_POLICY_ENTITY_INVALID",
    `entity hierarchy has a cycle through ${type ?? ""}::${JSON.stringify(id ?? "")}`,
  );
}

const EMPTY: ReadonlySet<string> = new Set();

/** Every entity uid referenced from a Cedar value (`__entity` escapes), depth first. */
export function collectEntityRefs(value: CedarValue, out: EntityUid[]): void {
  if (value === null || typeof value !== "object") return;
  if (Array.isArray(value)) {
    for (const v of value) collectEntityRefs(v, out);
    return;
  }
  const rec = value as Record<string, CedarValue>;
  const ent = rec["__entity"] as { type?: unknown; id?: unknown } | undefined;
  if (ent && typeof ent.type === "string" && typeof ent.id === "string") {
    out.push({ type: ent.type, id: ent.id });
    return;
  }
  if ("__extn" in rec) return;
  for (const v of Object.values(rec)) collectEntityRefs(v, out);
}
