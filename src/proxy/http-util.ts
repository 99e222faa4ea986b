import type { IncomingMessage, ServerResponse } from "node:http";
import { ZtError, type ZtErrorCode } from "../core/errors.js";
import { JSON_SECURITY_HEADERS, PAGE_SECURITY_HEADERS } from "../web/index.js";

/** Every value of the named cookie, in order (a browser may send two with one name). */
export function cookieValues(header: string | undefined, name: string): string[] {
  const out: string[] = [];
  if (!header) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === name) out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/**
 * Whether a `Set-Cookie` value sets a cookie the browser will send back as `name=…`: its
 * name is what precedes the first `=`, whitespace trimmed, as a browser reads it
 * (RFC 6265 §5.2). A cookie with an empty name (`=zt_session=x`) is sent back as its bare
 * value (RFC 6265bis §5.7.3), `zt_session=x`, so its value is read the same way.
 */
export function setCookieNames(value: string, name: string): boolean {
  const semi = value.indexOf(";");
  const pair = semi === -1 ? value : value.slice(0, semi);
  const eq = pair.indexOf("=");
  if (eq === -1) return false; // sent back as a bare word: never `name=…`
  const cookieName = pair.slice(0, eq).trim();
  if (cookieName === name) return true;
  if (cookieName !== "") return false;
  const bare = pair.slice(eq + 1);
  const eq2 = bare.indexOf("=");
  return eq2 !== -1 && bare.slice(0, eq2).trim() === name;
}

/** Removes one cookie from a Cookie header (the session token never reaches upstreams). */
export function stripCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  const kept = header
    .split(";")
    .map((p) => p.trim())
    .filter(
      (p) =>
        p !== "" && p.slice(0, p.indexOf("=") === -1 ? p.length : p.indexOf("=")).trim() !== name,
    );
  return kept.length ? kept.join("; ") : undefined;
}

/**
 * How many header lines named `name` (lower case) a request carries, from Node's
 * `rawHeaders`: `req.headers` keeps only the first of some (Host, Authorization) and
 * joins others, so a repeated one is invisible there.
 */
export function headerLineCount(rawHeaders: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const h = rawHeaders[i]!;
    if (h.length === name.length && h.toLowerCase() === name) n++;
  }
  return n;
}

/** True when the client prefers an HTML page (a browser) over JSON. */
export function wantsHtml(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? "";
  return accept.includes("text/html");
}

/** A JSON answer, with JSON_SECURITY_HEADERS (no caching, no sniffing) unless `headers` overrides one. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...JSON_SECURITY_HEADERS,
    ...headers,
  });
  res.end(text);
}

export function sendHtml(
  res: ServerResponse,
  status: number,
  html: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(html),
    ...PAGE_SECURITY_HEADERS,
    ...headers,
  });
  res.end(html);
}

export function sendError(
  res: ServerResponse,
  code: ZtErrorCode,
  message: string,
  extra: Record<string, unknown> = {},
): void {
  const e = new ZtError(code, message, extra);
  sendJson(res, e.httpStatus, e.toJSON());
}

/**
 * At most this many bytes of a refused body are read (and discarded) before the refusal
 * is answered: a server that closes while the client is still sending makes the client's
 * kernel reset the connection, and the 413 is lost with it. Beyond this, answer anyway.
 */
export const MAX_DISCARDED_BODY = 1024 * 1024;

/**
 * Reads a request body up to `limit` bytes, as UTF-8 text; rejects with ZT_PAYLOAD_TOO_LARGE
 * beyond, and with ZT_BAD_REQUEST when the bytes are not UTF-8 (see `utf8Text`).
 * A declared `Content-Length` over the limit is refused before anything is kept; either
 * way the rest of the body is read and discarded (up to MAX_DISCARDED_BODY) before the
 * promise rejects, so the caller's 413 reaches the client. The caller answers with
 * `connection: close` (see `sendPayloadTooLarge`).
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return utf8Text(await readBodyBytes(req, limit), "request body");
}

function readBodyBytes(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      outcome();
    };
    const refuse = () =>
      settle(() =>
        reject(
          new ZtError("ZT_PAYLOAD_TOO_LARGE", `request body exceeds ${limit} bytes`, { limit }),
        ),
      );
    const declared = Number(req.headers["content-length"]);
    // Refused up front on its declared length; too big even to discard: answer at once.
    let refused = Number.isSafeInteger(declared) && declared > limit;
    if (refused && declared > MAX_DISCARDED_BODY) return refuse();
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (!refused && size > limit) {
        refused = true;
        chunks.length = 0;
      }
      if (refused) {
        if (size > MAX_DISCARDED_BODY) refuse();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (refused) refuse();
      else settle(() => resolve(Buffer.concat(chunks)));
    });
    req.on("error", (e) => settle(() => reject(e)));
    req.on("close", () => {
      // The client went away mid-body: nothing more will come.
      if (refused) refuse();
      else settle(() => reject(new ZtError("ZT_BAD_REQUEST", "request body incomplete")));
    });
  });
}

/** The 413 for a refused body; the connection closes after it (the body was not all read). */
export function sendPayloadTooLarge(res: ServerResponse, e: ZtError): void {
  sendJson(res, e.httpStatus, e.toJSON(), { connection: "close" });
}

/** Longest return path kept after encoding; a longer one becomes "/". */
const MAX_RETURN_TO = 2048;

/**
 * A same-host return path: must be a path, never another origin (no open redirects).
 * It goes into a `Location` header, so everything outside printable ASCII is
 * percent-encoded as UTF-8 (`/docs/日本語` → `/docs/%E6%97%A5…`, a space → `%20`):
 * the header can always be written. Control characters, backslashes, lone surrogates
 * and paths longer than 2048 characters once encoded become "/".
 */
export function safeReturnTo(value: unknown): string {
  if (
    typeof value !== "string" ||
    !value.startsWith("/") ||
    value.startsWith("//") ||
    value.includes("\\")
  )
    return "/";
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (/[\x00-\x1f\x7f]/.test(value)) return "/";
  let encoded: string;
  try {
    encoded = value.replace(/[^\x21-\x7e]+/gu, (run) => encodeURIComponent(run));
  } catch {
    return "/"; // a lone surrogate has no UTF-8 encoding
  }
  return encoded.length <= MAX_RETURN_TO ? encoded : "/";
}

// WHATWG Encoding: `fatal` throws on bytes that are not UTF-8 instead of writing U+FFFD.
const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Bytes as UTF-8 text, or ZT_BAD_REQUEST naming `what`: never a U+FFFD in place of what
 * could not be read, which would make different bytes the same text (a password holding
 * U+FFFD matched by any invalid byte).
 */
function utf8Text(bytes: Uint8Array, what: string, context: Record<string, unknown> = {}): string {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    throw new ZtError("ZT_BAD_REQUEST", `${what}: not UTF-8 text`, context);
  }
}

const isHex = (b: number | undefined) =>
  b !== undefined && ((b >= 0x30 && b <= 0x39) || ((b | 0x20) >= 0x61 && (b | 0x20) <= 0x66));

/** WHATWG URL §5.1 percent-decoding, after "+" became a space: "%" not followed by two hex digits stays. */
function percentDecode(s: string): Buffer {
  const bytes = Buffer.from(s.replaceAll("+", " "), "utf8");
  const out = Buffer.alloc(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x25 && isHex(bytes[i + 1]) && isHex(bytes[i + 2])) {
      out[n++] = parseInt(bytes.toString("latin1", i + 1, i + 3), 16);
      i += 2;
    } else out[n++] = bytes[i]!;
  }
  return out.subarray(0, n);
}

/**
 * An `application/x-www-form-urlencoded` body (WHATWG URL §5.1), read exactly: a name or
 * value whose bytes are not UTF-8, and a field sent twice (which one was meant would be
 * a guess, and a front proxy may read the other), are ZT_BAD_REQUEST with `field`;
 * `URLSearchParams` would write U+FFFD for the first and keep the last of the second.
 *
 * @example parseFormFields("username=alice&totp=123+456") // { username: "alice", totp: "123 456" }
 */
export function parseFormFields(body: string): Record<string, string> {
  const fields = new Map<string, string>();
  for (const part of body.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const name = utf8Text(percentDecode(eq === -1 ? part : part.slice(0, eq)), "a field name");
    const value = utf8Text(percentDecode(eq === -1 ? "" : part.slice(eq + 1)), name, {
      field: name,
    });
    if (fields.has(name))
      throw new ZtError("ZT_BAD_REQUEST", `${name}: sent more than once`, { field: name });
    fields.set(name, value);
  }
  return Object.fromEntries(fields);
}
