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

export interface OriginalRequest {
  method: string;
  proto: "http" | "https";
  /** Canonical host (lowercase, no trailing dot). */
  host: string;
  port: number | undefined;
  /** Canonical path: the same function as proxied requests. */
  path: string;
  query: string;
  style: ForwardAuthStyle;
}

export type ForwardedRefusal =
  CanonicalRefusal | "forwarded-missing" | "forwarded-duplicate" | "forwarded-invalid";

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

function one(
  headers: DistinctHeaders,
  name: string,
):
  | { ok: true; value: string | undefined }
  | { ok: false; reason: ForwardedRefusal; detail: string } {
  const v = headers[name];
  if (v === undefined || v.length === 0) return { ok: true, value: undefined };
  // Two copies of a header that names the original request: which one did the proxy mean?
  if (v.length > 1)
    return { ok: false, reason: "forwarded-duplicate", detail: `${name} sent more than once` };
  return { ok: true, value: v[0]!.trim() };
}

/**
 * The original request, from `X-Original-URL` + `X-Original-Method` (nginx), else from
 * `X-Forwarded-Method/Proto/Host/Uri` (Caddy, Traefik, nginx). Missing, duplicated or
 * malformed headers are refused, never guessed; the URI is canonicalised exactly like
 * a request the PEP proxies itself.
 *
 * @example readOriginalRequest({ "x-original-url": ["https://app.example/a/../b"], "x-original-method": ["GET"] })
 *          // → { ok: true, request: { host: "app.example", path: "/b", method: "GET", style: "auth-request", … } }
 */
export function readOriginalRequest(headers: DistinctHeaders): OriginalRequestResult {
  const url = one(headers, "x-original-url");
  if (!url.ok) return url;
  if (url.value !== undefined) {
    const method = one(headers, "x-original-method");
    if (!method.ok) return method;
    const fwdMethod = one(headers, "x-forwarded-method");
    if (!fwdMethod.ok) return fwdMethod;
    const m = method.value ?? fwdMethod.value;
    if (m === undefined)
      return {
        ok: false,
        reason: "forwarded-missing",
        detail: "X-Original-URL without X-Original-Method",
      };
    const parts = ORIGINAL_URL_RE.exec(url.value);
    if (!parts)
      return {
        ok: false,
        reason: "forwarded-invalid",
        detail: "X-Original-URL is not an absolute http(s) URL",
      };
    const target = parts[3] === "" ? "/" : parts[3]!;
    return build(m, parts[1]!.toLowerCase(), parts[2]!, target, "auth-request");
  }
  const got: Record<string, string | undefined> = {};
  for (const name of [
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
  ]) {
    const r = one(headers, name);
    if (!r.ok) return r;
    got[name] = r.value;
  }
  const method = got["x-forwarded-method"];
  const proto = got["x-forwarded-proto"];
  const host = got["x-forwarded-host"];
  const uri = got["x-forwarded-uri"];
  if (method === undefined || proto === undefined || host === undefined || uri === undefined) {
    return {
      ok: false,
      reason: "forwarded-missing",
      detail:
        "expected X-Original-URL + X-Original-Method, or X-Forwarded-Method, -Proto, -Host and -Uri",
    };
  }
  // A list ("https, http") means a chain of proxies disagreeing: refuse.
  if (proto.includes(",") || host.includes(",")) {
    return {
      ok: false,
      reason: "forwarded-duplicate",
      detail: "X-Forwarded-Proto/-Host hold more than one value",
    };
  }
  return build(method, proto.toLowerCase(), host, uri, "forward-auth");
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
  readonly #set: CidrSet;
  readonly #memo = new Map<string, boolean>();

  constructor(cidrs: readonly string[]) {
    this.#set = new CidrSet(cidrs, "trusted_proxies");
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
