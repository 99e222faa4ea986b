import { afterEach, describe, expect, it, vi } from "vitest";
import { sleepUntil, systemClock } from "./clock.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("sleepUntil", () => {
  it("waits out a deadline past a Node timer's range instead of firing at once (zt seg apply --confirm-within 30d rolled back immediately)", async () => {
    vi.useFakeTimers();
    const day = 86_400_000;
    let done = false;
    const p = sleepUntil(Date.now() + 30 * day, systemClock).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(25 * day);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(5 * day);
    await p;
    expect(done).toBe(true);
  });

  it("returns at once for a deadline already past", async () => {
    await sleepUntil(0, systemClock);
    await sleepUntil(Number.NaN, systemClock);
  });
});
