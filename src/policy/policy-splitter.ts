/**
 * Splits Cedar policy text into statements at top-level `;`, keeping each statement's
 * offset so errors from the reference parser (which reports offsets inside the text it
 * was given) can be mapped back to file:line:col. Not a parser: `;` cannot occur in a
 * Cedar policy outside string literals and comments, which is all this has to skip.
 */
export interface PolicyStatement {
  /** The statement text, including its `;` when present. */
  text: string;
  /** UTF-16 offset of `text` in the source. */
  start: number;
  /** UTF-16 offset of the first character that is neither whitespace nor comment. */
  firstToken: number;
}

export function splitPolicyText(source: string): PolicyStatement[] {
  const out: PolicyStatement[] = [];
  let start = 0;
  let firstToken = -1;
  let i = 0;
  const n = source.length;
  while (i < n) {
    const ch = source[i]!;
    if (ch === "/" && source[i + 1] === "/") {
      while (i < n && source[i] !== "\n") i++;
      continue;
    }
    if (ch === '"') {
      if (firstToken < 0) firstToken = i;
      i++;
      while (i < n && source[i] !== '"') i += source[i] === "\\" ? 2 : 1;
      i++;
      continue;
    }
    if (ch === ";") {
      if (firstToken < 0) firstToken = i;
      out.push({ text: source.slice(start, i + 1), start, firstToken });
      start = i + 1;
      firstToken = -1;
      i++;
      continue;
    }
    if (firstToken < 0 && !/\s/.test(ch)) firstToken = i;
    i++;
  }
  if (firstToken >= 0) out.push({ text: source.slice(start), start, firstToken });
  return out;
}

let indexedSource: string | undefined;
let lineStarts: number[] = [0];

/**
 * 1-based line and column of a UTF-16 offset. Line starts are indexed once per source (the
 * loader asks for every statement of a file: 10,000 policies must not mean 10,000 scans).
 */
export function lineColAt(source: string, offset: number): { line: number; col: number } {
  if (source !== indexedSource) {
    const starts = [0];
    for (let i = 0; i < source.length; i++) if (source.charCodeAt(i) === 10) starts.push(i + 1);
    indexedSource = source;
    lineStarts = starts;
  }
  const end = Math.max(0, Math.min(offset, source.length));
  // The last line start ≤ end (a newline at end - 1 starts the line `end` is on).
  let lo = 0;
  let hi = lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (lineStarts[mid]! <= end) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, col: end - lineStarts[lo]! + 1 };
}

/** Converts a UTF-8 byte offset inside `text` (as Cedar reports it) to a UTF-16 offset. */
export function byteToCharOffset(text: string, byteOffset: number): number {
  const buf = Buffer.from(text, "utf8");
  return buf.subarray(0, Math.max(0, Math.min(byteOffset, buf.length))).toString("utf8").length;
}
