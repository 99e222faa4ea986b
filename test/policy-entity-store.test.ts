import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ancestorFilterBit, mayBeAncestor } from "../src/policy/entity-store.js";
import { EntityStore, uidKey, type CedarEntity, type EntityUid } from "../src/policy/index.js";

const g = (id: string): EntityUid => ({ type: "Group", id });
const ent = (id: string, parents: string[]): CedarEntity => ({
  uid: g(id),
  attrs: {},
  parents: parents.map(g),
});

/** Reachability by plain graph search: the oracle for the precomputed closure. */
function reachable(list: Map<string, string[]>, from: string, to: string): boolean {
  if (from === to) return true;
  const seen = new Set<string>();
  const stack = [...(list.get(from) ?? [])];
  while (stack.length > 0) {
    const k = stack.pop()!;
    if (k === to) return true;
    if (seen.has(k)) continue;
    seen.add(k);
    stack.push(...(list.get(k) ?? []));
  }
  return false;
}

describe("EntityStore", () => {
  it("answers transitive membership, including through parents not in the store", () => {
    const s = new EntityStore([
      ent("a", ["b"]),
      ent("b", ["c"]),
      ent("c", []),
      ent("x", ["ghost"]),
    ]);
    expect(s.isIn(g("a"), g("c"))).toBe(true);
    expect(s.isIn(g("a"), g("a"))).toBe(true);
    expect(s.isIn(g("c"), g("a"))).toBe(false);
    expect(s.isIn(g("x"), g("ghost"))).toBe(true);
    expect(s.isIn({ type: "User", id: "a" }, g("c"))).toBe(false);
  });

  it("updates incrementally: re-parenting and removal reach descendants", () => {
    const s = new EntityStore([ent("a", ["b"]), ent("b", []), ent("c", [])]);
    expect(s.isIn(g("a"), g("c"))).toBe(false);
    s.upsert(ent("b", ["c"]));
    expect(s.isIn(g("a"), g("c"))).toBe(true);
    s.upsert(ent("c", ["d"]));
    expect(s.isIn(g("a"), g("d"))).toBe(true);
    s.remove(g("c"));
    // b still lists c as a parent (Cedar semantics) but c's own parents are gone.
    expect(s.isIn(g("a"), g("c"))).toBe(true);
    expect(s.isIn(g("a"), g("d"))).toBe(false);
    expect(s.get(g("c"))).toBeUndefined();
  });

  it("refuses cycles, as Cedar does, and stays unchanged", () => {
    expect(() => new EntityStore([ent("a", ["b"]), ent("b", ["a"])])).toThrow(/cycle/);
    expect(() => new EntityStore([ent("a", ["a"])])).toThrow(/cycle/);
    const s = new EntityStore([ent("a", ["b"]), ent("b", ["c"]), ent("c", [])]);
    expect(() => s.upsert(ent("c", ["a"]))).toThrow(
      expect.objectContaining({ code: "ZT_POLICY_ENTITY_INVALID" }),
    );
    expect(s.get(g("c"))!.parents).toEqual([]);
    expect(s.isIn(g("c"), g("a"))).toBe(false);
    expect(s.isIn(g("a"), g("c"))).toBe(true);
  });

  it("matches graph search after any sequence of updates (property)", () => {
    const ids = ["a", "b", "c", "d", "e", "f"];
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("upsert" as const),
        id: fc.constantFrom(...ids),
        parents: fc.uniqueArray(fc.constantFrom(...ids), { maxLength: 3 }),
      }),
      fc.record({ kind: fc.constant("remove" as const), id: fc.constantFrom(...ids) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        const s = new EntityStore();
        const model = new Map<string, string[]>();
        for (const o of ops) {
          if (o.kind === "upsert") {
            const next = new Map(model).set(o.id, o.parents);
            const cyclic = o.parents.some((p) => reachable(next, p, o.id));
            if (cyclic) {
              expect(() => s.upsert(ent(o.id, o.parents))).toThrow(/cycle/);
              continue;
            }
            s.upsert(ent(o.id, o.parents));
            model.set(o.id, o.parents);
          } else {
            s.remove(g(o.id));
            model.delete(o.id);
          }
        }
        for (const x of ids) {
          const entry = s.entryOf("Group", x);
          for (const y of ids) {
            // Only entities present in the store have known parents.
            const expected = x === y || (model.has(x) && reachable(model, x, y));
            expect(s.isIn(g(x), g(y))).toBe(expected);
            // The filter never rules out the entity itself or an ancestor.
            if (entry && expected)
              expect(mayBeAncestor(entry, ancestorFilterBit(uidKey(g(y))))).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it("an entry's filter holds exactly the bits of the entity and its ancestors", () => {
    // Enough groups that every one of the 60 bits is some group's.
    const ids = Array.from({ length: 400 }, (_, i) => `g${i}`);
    const s = new EntityStore([...ids.map((id) => ent(id, [])), ent("member", ["g1", "g2"])]);
    const entry = s.entryOf("Group", "member")!;
    const own = new Set(["member", "g1", "g2"].map((id) => ancestorFilterBit(uidKey(g(id)))));
    const bits = new Set(ids.map((id) => ancestorFilterBit(uidKey(g(id)))));
    expect(bits.size).toBe(60);
    for (const bit of bits) expect(mayBeAncestor(entry, bit)).toBe(own.has(bit));
    // Re-parenting moves the bits with the ancestors.
    s.upsert(ent("member", ["g3"]));
    const moved = s.entryOf("Group", "member")!;
    const now = new Set(["member", "g3"].map((id) => ancestorFilterBit(uidKey(g(id)))));
    for (const bit of bits) expect(mayBeAncestor(moved, bit)).toBe(now.has(bit));
  });

  it("keeps the attribute names of entities whose attributes are all plain values, shared by name list", () => {
    const user = (id: string, attrs: CedarEntity["attrs"], tags?: CedarEntity["tags"]) => ({
      uid: { type: "User", id },
      attrs,
      parents: [],
      ...(tags ? { tags } : {}),
    });
    const s = new EntityStore([
      user("a", { name: "a", admin: false, level: 3 }),
      user("b", { name: "b", admin: true, level: 1 }),
      user("c", { name: "c", manager: { __entity: { type: "User", id: "a" } } }),
      user("d", { name: "d", ratio: 0.5 }),
      user("e", { name: "e" }, { team: "ops" }),
      // Names that would join into the same text as another entity's.
      user("f", { "name\u0000admin": "x" }),
      user("g", { name: "g", admin: false }),
    ]);
    const a = s.entryOf("User", "a")!;
    expect(a.plainKeys).toEqual(["name", "admin", "level"]);
    expect(a.plainAttrs).toBe(a.entity.attrs);
    expect(s.entryOf("User", "b")!.plainKeys).toBe(a.plainKeys);
    // Structured values, non-integers and tags go through the engine's conversion.
    for (const id of ["c", "d", "e"]) expect(s.entryOf("User", id)!.plainKeys).toBeUndefined();
    expect(s.entryOf("User", "f")!.plainKeys).toEqual(["name\u0000admin"]);
    expect(s.entryOf("User", "g")!.plainKeys).toEqual(["name", "admin"]);
  });
});
