import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { configDurationIssue, parseDuration, TIMER_MAX_MS } from "./duration.js";
import { isZtError } from "./errors.js";

function refusal(input: string | number): string {
  try {
    parseDuration(input, "--for");
  } catch (e) {
    expect(isZtError(e) && e.code).toBe("ZT_BAD_REQUEST");
    return (e as Error).message;
  }
  throw new Error(`parseDuration(${JSON.stringify(input)}) was accepted`);
}

describe("parseDuration", () => {
  it("reads units, sums, bare seconds and numbers of seconds", () => {
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("7d")).toBe(604_800_000);
    expect(parseDuration("45")).toBe(45_000);
    expect(parseDuration(1.5)).toBe(1_500);
    expect(parseDuration("36500d")).toBe(36_500 * 86_400_000);
  });

  it("refuses durations past 100 years instead of returning a time no Date can hold (zt ban add --for 99999999999999999h stored an unprintable ban)", () => {
    for (const huge of [
      "99999999999999999h",
      "36501d",
      "1".padEnd(400, "0") + "s", // Number() of it is Infinity
      "1".padEnd(400, "0"),
      "3153600000001ms",
      "36500d1ms",
      1e308,
      3_153_600_001, // seconds
    ]) {
      expect(refusal(huge)).toMatch(/^--for: expected a duration of at most 36500d/);
    }
  });

  it("every accepted duration, added to now, is a date", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.bigInt({ min: 0n, max: 10n ** 20n }),
            fc.constantFrom("ms", "s", "m", "h", "d"),
          ),
          {
            minLength: 1,
            maxLength: 4,
          },
        ),
        (parts) => {
          const text = parts.map(([n, u]) => `${n}${u}`).join("");
          let ms: number;
          try {
            ms = parseDuration(text);
          } catch {
            return;
          }
          expect(Number.isSafeInteger(ms)).toBe(true);
          expect(() => new Date(Date.now() + ms).toISOString()).not.toThrow();
        },
      ),
    );
  });
});

describe("configDurationIssue", () => {
  it("accepts exactly the durations within the bounds asked for (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 * TIMER_MAX_MS }), (ms) => {
        const issue = configDurationIssue(`${ms}ms`, { positive: true, maxMs: TIMER_MAX_MS });
        expect(issue === undefined).toBe(ms > 0 && ms <= TIMER_MAX_MS);
      }),
    );
  });

  it("says which bound a refused value breaks", () => {
    expect(configDurationIssue(0, { positive: true })).toMatch(/more than 0, got 0/);
    expect(configDurationIssue("0s")).toBeUndefined();
    expect(configDurationIssue("25d", { maxMs: TIMER_MAX_MS })).toMatch(
      /at most 2147483647ms .*got "25d"/,
    );
    expect(configDurationIssue("soon")).toMatch(/expected a duration like 30s/);
  });
});
