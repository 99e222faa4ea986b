import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { timeOrderedId } from "./ids.js";

describe("timeOrderedId", () => {
  it("sorts as text in the order of its timestamps (what keeps audit index inserts at the right edge)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 47 }),
        fc.integer({ min: 0, max: 2 ** 47 }),
        (a, b) => {
          const ia = timeOrderedId("evt", a);
          const ib = timeOrderedId("evt", b);
          if (a < b) expect(ia < ib).toBe(true);
          if (a > b) expect(ia > ib).toBe(true);
        },
      ),
    );
  });

  it("is unguessable and distinct within one millisecond: 128 random bits per id", () => {
    const ids = new Set<string>();
    for (let i = 0; i < 5000; i++) ids.add(timeOrderedId("dec", 1_767_225_600_000));
    expect(ids.size).toBe(5000);
    for (const id of ids) expect(id).toMatch(/^dec_[A-Za-z0-9_-]{8}[A-Za-z0-9_-]{22}$/);
  });
});
