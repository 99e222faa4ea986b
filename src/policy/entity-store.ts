import { ZtError } from "../core/errors.js";
import type { CedarEntity, CedarValue, EntityUid, EntityView } from "./types.js";

/** A stable map key for an entity uid. */
export function uidKey(uid: EntityUid): string {
  return `${uid.type}\u0000${uid.id}`;
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
  private readonly entities = new Map<string, CedarEntity>();
  /** key → keys of all strict ancestors. */
  private readonly ancestors = new Map<string, Set<string>>();
  /** key → keys of direct children (entities listing it as a parent). */
  private readonly children = new Map<string, Set<string>>();

  constructor(entities: Iterable<CedarEntity> = []) {
    for (const e of entities) {
      const old = this.entities.get(uidKey(e.uid));
      if (old) for (const p of old.parents) this.children.get(uidKey(p))?.delete(uidKey(e.uid));
      this.insertRaw(e);
    }
    for (const key of this.entities.keys()) {
      const anc = this.computeAncestors(key);
      if (anc.has(key)) throw cycleError(key);
      this.ancestors.set(key, anc);
    }
  }

  get size(): number {
    return this.entities.size;
  }

  get(uid: EntityUid): CedarEntity | undefined {
    return this.entities.get(uidKey(uid));
  }

  /** Lookup by `uidKey` (hot path: no key building). */
  getByKey(key: string): CedarEntity | undefined {
    return this.entities.get(key);
  }

  /** Keys of every strict ancestor of the entity with this key. */
  ancestorKeysByKey(key: string): ReadonlySet<string> {
    return this.ancestors.get(key) ?? EMPTY;
  }

  has(uid: EntityUid): boolean {
    return this.entities.has(uidKey(uid));
  }

  isIn(child: EntityUid, ancestor: EntityUid): boolean {
    if (child.type === ancestor.type && child.id === ancestor.id) return true;
    return this.ancestors.get(uidKey(child))?.has(uidKey(ancestor)) ?? false;
  }

  /** Key-based variant of `isIn` for hot paths that already hold keys. */
  isInKey(childKey: string, ancestorKey: string): boolean {
    if (childKey === ancestorKey) return true;
    return this.ancestors.get(childKey)?.has(ancestorKey) ?? false;
  }

  /** Keys of every strict ancestor of `uid` (empty when unknown). */
  ancestorKeys(uid: EntityUid): ReadonlySet<string> {
    return this.ancestors.get(uidKey(uid)) ?? EMPTY;
  }

  all(): Iterable<CedarEntity> {
    return this.entities.values();
  }

  /** Inserts or replaces an entity; ancestor sets of it and its descendants are updated. */
  upsert(entity: CedarEntity): void {
    const key = uidKey(entity.uid);
    // The store is acyclic, so a new parent closes a cycle iff it is the entity or one of its descendants.
    for (const p of entity.parents) {
      const pk = uidKey(p);
      if (pk === key || this.ancestors.get(pk)?.has(key)) throw cycleError(key);
    }
    const old = this.entities.get(key);
    if (old) for (const p of old.parents) this.children.get(uidKey(p))?.delete(key);
    this.insertRaw(entity);
    const parentsChanged =
      !old ||
      old.parents.length !== entity.parents.length ||
      old.parents.some((p, i) => uidKey(p) !== uidKey(entity.parents[i]!));
    if (parentsChanged || !this.ancestors.has(key)) this.refreshFrom(key);
  }

  /** Removes an entity. Children still list it as a parent (Cedar semantics) but lose its ancestors. */
  remove(uid: EntityUid): boolean {
    const key = uidKey(uid);
    const old = this.entities.get(key);
    if (!old) return false;
    for (const p of old.parents) this.children.get(uidKey(p))?.delete(key);
    const affected = this.descendants(key);
    this.entities.delete(key);
    this.ancestors.delete(key);
    for (const c of affected) this.ancestors.delete(c);
    for (const c of affected) this.ancestors.set(c, this.computeAncestors(c));
    return true;
  }

  private insertRaw(entity: CedarEntity): void {
    const key = uidKey(entity.uid);
    this.entities.set(key, entity);
    for (const p of entity.parents) {
      const pk = uidKey(p);
      let set = this.children.get(pk);
      if (!set) this.children.set(pk, (set = new Set()));
      set.add(key);
    }
  }

  private refreshFrom(key: string): void {
    // Invalidate first, so recomputation only reuses ancestor sets that are still right.
    const affected = [key, ...this.descendants(key)];
    for (const k of affected) this.ancestors.delete(k);
    for (const k of affected) this.ancestors.set(k, this.computeAncestors(k));
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
      const e = this.entities.get(k);
      if (!e) continue;
      for (const p of e.parents) {
        const pk = uidKey(p);
        if (out.has(pk)) continue;
        out.add(pk);
        // Reuse a parent's ancestor set when it is known (known sets are always current).
        const known = this.ancestors.get(pk);
        if (known) for (const a of known) out.add(a);
        else stack.push(pk);
      }
    }
    return out;
  }
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
