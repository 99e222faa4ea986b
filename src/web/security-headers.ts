/**
 * The response headers every page zt generates (sign-in, denied, message pages) is sent
 * with, whoever delivers it: zt itself (`sendHtml`), HAProxy's SPOE rules
 * (`zt forward-auth config haproxy` writes them into its `http-request return`), or a
 * front proxy relaying zt's answer (nginx, Caddy, zt's HAProxy Lua action). Kept here
 * once, so no path serves a page without them:
 * - `no-store`: a denial or sign-in page names a decision and a user; no cache keeps it.
 * - `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no site frames the sign-in
 *   form (clickjacking).
 * - CSP `default-src 'none'`: the pages run no script and load nothing.
 * - `nosniff`: the page is the type it says.
 */
export const PAGE_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "cache-control": "no-store",
  "x-frame-options": "DENY",
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
});
