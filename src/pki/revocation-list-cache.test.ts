/**
 * RevocationListCache, the cache behind the KRL and every CRL: one build for concurrent
 * callers, a build that started before an invalidation neither shared with later callers
 * nor cached, a refresh time from the injected clock, a failed build never cached.
 * Builds are held open by the test (deferred promises), so each interleaving is exact.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../core/clock.js";
import {
  REVOCATION_LIST_MAX_AGE_MS,
  RevocationListCache,
  type BuiltList,
} from "./revocation-list-cache.js";

const T0 = Date.UTC(2026, 0, 1);

/** A cache whose builds the test finishes by hand; `starts` counts builds begun. */
function harness(refreshInMs = 1000) {
  const clock = new ManualClock(T0);
  const pending: {
    nowMs: number;
    resolve: (v: BuiltList<string>) => void;
    reject: (e: Error) => void;
  }[] = [];
  let counted = 0;
  const cache = new RevocationListCache<string>({
    clock,
    onBuild: () => counted++,
    build: (nowMs) =>
      new Promise((resolve, reject) => {
        pending.push({ nowMs, resolve, reject });
      }),
  });
  /** Finishes build `i` with `value`, valid for `refreshInMs` from its start. */
  const finish = async (i: number, value: string) => {
    const p = pending[i]!;
    p.resolve({ value, refreshAtMs: p.nowMs + refreshInMs });
    await new Promise((r) => setImmediate(r));
  };
  return { clock, cache, pending, finish, counted: () => counted };
}

describe("RevocationListCache", () => {
  it("serves a build a minute at most, however long its own refresh time", async () => {
    const h = harness(24 * 3600_000);
    const first = h.cache.get();
    await h.finish(0, "v1");
    expect(await first).toBe("v1");
    h.clock.advance(REVOCATION_LIST_MAX_AGE_MS - 1);
    expect(await h.cache.get()).toBe("v1");
    expect(h.pending).toHaveLength(1);
    h.clock.advance(1);
    const second = h.cache.get();
    expect(h.pending).toHaveLength(2);
    await h.finish(1, "v2");
    expect(await second).toBe("v2");
  });

  it("gives concurrent callers one build, then serves it from memory", async () => {
    const h = harness();
    const calls = Array.from({ length: 50 }, () => h.cache.get());
    expect(h.pending).toHaveLength(1);
    await h.finish(0, "v1");
    expect(await Promise.all(calls)).toEqual(Array(50).fill("v1"));
    expect(await h.cache.get()).toBe("v1");
    expect(h.pending).toHaveLength(1);
    expect(h.counted()).toBe(1);
  });

  it("stops a build that started before invalidate() from being shared, served or cached", async () => {
    const h = harness();
    const before = h.cache.get(); // reads the store before the revocation
    expect(h.pending).toHaveLength(1);
    h.cache.invalidate(); // the revocation has committed
    const after = h.cache.get();
    expect(h.pending).toHaveLength(2); // not shared with the stale build
    await h.finish(0, "stale");
    // The stale build's caller builds again: it joins the build of the new generation.
    expect(h.pending).toHaveLength(2);
    await h.finish(1, "fresh");
    expect(await after).toBe("fresh");
    expect(await before).toBe("fresh");
    expect(await h.cache.get()).toBe("fresh");
    expect(h.pending).toHaveLength(2);
  });

  it("does not cache a build that finishes after an invalidation made while it ran", async () => {
    const h = harness();
    const first = h.cache.get();
    await h.finish(0, "v1");
    expect(await first).toBe("v1");
    h.cache.invalidate();
    const second = h.cache.get();
    expect(h.pending).toHaveLength(2);
    h.cache.invalidate();
    await h.finish(1, "read-before-second-revocation");
    expect(h.pending).toHaveLength(3);
    await h.finish(2, "v3");
    expect(await second).toBe("v3");
    expect(await h.cache.get()).toBe("v3");
    expect(h.pending).toHaveLength(3);
  });

  it("answers uncached after three builds overtaken by invalidations, and builds again next time", async () => {
    const h = harness();
    const call = h.cache.get();
    for (let i = 0; i < 3; i++) {
      h.cache.invalidate();
      await h.finish(i, `v${i}`);
    }
    expect(await call).toBe("v2");
    const next = h.cache.get();
    expect(h.pending).toHaveLength(4);
    await h.finish(3, "v3");
    expect(await next).toBe("v3");
  });

  it("builds again once the clock reaches the refresh time, not before", async () => {
    const h = harness(1000);
    const first = h.cache.get();
    await h.finish(0, "v1");
    await first;
    h.clock.advance(999);
    expect(await h.cache.get()).toBe("v1");
    expect(h.pending).toHaveLength(1);
    h.clock.advance(1);
    const refreshed = h.cache.get();
    expect(h.pending).toHaveLength(2);
    await h.finish(1, "v2");
    expect(await refreshed).toBe("v2");
  });

  it("never caches a failed build: its callers get the error, the next call builds again", async () => {
    const h = harness();
    const calls = [h.cache.get(), h.cache.get()];
    h.pending[0]!.reject(new Error("store unreachable"));
    for (const c of calls) await expect(c).rejects.toThrow("store unreachable");
    const again = h.cache.get();
    expect(h.pending).toHaveLength(2);
    await h.finish(1, "v1");
    expect(await again).toBe("v1");
  });
});
