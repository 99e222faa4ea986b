/**
 * The Origin check for zt's own state-changing endpoints (sign-in, sign-out): is the
 * page that sent the request on this very origin (RFC 6454: scheme, host, port)?
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
}

const DEFAULT_PORT = { http: 80, https: 443 } as const;

// RFC 6454 §6.2 serialisation: scheme "://" host [ ":" port ]; no path, userinfo, query.
const ORIGIN_RE = /^(https?):\/\/([^/?#@\\\s]+)$/i;

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
  const m = ORIGIN_RE.exec(origin);
  if (!m) return false;
  const scheme = m[1]!.toLowerCase() as keyof typeof DEFAULT_PORT;
  if (target.secure && scheme !== "https") return false;
  const h = canonicalHost(m[2]);
  if (!h.ok || h.host !== target.host) return false;
  const originPort = h.port ?? DEFAULT_PORT[scheme];
  return originPort === (target.port ?? DEFAULT_PORT[scheme]);
}

/**
 * The same-origin check for a request to zt's own endpoints: the Origin must match
 * (see `originMatches`); without an Origin (older browsers, CLI clients), a browser's
 * Sec-Fetch-Site still has to say `same-origin` (or `none`: typed or bookmarked).
 */
export function isSameOriginRequest(headers: SameOriginHeaders, target: RequestOrigin): boolean {
  if (headers.origin === undefined) {
    const site = headers.secFetchSite;
    return site === undefined || site === "same-origin" || site === "none";
  }
  return originMatches(headers.origin, target);
}
