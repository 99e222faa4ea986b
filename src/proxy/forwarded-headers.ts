/**
 * Reading the original request from the headers a front proxy sends to forward-auth
 * (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`), and the real
 * client address from `X-Forwarded-For`. Pure: header values in, a value out. The
 * caller decides whether the peer is a trusted proxy; from anyone else these headers
 * must not be read at all.
 */
import { CidrSet, normalizeIp } from "../core/cidr.js";
import { isIP } from "node:net";
import { canonicalizeRequest, type CanonicalRefusal } from "./canonical-request.js";

/**
 * `auth-request`: nginx `auth_request` (X-Original-URL): only 401/403 may be answered,
 * nginx turns anything else into a 500. `forward-auth`: Caddy / Traefik (X-Forwarded-*),
 * which relay a non-2xx answer to the client, so browsers can be redirected directly.
 */
export type ForwardAuthStyle = "auth-request" | "forward-auth";

/**
 * `forward_auth.headers`: which convention names the original request. `auto` reads
 * either and refuses both at once; a pinned one never reads the other's headers, so a
 * client's copies of them (which front proxies pass on) cannot matter at all.
 */
export type ForwardedConvention = "auto" | "x-original" | "x-forwarded";

export interface OriginalRequest {
  method: string;
  proto: "http" | "https";
  /** Canonical host (lowercase, no trailing dot). */
  host: string;
  port: number | undefined;
  /**
   * Canonical path: the same function as proxied requests, and the path as the front
   * proxy forwards it (anything else is refused), but for the hex case of %-escapes.
   */
  path: string;
  query: string;
  style: ForwardAuthStyle;
}

export type ForwardedRefusal =
  | CanonicalRefusal
  | "forwarded-missing"
  | "forwarded-duplicate"
  | "forwarded-invalid"
  | "forwarded-conflict"
  | "path-not-canonical";

export type OriginalRequestResult =
  { ok: true; request: OriginalRequest } | { ok: false; reason: ForwardedRefusal; detail: string };

/** Header name → every value received (Node's `IncomingMessage.headersDistinct`). */
export type DistinctHeaders = Readonly<Record<string, string[] | undefined>>;

/** The headers `readOriginalRequest` reads. */
const ORIGINAL_REQUEST_HEADERS = new Set([
  "x-original-url",
  "x-original-method",
  "x-forwarded-method",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-uri",
]);

/**
 * What `IncomingMessage.headersDistinct` holds for the headers `readOriginalRequest`
 * reads (every value, in order, under the lower-cased name), from `rawHeaders`: that
 * getter builds an object of every header on each request.
 */
export function originalRequestHeaders(rawHeaders: readonly string[]): DistinctHeaders {
  const out: Record<string, string[]> = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    // All six names start with "x-" and are 14 to 18 characters long.
    if (name.length < 14 || name.length > 18 || (name[0] !== "x" && name[0] !== "X")) continue;
    const lower = name.toLowerCase();
    if (!ORIGINAL_REQUEST_HEADERS.has(lower)) continue;
    const v = out[lower];
    if (v === undefined) out[lower] = [rawHeaders[i + 1]!];
    else v.push(rawHeaders[i + 1]!);
  }
  return out;
}

const METHOD_RE = /^[A-Z]{1,20}$/;
const ORIGINAL_URL_RE = /^(https?):\/\/([^/?#\s]+)([^#\s]*)$/;

type One =
  | { readonly ok: true; readonly value: string | undefined }
  | { ok: false; reason: ForwardedRefusal; detail: string };

/** An absent header (most of the five, on every check): shared, nothing allocated. */
const ABSENT: One = Object.freeze({ ok: true, value: undefined });

function one(headers: DistinctHeaders, name: string): One {
  const v = headers[name];
  if (v === undefined || v.length === 0) return ABSENT;
  // Two copies of a header that names the original request: which one did the proxy mean?
  if (v.length > 1)
    return { ok: false, reason: "forwarded-duplicate", detail: `${name} sent more than once` };
  return { ok: true, value: v[0]!.trim() };
}

/**
 * The original request, from `X-Original-URL` + `X-Original-Method` (nginx), or from
 * `X-Forwarded-Method/Proto/Host/Uri` (Caddy, Traefik, HAProxy). Missing, duplicated or
 * malformed headers are refused, never guessed; so are both conventions at once, and a
 * path the front proxy would forward in a form other than the one decided on. With a
 * pinned `convention`, only that convention's headers are read.
 *
 * @example readOriginalRequest({ "x-original-url": ["https://app.example/a/b"], "x-original-method": ["GET"] })
 *          // → { ok: true, request: { host: "app.example", path: "/a/b", method: "GET", style: "auth-request", … } }
 */
export function readOriginalRequest(
  headers: DistinctHeaders,
  convention: ForwardedConvention = "auto",
): OriginalRequestResult {
  const original = convention !== "x-forwarded";
  const forwarded = convention !== "x-original";
  const url = original ? one(headers, "x-original-url") : ABSENT;
  if (!url.ok) return url;
  const method = original ? one(headers, "x-original-method") : ABSENT;
  if (!method.ok) return method;
  const fwdMethod = forwarded ? one(headers, "x-forwarded-method") : ABSENT;
  if (!fwdMethod.ok) return fwdMethod;
  const fwdUri = forwarded ? one(headers, "x-forwarded-uri") : ABSENT;
  if (!fwdUri.ok) return fwdUri;
  const fwdHost = forwarded ? one(headers, "x-forwarded-host") : ABSENT;
  if (!fwdHost.ok) return fwdHost;
  if (convention === "x-original" && url.value === undefined && method.value === undefined)
    return {
      ok: false,
      reason: "forwarded-missing",
      detail: "expected X-Original-URL and X-Original-Method (forward_auth.headers: x-original)",
    };
  if (url.value !== undefined || method.value !== undefined) {
    // A front proxy sets one convention and passes the client's other headers on (Caddy
    // and Traefik copy a client's X-Original-URL, nginx a client's X-Forwarded-Uri): with
    // both present, either may be the client's own. X-Forwarded-For/-Proto are not
    // counted, load balancers add those to every request.
    if (fwdMethod.value !== undefined || fwdUri.value !== undefined || fwdHost.value !== undefined)
      return {
        ok: false,
        reason: "forwarded-conflict",
        detail: "X-Original-* and X-Forwarded-Method/-Uri/-Host both present",
      };
    if (url.value === undefined || method.value === undefined)
      return {
        ok: false,
        reason: "forwarded-missing",
        detail: "X-Original-URL and X-Original-Method go together",
      };
    const parts = ORIGINAL_URL_RE.exec(url.value);
    if (!parts)
      return {
        ok: false,
        reason: "forwarded-invalid",
        detail: "X-Original-URL is not an absolute http(s) URL",
      };
    const target = parts[3] === "" ? "/" : parts[3]!;
    return build(method.value, parts[1]!.toLowerCase(), parts[2]!, target, "auth-request");
  }
  const proto = one(headers, "x-forwarded-proto");
  if (!proto.ok) return proto;
  const m = fwdMethod.value;
  const p = proto.value;
  const host = fwdHost.value;
  const uri = fwdUri.value;
  if (m === undefined || p === undefined || host === undefined || uri === undefined) {
    return {
      ok: false,
      reason: "forwarded-missing",
      detail:
        convention === "x-forwarded"
          ? "expected X-Forwarded-Method, -Proto, -Host and -Uri (forward_auth.headers: x-forwarded)"
          : "expected X-Original-URL + X-Original-Method, or X-Forwarded-Method, -Proto, -Host and -Uri",
    };
  }
  // A list ("https, http") means a chain of proxies disagreeing: refuse.
  if (p.includes(",") || host.includes(",")) {
    return {
      ok: false,
      reason: "forwarded-duplicate",
      detail: "X-Forwarded-Proto/-Host hold more than one value",
    };
  }
  return build(m, p.toLowerCase(), host, uri, "forward-auth");
}

function build(
  method: string,
  proto: string,
  authority: string,
  target: string,
  style: ForwardAuthStyle,
): OriginalRequestResult {
  if (!METHOD_RE.test(method))
    return {
      ok: false,
      reason: "forwarded-invalid",
      detail: "original method is not an upper-case token",
    };
  if (proto !== "http" && proto !== "https")
    return {
      ok: false,
      reason: "forwarded-invalid",
      detail: "original scheme is neither http nor https",
    };
  if (!target.startsWith("/"))
    return { ok: false, reason: "forwarded-invalid", detail: "original URI must start with /" };
  const canon = canonicalizeRequest(target, authority);
  if (!canon.ok) return canon;
  // The front proxy forwards the URI as the client sent it, not zt's canonical form:
  // decide only when both name the same path (target = raw path + canon.query).
  const rawLength = target.length - canon.query.length;
  const rawPath = rawLength === target.length ? target : target.slice(0, rawLength);
  if (rawPath !== canon.path && !sameButHexCase(rawPath, canon.path))
    return {
      ok: false,
      reason: "path-not-canonical",
      detail:
        "original path is not in canonical form (dot or empty segments, or percent-encoding other than the canonical one): the proxy would forward it as sent",
    };
  return {
    ok: true,
    request: {
      method,
      proto,
      host: canon.host,
      port: canon.port,
      path: canon.path,
      query: canon.query,
      style,
    },
  };
}

/** Whether `raw` is `canonical` but for the letter case of percent-escapes (`%c3` = `%C3`). */
function sameButHexCase(raw: string, canonical: string): boolean {
  return (
    raw.length === canonical.length &&
    raw.includes("%") &&
    raw.replace(/%[0-9a-f]{2}/gi, (e) => e.toUpperCase()) === canonical
  );
}

/**
 * The client address: the socket peer, unless the peer is a trusted proxy; then the
 * right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries to its
 * left were written by the client and prove nothing). Garbage → the peer address.
 */
export function resolveClientIp(
  peer: string,
  xff: string | string[] | undefined,
  trusted: AddressSet,
): string {
  const ip = normalizeIp(peer);
  if (xff === undefined || !trusted.has(ip)) return ip;
  const list = (Array.isArray(xff) ? xff.join(",") : xff).split(",");
  let last = ip;
  for (let i = list.length - 1; i >= 0; i--) {
    let entry = list[i]!.trim();
    if (entry.startsWith("[") && entry.includes("]")) entry = entry.slice(1, entry.indexOf("]"));
    else if (/^\d+\.\d+\.\d+\.\d+:\d+$/.test(entry)) entry = entry.slice(0, entry.lastIndexOf(":"));
    if (isIP(entry) === 0) return last;
    const cand = normalizeIp(entry);
    if (!trusted.has(cand)) return cand;
    last = cand;
  }
  return last;
}

/** Anything that answers "is this address in the set?". */
export interface AddressSet {
  has(address: string): boolean;
}

/**
 * `trusted_proxies` with the answer remembered per address: `BlockList.check` builds a
 * SocketAddress on every call, and a PEP sees the same few peer addresses all day.
 */
export class TrustedProxies implements AddressSet {
  #set: CidrSet;
  readonly #memo = new Map<string, boolean>();
  /** The config key the list comes from, named by a bad entry's error. */
  readonly #key: string;

  constructor(cidrs: readonly string[], key = "trusted_proxies") {
    this.#key = key;
    this.#set = new CidrSet(cidrs, key);
  }

  /** These addresses from now on (a config reload); the remembered answers are dropped. */
  replace(cidrs: readonly string[]): void {
    this.#set = new CidrSet(cidrs, this.#key);
    this.#memo.clear();
  }

  has(address: string): boolean {
    let v = this.#memo.get(address);
    if (v === undefined) {
      v = this.#set.has(address);
      if (this.#memo.size >= 10_000) this.#memo.clear();
      this.#memo.set(address, v);
    }
    return v;
  }
}
