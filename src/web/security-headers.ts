import { PAGE_STYLE_SOURCE } from "./html.js";

/**
 * The response headers every page zt generates (sign-in, denied, message pages) is sent
 * with, whoever delivers it: zt itself (`sendHtml`), HAProxy's SPOE rules
 * (`zt forward-auth config haproxy` writes them into its `http-request return`), or a
 * front proxy relaying zt's answer (nginx, Caddy, zt's HAProxy Lua action). Kept here
 * once, so no path serves a page without them:
 * - `no-store`: a denial or sign-in page names a decision and a user; no cache keeps it.
 * - `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no site frames the sign-in
 *   form (clickjacking).
 * - CSP `default-src 'none'`: the pages run no script and load nothing; `style-src` is
 *   the hash of zt's one stylesheet (no `'unsafe-inline'`), `base-uri 'none'` (no
 *   `<base>` can move the form's relative action), `form-action 'self'`.
 * - `nosniff`: the page is the type it says.
 */
export const PAGE_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "cache-control": "no-store",
  "x-frame-options": "DENY",
  "content-security-policy": `default-src 'none'; style-src ${PAGE_STYLE_SOURCE}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`,
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
});

/**
 * The headers every JSON answer zt writes carries (refusals above all: 401, 403, 4xx,
 * 5xx from the PEP, forward-auth, the SPOE rules and the API), a subset of the page
 * headers:
 * - `no-store`: a refusal names a decision and a user, and a cached 401 or 403 would be
 *   served to the next client of a shared cache.
 * - `nosniff`: a browser never reads the JSON as a script or a page.
 */
export const JSON_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "cache-control": PAGE_SECURITY_HEADERS["cache-control"]!,
  "x-content-type-options": PAGE_SECURITY_HEADERS["x-content-type-options"]!,
});

/** JSON_SECURITY_HEADERS as HTTP/1.1 header lines, for refusals written to a raw socket. */
const JSON_SECURITY_LINES = Object.entries(JSON_SECURITY_HEADERS)
  .map(([name, value]) => `${name}: ${value}\r\n`)
  .join("");

/**
 * A whole HTTP/1.1 JSON refusal for a socket that has no ServerResponse (a request Node's
 * parser refused, an upgrade refused): the status line, the JSON security headers, then
 * close. `extraLines`: more header lines, each ending in CRLF.
 *
 * @example socket.end(rawJsonRefusal("400 Bad Request", JSON.stringify(body)))
 */
export function rawJsonRefusal(status: string, body: string, extraLines = ""): string {
  return `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${JSON_SECURITY_LINES}${extraLines}Connection: close\r\n\r\n${body}`;
}
