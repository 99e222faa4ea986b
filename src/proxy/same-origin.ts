/**
 * The Origin checks: for zt's own state-changing endpoints (sign-in, sign-out), is the
 * page that sent the request on this very origin (RFC 6454: scheme, host, port)? For a
 * browser's WebSocket handshake, on this origin or one the route lists?
 */
import { canonicalHost } from "./canonical-request.js";

/** Where the request arrived: its canonical Host (and port when the Host header named one). */
export interface RequestOrigin {
  /** Canonical host, as `canonicalHost` gives it (lowercase, no trailing dot). */
  host: string;
  /** The Host header's explicit port; undefined when it named none. */
  port: number | undefined;
  /** The client reached zt over https (TLS here, or a trusted proxy says so). */
  secure: boolean;
}

export interface SameOriginHeaders {
  /** The Origin header, as received (undefined when absent). */
  origin: string | undefined;
  /** The Sec-Fetch-Site header, as received (undefined when absent). */
  secFetchSite: string | undefined;
  /** The Referer header, as received (undefined when absent). */
  referer?: string | undefined;
}

const DEFAULT_PORT = { http: 80, https: 443 } as const;

// RFC 6454 §6.2 serialisation: scheme "://" host [ ":" port ]; no path, userinfo, query.
const ORIGIN_RE = /^(https?):\/\/([^/?#@\\\s]+)$/i;

/** A serialised http(s) origin, taken apart: the port is the scheme's default when none is named. */
export interface ParsedOrigin {
  scheme: "http" | "https";
  /** Canonical host, as `canonicalHost` gives it. */
  host: string;
  port: number;
}

/**
 * Parses a serialised origin (RFC 6454 §6.2: `scheme://host[:port]`, http or https):
 * undefined for anything else (`null`, a path, userinfo, a query, a malformed host).
 *
 * @example parseOrigin("HTTPS://A.Example:443") // { scheme: "https", host: "a.example", port: 443 }
 */
export function parseOrigin(origin: string): ParsedOrigin | undefined {
  const m = ORIGIN_RE.exec(origin);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase() as keyof typeof DEFAULT_PORT;
  const h = canonicalHost(m[2]);
  if (!h.ok) return undefined;
  return { scheme, host: h.host, port: h.port ?? DEFAULT_PORT[scheme] };
}

/** The one spelling of an origin: lowercase, the default port left out (`https://a.example`). */
export function serializeOrigin(o: ParsedOrigin): string {
  return o.port === DEFAULT_PORT[o.scheme]
    ? `${o.scheme}://${o.host}`
    : `${o.scheme}://${o.host}:${o.port}`;
}

/**
 * Whether an Origin header names the origin the request arrived on. Default ports are
 * the same as none (`https://a.example` is `https://a.example:443`); the host compares
 * as the proxy canonicalises Host (case-insensitive, one trailing dot dropped). A Host
 * header without a port means the default port of the scheme the client used. Over
 * https only an https page matches; over plain http either scheme does (an https front
 * proxy zt does not trust may sit before it). Anything that is not a serialised http(s)
 * origin (`null`, a path, userinfo, a malformed host) is refused.
 *
 * @example originMatches("https://a.example", { host: "a.example", port: 443, secure: true }) // true
 */
export function originMatches(origin: string, target: RequestOrigin): boolean {
  const o = parseOrigin(origin);
  if (!o) return false;
  if (target.secure && o.scheme !== "https") return false;
  return o.host === target.host && o.port === (target.port ?? DEFAULT_PORT[o.scheme]);
}

/**
 * The Origin check of a browser's WebSocket handshake (Cross-Site WebSocket Hijacking:
 * browsers send cookies with a cross-origin WebSocket, and no CORS applies to it). The
 * page must be on the origin the request arrived on (`originMatches`) or on one of
 * `allowed`, serialised origins as `serializeOrigin` spells them (a route's
 * `websocket_origins`, normalised at load).
 *
 * @example webSocketOriginAllowed("https://app.example", t, ["https://app.example"]) // true
 */
export function webSocketOriginAllowed(
  origin: string,
  target: RequestOrigin,
  allowed: readonly string[] | undefined,
): boolean {
  if (originMatches(origin, target)) return true;
  if (allowed === undefined || allowed.length === 0) return false;
  const o = parseOrigin(origin);
  return o !== undefined && allowed.includes(serializeOrigin(o));
}

/**
 * The same-origin check for a request to zt's own endpoints: the Origin must match
 * (see `originMatches`). Without an Origin (older browsers, CLI clients), a browser's
 * Sec-Fetch-Site still has to say `same-origin` (or `none`: typed or bookmarked), and a
 * Referer, when sent, has to be a URL on this origin (OWASP CSRF Prevention Cheat
 * Sheet: the Referer stands in for a missing Origin; browsers that send no Origin on a
 * form POST, such as Firefox before 70, send no Sec-Fetch-Site either). No Referer is
 * not a refusal: zt's own pages send one (`Referrer-Policy: same-origin`), CLI clients
 * do not.
 */
export function isSameOriginRequest(headers: SameOriginHeaders, target: RequestOrigin): boolean {
  if (headers.origin !== undefined) return originMatches(headers.origin, target);
  const site = headers.secFetchSite;
  if (site !== undefined && site !== "same-origin" && site !== "none") return false;
  return headers.referer === undefined || refererMatches(headers.referer, target);
}

/** Whether a Referer is an absolute http(s) URL on the target origin; anything else is not. */
function refererMatches(referer: string, target: RequestOrigin): boolean {
  let url: URL;
  try {
    url = new URL(referer);
  } catch {
    return false;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return false;
  // Userinfo is not part of an origin, and no browser sends it in a Referer.
  if (url.username !== "" || url.password !== "") return false;
  return originMatches(`${url.protocol}//${url.host}`, target);
}
