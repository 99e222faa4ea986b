import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { storeFreshness, type StoreFreshness } from "./staleness.js";

const opts = { degradedAfterMs: 5_000, maxStalenessMs: 300_000 };

describe("storeFreshness", () => {
  it.each([
    [0, "fresh"],
    [5_000, "fresh"],
    [5_001, "degraded"],
    [299_999, "degraded"],
    [300_000, "stale"],
    [10 * 3_600_000, "stale"],
  ] as const)("%i ms since last contact → %s", (ms, want) => {
    expect(storeFreshness(ms, opts)).toBe(want);
  });

  it("fails closed on a nonsensical age", () => {
    for (const ms of [NaN, -1, Infinity]) expect(storeFreshness(ms, opts)).toBe("stale");
  });

  it("max_staleness below the degraded threshold still fails closed at max_staleness", () => {
    expect(storeFreshness(999, { degradedAfterMs: 5_000, maxStalenessMs: 1_000 })).toBe("fresh");
    expect(storeFreshness(1_000, { degradedAfterMs: 5_000, maxStalenessMs: 1_000 })).toBe("stale");
  });

  it("never gets fresher as the silence grows (monotonic), and is stale exactly from max_staleness", () => {
    const rank: Record<StoreFreshness, number> = { fresh: 0, degraded: 1, stale: 2 };
    fc.assert(
      fc.property(
        fc.nat(1e9),
        fc.nat(1e9),
        fc.nat(1e7),
        fc.integer({ min: 1, max: 1e7 }),
        (a, b, degradedAfterMs, maxStalenessMs) => {
          const o = { degradedAfterMs, maxStalenessMs };
          const [lo, hi] = a <= b ? [a, b] : [b, a];
          expect(rank[storeFreshness(lo, o)]).toBeLessThanOrEqual(rank[storeFreshness(hi, o)]);
          expect(storeFreshness(hi, o) === "stale").toBe(hi >= maxStalenessMs);
        },
      ),
    );
  });
});
