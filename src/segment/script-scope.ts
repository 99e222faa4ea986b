import { ZT_TABLE } from "./compile-nftables.js";

/** Statements a script may have outside `table inet zt { … }`: zt's own replace-table steps. */
const TOP_LEVEL_OK = new Set([
  `table inet ${ZT_TABLE} {}`,
  `add table inet ${ZT_TABLE} {}`,
  `delete table inet ${ZT_TABLE}`,
  `flush table inet ${ZT_TABLE}`,
]);

export type ScriptScope = { ok: true } | { ok: false; line: number; statement: string };

/**
 * Checks that an nft script changes only `table inet zt`: every top-level statement is one
 * of zt's replace-table steps or `table inet zt { … }`, and nothing `include`s another file
 * (nft reads it in place, so it could close the table and go on at the top level). The
 * rollback restores only zt's table, so a script that touched another table (`flush
 * ruleset`, `table inet filter { … policy drop; }`) could not be undone. Quoted strings and
 * `#` comments are skipped.
 *
 * @example checkScriptScope("flush ruleset\n") // { ok: false, line: 1, statement: "flush ruleset" }
 */
export function checkScriptScope(text: string): ScriptScope {
  let depth = 0;
  let line = 1;
  let stmt = "";
  let stmtLine = 1;
  const end = (): ScriptScope | undefined => {
    const s = stmt.replace(/\s+/g, " ").trim();
    stmt = "";
    if (s === "" || TOP_LEVEL_OK.has(s)) return undefined;
    return { ok: false, line: stmtLine, statement: s };
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "#") {
      while (i + 1 < text.length && text[i + 1] !== "\n") i++;
      continue;
    }
    if (c === '"') {
      const close = text.indexOf('"', i + 1);
      const j = close < 0 ? text.length : close;
      for (let k = i; k < j; k++) if (text[k] === "\n") line++;
      if (depth === 0) stmt += text.slice(i, j + 1);
      i = j;
      continue;
    }
    if (
      c === "i" &&
      text.startsWith("include", i) &&
      !/[\w-]/.test(text[i - 1] ?? " ") &&
      !/[\w-]/.test(text[i + 7] ?? " ")
    )
      return { ok: false, line, statement: "include" };
    if (depth === 0 && (c === "\n" || c === ";")) {
      const bad = end();
      if (bad) return bad;
      if (c === "\n") line++;
      stmtLine = line;
      continue;
    }
    if (c === "\n") line++;
    if (c === "{") {
      if (depth === 0) stmt += "{";
      depth++;
      continue;
    }
    if (c === "}") {
      depth--;
      if (depth < 0) return { ok: false, line, statement: "}" };
      if (depth === 0) stmt += "}";
      continue;
    }
    if (depth === 0) {
      if (stmt.trim() === "") stmtLine = line;
      stmt += c;
    }
  }
  return end() ?? { ok: true };
}
