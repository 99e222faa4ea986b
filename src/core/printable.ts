/**
 * Characters a terminal acts on or that change how the text around them reads:
 *  - C0 controls, DEL and C1 controls: ESC, CSI (U+009B) and OSC (U+009D) start sequences
 *    that move the cursor, retitle the window or hide lines; CR and BS overwrite text;
 *  - Unicode bidi controls (Unicode Bidirectional Algorithm, UAX #9): the embeddings and
 *    overrides U+202A–U+202E, the isolates U+2066–U+2069, the marks U+200E, U+200F and
 *    U+061C: a RIGHT-TO-LEFT OVERRIDE in a ban reason makes the rest of the line read
 *    backwards, so what an admin reads is not what is stored (CVE-2021-42574);
 *  - the line and paragraph separators U+2028, U+2029, which some terminals break on.
 */
const UNSAFE =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const UNSAFE_BUT_LF =
  // eslint-disable-next-line no-control-regex -- as above, with the line feed left out
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export interface PrintableOptions {
  /** Keep line feeds as line breaks (a message of several lines); every other character is escaped. */
  keepLineBreaks?: boolean;
}

/**
 * Text from outside (a request zt recorded, a flag value, a ban reason, a device's report)
 * made safe to write to a terminal: every control character and bidi control is shown as a
 * visible `\u{…}` escape (its code point in hex) instead of being written, so the text can
 * neither drive the terminal nor reorder what the reader sees. Nothing is dropped.
 *
 * @example
 * printable("evil\u001b]0;x\u0007"); // "evil\\u{1b}]0;x\\u{7}"
 * printable("abc\u202edef");         // "abc\\u{202e}def"
 */
export function printable(text: string, options: PrintableOptions = {}): string {
  return text.replace(
    options.keepLineBreaks ? UNSAFE_BUT_LF : UNSAFE,
    (c) => `\\u{${c.charCodeAt(0).toString(16)}}`,
  );
}

/**
 * A value someone gave, quoted for an error message and cut to `max` characters ("…" marks
 * the cut), so a huge value (a file pasted into a flag) is not echoed whole onto one line.
 *
 * @example quoteInput("abc") // "\"abc\"" (a number as JSON writes it: quoteInput(0) // "0")
 */
export function quoteInput(value: string | number, max = 100): string {
  if (typeof value === "number") return JSON.stringify(value);
  return JSON.stringify(value.slice(0, max)) + (value.length > max ? "…" : "");
}
