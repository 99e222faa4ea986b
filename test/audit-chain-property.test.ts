import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { canonicalRecord, chainHash, GENESIS_HASH } from "../src/audit/audit-chain.js";
import { ChainVerifier, rawToRow, type RawRow } from "../src/audit/chain-verifier.js";
import { redactedJson, redactedJsonReference } from "../src/audit/redact.js";

const text = fc.string({ unit: "grapheme", maxLength: 40 });
const nullable = fc.option(text, { nil: null });
const fields = fc.tuple(
  fc.string({ minLength: 1, maxLength: 20 }),
  fc.integer({ min: 0, max: 2 ** 52 }),
  text,
  fc.constantFrom("allow", "deny", "success", "failure", "info", "step-up"),
  nullable,
  nullable,
  nullable,
  nullable,
  nullable,
  nullable,
  nullable,
  fc.json(),
);

/** Builds a valid chain of raw rows from generated fields. */
type Fields = typeof fields extends fc.Arbitrary<infer T> ? T : never;

function chainOf(list: Fields[]): RawRow[] {
  let prev = GENESIS_HASH;
  return list.map((f, i) => {
    const base = [i + 1, ...f] as unknown as RawRow;
    const row = rawToRow([...base.slice(0, 13), prev, null] as RawRow);
    const hash = chainHash(prev, row);
    const raw = [...base.slice(0, 13), prev, hash] as RawRow;
    prev = hash;
    return raw;
  });
}

describe("verify fast path (raw rows) is equivalent to the reference path", () => {
  it("the JSON of the first 13 raw columns is the canonical serialisation", () => {
    fc.assert(
      fc.property(fields, (f) => {
        const raw = [7, ...f, null, null] as unknown as RawRow;
        expect(JSON.stringify(raw.slice(0, 13))).toBe(canonicalRecord(rawToRow(raw)));
      }),
    );
  });

  it("pushRaw and push agree on valid and tampered chains", () => {
    fc.assert(
      fc.property(
        fc.array(fields, { minLength: 1, maxLength: 12 }),
        fc.nat(),
        fc.constantFrom("none", "alter", "drop", "swap"),
        (list, at, how) => {
          const rows = chainOf(list);
          const i = at % rows.length;
          if (how === "alter")
            rows[i] = [...rows[i]!.slice(0, 12), '{"x":1}', rows[i]![13], rows[i]![14]] as RawRow;
          if (how === "drop") rows.splice(i, 1);
          if (how === "swap" && i + 1 < rows.length) {
            const a = rows[i]!;
            const b = rows[i + 1]!;
            rows[i] = [a[0], ...b.slice(1)] as RawRow;
            rows[i + 1] = [b[0], ...a.slice(1)] as RawRow;
          }
          const fast = new ChainVerifier();
          const ref = new ChainVerifier();
          const lookup = (h: string) => {
            const r = rows.find((x) => x[14] === h);
            return r ? r[0] : undefined;
          };
          let pf, pr;
          for (const r of rows) {
            pf ??= fast.pushRaw(r, lookup);
            pr ??= ref.push(rawToRow(r), lookup);
            if (pf || pr) break;
          }
          expect(pf).toEqual(pr);
          expect(fast.checked).toBe(ref.checked);
          expect(fast.headHash).toBe(ref.headHash);
        },
      ),
    );
  });
});

describe("redaction fast path equals the replacer walk", () => {
  const key = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.constantFrom(
      "password",
      "Password",
      "TOTP_CODE",
      "totp-code",
      "access_token",
      "cookie",
      "code",
      "pass-word",
      "tokens",
      "api-key",
    ),
  );
  const value = fc.letrec((tie) => ({
    v: fc.oneof(
      { depthSize: "small" },
      fc.string({ maxLength: 10 }),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie("v"), { maxLength: 3 }),
      fc.dictionary(key, tie("v"), { maxKeys: 4 }),
    ),
  })).v;
  it("for arbitrary nested data with sensitive and look-alike keys", () => {
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 6 }), (data) => {
        expect(redactedJson(data)).toBe(redactedJsonReference(data));
      }),
      { numRuns: 500 },
    );
  });
});
