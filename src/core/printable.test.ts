import { describe, expect, it } from "vitest";
import { printable, quoteInput } from "./printable.js";

describe("printable", () => {
  it("shows C0, DEL and C1 controls as escapes (ESC, BEL, CR, CSI, OSC)", () => {
    expect(printable("a\u001b]0;x\u0007b\rc\u007f\u009b2J\u009d")).toBe(
      "a\\u{1b}]0;x\\u{7}b\\u{d}c\\u{7f}\\u{9b}2J\\u{9d}",
    );
  });

  it("shows every bidi control of UAX #9 as an escape, so none reorders the line (CVE-2021-42574)", () => {
    const bidi = [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069];
    for (const cp of [...bidi, 0x200e, 0x200f, 0x061c, 0x2028, 0x2029]) {
      const c = String.fromCodePoint(cp);
      expect(printable(`x${c}y`), cp.toString(16)).toBe(`x\\u{${cp.toString(16)}}y`);
    }
  });

  it("leaves ordinary text alone, right-to-left script and emoji included", () => {
    for (const text of ["alice@example.test", "שלום", "مرحبا", "zoë ✓ 🙂", "a\\u{1b}b"])
      expect(printable(text)).toBe(text);
  });

  it("keeps line feeds only when asked (a message of several lines), escaping the rest", () => {
    expect(printable("one\ntwo")).toBe("one\\u{a}two");
    expect(printable("one\ntwo\r\u202e", { keepLineBreaks: true })).toBe("one\ntwo\\u{d}\\u{202e}");
  });
});

describe("quoteInput", () => {
  it("quotes a value as JSON, cut to its bound with … marking the cut", () => {
    expect(quoteInput("abc")).toBe('"abc"');
    expect(quoteInput(0)).toBe("0");
    expect(quoteInput("a".repeat(100))).toBe(`"${"a".repeat(100)}"`);
    expect(quoteInput("a".repeat(100_000))).toBe(`"${"a".repeat(100)}"…`);
    expect(quoteInput("abcdef", 3)).toBe('"abc"…');
  });
});
