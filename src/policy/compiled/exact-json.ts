import * as cedar from "../cedar-wasm.js";
import type { PolicyJson } from "@cedar-policy/cedar-wasm/nodejs";

/**
 * cedar-wasm's JSON policy form carries Long literals as JS numbers, which lose precision
 * beyond 2^53. When a policy's text has such literals, re-run the conversion with each one
 * replaced by a unique safe placeholder and put the exact value back as a bigint.
 */
export function exactPolicyJson(text: string, json: PolicyJson, template: boolean): PolicyJson {
  const tokens = integerTokens(text);
  const big = tokens.filter((t) => !Number.isSafeInteger(Number(t.text)));
  if (big.length === 0) return json;
  const present = new Set(tokens.map((t) => t.text));
  const placeholders = new Map<number, bigint>();
  let next = 4_000_000_000_000_001;
  let out = "";
  let last = 0;
  for (const t of big) {
    while (present.has(String(next))) next += 2;
    placeholders.set(next, BigInt(t.text));
    out += text.slice(last, t.start) + String(next);
    last = t.start + t.text.length;
    next += 2;
  }
  out += text.slice(last);
  const res = template ? cedar.templateToJson(out) : cedar.policyToJson(out);
  if (res.type === "failure") return json;
  return restore(res.json, placeholders) as PolicyJson;
}

function restore(v: unknown, map: Map<number, bigint>): unknown {
  if (Array.isArray(v)) return v.map((x) => restore(x, map));
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(o)) {
    if (k === "Value" && typeof x === "number") {
      const b = map.get(Math.abs(x));
      out[k] = b === undefined ? x : x < 0 ? -b : b;
    } else out[k] = restore(x, map);
  }
  return out;
}

/** Decimal integer literals outside strings and comments, and not part of identifiers. */
function integerTokens(text: string): { start: number; text: string }[] {
  const out: { start: number; text: string }[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === "/" && text[i + 1] === "/") {
      while (i < n && text[i] !== "\n") i++;
    } else if (c === '"') {
      i++;
      while (i < n && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      while (i < n && /[A-Za-z0-9_]/.test(text[i]!)) i++;
    } else if (/[0-9]/.test(c)) {
      const start = i;
      while (i < n && /[0-9]/.test(text[i]!)) i++;
      out.push({ start, text: text.slice(start, i) });
    } else i++;
  }
  return out;
}
