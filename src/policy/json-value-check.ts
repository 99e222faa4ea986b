import { ZtError } from "../core/errors.js";
import { longFromBigInt } from "./compiled/values.js";

/**
 * Refuses, as `ZT_POLICY_ENTITY_INVALID` naming the attribute, a JSON record holding a
 * value Cedar has no type for: a number with a fraction (`1.5`), one past what a double
 * holds (`1e400` parses as Infinity), an integer outside Cedar's Long (signed 64 bits), or
 * `null`. Nested records and sets are checked too. `where` names the record for the
 * message (`--context`, `--entities: User::"alice" attrs`).
 *
 * Given by hand (`zt policy explain --context`), such a value otherwise surfaced as an
 * internal error from deep inside the evaluator, or was accepted and never looked at.
 *
 * @example
 * assertCedarJsonRecord({ a: 1.5 }, "--context");
 * // ZtError ZT_POLICY_ENTITY_INVALID: --context: attribute "a": 1.5 is not an integer; …
 */
export function assertCedarJsonRecord(record: Record<string, unknown>, where: string): void {
  for (const key of Object.keys(record)) checkValue(record[key], where, JSON.stringify(key));
}

function checkValue(v: unknown, where: string, path: string): void {
  const why = problemOf(v);
  if (why !== undefined)
    throw new ZtError("ZT_POLICY_ENTITY_INVALID", `${where}: attribute ${path}: ${why}`, {
      attribute: path,
    });
  if (Array.isArray(v)) v.forEach((x, i) => checkValue(x, where, `${path}[${i}]`));
  else if (typeof v === "object" && v !== null)
    for (const key of Object.keys(v))
      checkValue((v as Record<string, unknown>)[key], where, `${path}.${JSON.stringify(key)}`);
}

const LONG_RANGE = "Cedar numbers are 64-bit signed integers (Long)";

function problemOf(v: unknown): string | undefined {
  if (v === null) return "null is not a Cedar value; leave the attribute out instead";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return `a number too large for any type (${LONG_RANGE})`;
    if (!Number.isInteger(v))
      return `${v} is not an integer; ${LONG_RANGE} (for a fraction use {"__extn": {"fn": "decimal", "arg": "${v}"}})`;
    if (!Number.isSafeInteger(v) && longFromBigInt(BigInt(v)) === undefined) return outOfRange(v);
  }
  if (typeof v === "bigint" && longFromBigInt(v) === undefined) return outOfRange(v);
  return undefined;
}

function outOfRange(v: number | bigint): string {
  const digits = BigInt(v).toString();
  const shown = digits.length > 40 ? `${digits.slice(0, 24)}… (${digits.length} digits)` : digits;
  return `${shown} is out of range; ${LONG_RANGE}, -9223372036854775808 to 9223372036854775807`;
}
