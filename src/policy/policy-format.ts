import * as cedar from "./cedar-wasm.js";
import { ZtError } from "../core/errors.js";
import { byteToCharOffset, lineColAt } from "./policy-splitter.js";

/** Formats Cedar policy text with the reference formatter (comments are kept). */
export function formatPolicyText(text: string, file = "<input>"): string {
  const res = cedar.formatPolicies({ policyText: text, lineWidth: 100, indentWidth: 2 });
  if (res.type === "failure") {
    const e = res.errors[0];
    const loc = e?.sourceLocations?.[0];
    const { line, col } = lineColAt(text, loc ? byteToCharOffset(text, loc.start) : 0);
    throw new ZtError(
      "ZT_POLICY_INVALID",
      `${file}:${line}:${col}: ${e?.message ?? "cannot format"}`,
    );
  }
  return res.formatted_policy;
}
