import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EntityStore, type CedarEntity, type EntityUid } from "../src/policy/index.js";

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
          for (const y of ids) {
            // Only entities present in the store have known parents.
            const expected = x === y || (model.has(x) && reachable(model, x, y));
            expect(s.isIn(g(x), g(y))).toBe(expected);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
