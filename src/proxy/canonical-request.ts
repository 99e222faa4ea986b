/**
 * Request canonicalisation for the PEP: the path the policy sees is exactly the path
 * the upstream gets. Anything ambiguous (encoded slashes, backslashes, NUL, double
 * encoding, `..` above the root, host mismatches) is refused, never guessed.
 * Pure: strings in, a value out.
 */

export type CanonicalRequest =
  | { ok: true; host: string; port: number | undefined; path: string; query: string }
  | { ok: false; reason: CanonicalRefusal; detail: string };

export type CanonicalRefusal =
  "host-missing" | "host-invalid" | "host-mismatch" | "path-invalid" | "path-ambiguous";

const HOST_RE =
  /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
const IPV6_HOST_RE = /^\[[0-9a-f:.]+\]$/;

type CanonicalHost =
  | { ok: true; host: string; port: number | undefined }
  | { ok: false; reason: CanonicalRefusal; detail: string };

/**
 * canonicalHost's answers by raw value (frozen: shared between requests). A PEP sees
 * the same few Host values all day; bounded, and cleared when full.
 */
const hostMemo = new Map<string, Readonly<CanonicalHost>>();
const HOST_MEMO_MAX = 1024;

/** Canonical host: lowercase, no trailing dot, port split off. */
export function canonicalHost(raw: string | undefined): Readonly<CanonicalHost> {
  if (raw === undefined || raw.length > 255) return canonicalHostUncached(raw);
  let r = hostMemo.get(raw);
  if (r === undefined) {
    r = Object.freeze(canonicalHostUncached(raw));
    if (hostMemo.size >= HOST_MEMO_MAX) hostMemo.clear();
    hostMemo.set(raw, r);
  }
  return r;
}

/** `canonicalHost` without the memo (exported for the equivalence test). */
export function canonicalHostUncached(raw: string | undefined): CanonicalHost {
  if (raw === undefined || raw === "")
    return { ok: false, reason: "host-missing", detail: "no Host header" };
  let h = raw.trim().toLowerCase();
  let port: number | undefined;
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(h);
  if (m && m[2] !== undefined && !h.endsWith("]")) {
    h = m[1]!;
    port = Number(m[2]);
  } else if (h.startsWith("[")) {
    const end = h.indexOf("]");
    const rest = h.slice(end + 1);
    if (rest.startsWith(":") && /^\d{1,5}$/.test(rest.slice(1))) port = Number(rest.slice(1));
    else if (rest !== "") return { ok: false, reason: "host-invalid", detail: "malformed host" };
    h = h.slice(0, end + 1);
  }
  if (h.endsWith(".")) h = h.slice(0, -1);
  if (port !== undefined && (port < 1 || port > 65535))
    return { ok: false, reason: "host-invalid", detail: "bad port" };
  if (!HOST_RE.test(h) && !IPV6_HOST_RE.test(h))
    return { ok: false, reason: "host-invalid", detail: "malformed host" };
  return { ok: true, host: h, port };
}

/**
 * Canonicalises a request target against its Host header.
 * Origin-form (`/a/b?x`) and absolute-form (`http://h/a`) are accepted; in the latter
 * the URL's authority must name the same host as the Host header.
 */
export function canonicalizeRequest(
  target: string,
  hostHeader: string | undefined,
): CanonicalRequest {
  let pathAndQuery = target;
  const hostResult = canonicalHost(hostHeader);
  if (!hostResult.ok) return hostResult;
  if (!target.startsWith("/")) {
    const abs = /^(https?):\/\/([^/?#]*)(.*)$/i.exec(target);
    if (!abs)
      return {
        ok: false,
        reason: "path-invalid",
        detail: "request target is neither /path nor an absolute URL",
      };
    const authority = canonicalHost(abs[2]);
    // RFC 9112 §3.2.2: the absolute-form authority wins over Host; zt refuses to pick
    // one when they differ (host or explicit port), since another hop may pick the other.
    const portsDiffer =
      authority.ok &&
      authority.port !== undefined &&
      hostResult.port !== undefined &&
      authority.port !== hostResult.port;
    if (!authority.ok || authority.host !== hostResult.host || portsDiffer) {
      return {
        ok: false,
        reason: "host-mismatch",
        detail: "absolute-form URL names a different host than the Host header",
      };
    }
    pathAndQuery = abs[3] === "" ? "/" : abs[3]!;
    if (!pathAndQuery.startsWith("/") && !pathAndQuery.startsWith("?")) {
      return { ok: false, reason: "path-invalid", detail: "malformed absolute URL" };
    }
    if (pathAndQuery.startsWith("?")) pathAndQuery = "/" + pathAndQuery;
  }
  if (pathAndQuery.includes("#"))
    return { ok: false, reason: "path-invalid", detail: "fragment in request target" };
  const q = pathAndQuery.indexOf("?");
  const rawPath = q === -1 ? pathAndQuery : pathAndQuery.slice(0, q);
  const query = q === -1 ? "" : pathAndQuery.slice(q);
  const path = canonicalPath(rawPath);
  if (!path.ok) return path;
  return { ok: true, host: hostResult.host, port: hostResult.port, path: path.path, query };
}

/**
 * A path that is already canonical: "/" or "/"-separated non-empty segments of
 * PLAIN_SEGMENT characters (no "%", ";" or "\\"), an optional trailing "/", and no "."
 * or ".." segment (DOT_SEGMENT). Decoding, resolving and re-encoding leave it as it is.
 */
const CANONICAL_PATH = /^\/(?:[A-Za-z0-9\-_.!~*'()@:,+=$&]+\/)*[A-Za-z0-9\-_.!~*'()@:,+=$&]*$/;
const DOT_SEGMENT = /\/\.\.?(?:\/|$)/;

/** Canonical path: decoded once, dot-segments resolved, duplicate slashes collapsed, re-encoded. */
export function canonicalPath(
  raw: string,
): { ok: true; path: string } | { ok: false; reason: CanonicalRefusal; detail: string } {
  // The usual request: nothing to decode or resolve (same answer as below; tested).
  if (CANONICAL_PATH.test(raw) && !DOT_SEGMENT.test(raw)) return { ok: true, path: raw };
  return canonicalPathGeneral(raw);
}

/** `canonicalPath` without the fast path (exported for the equivalence test). */
export function canonicalPathGeneral(
  raw: string,
): { ok: true; path: string } | { ok: false; reason: CanonicalRefusal; detail: string } {
  if (!raw.startsWith("/"))
    return { ok: false, reason: "path-invalid", detail: "path must start with /" };
  if (raw.includes("\\"))
    return { ok: false, reason: "path-ambiguous", detail: "backslash in path" };
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (/[\x00-\x20\x7f]/.test(raw))
    return { ok: false, reason: "path-invalid", detail: "control character or space in path" };
  if (/%(?![0-9a-fA-F]{2})/.test(raw))
    return { ok: false, reason: "path-invalid", detail: "malformed percent-encoding" };
  // Encoded separators and NUL change meaning between hops: refuse them.
  if (/%2f|%5c|%00/i.test(raw))
    return {
      ok: false,
      reason: "path-ambiguous",
      detail: "encoded slash, backslash or NUL in path",
    };
  if (raw.includes(";"))
    return { ok: false, reason: "path-ambiguous", detail: "path parameters (;) are not allowed" };
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    return { ok: false, reason: "path-invalid", detail: "percent-encoding is not valid UTF-8" };
  }
  // Decoding once must leave nothing that decodes again (double encoding).
  if (/%[0-9a-fA-F]{2}/.test(decoded))
    return { ok: false, reason: "path-ambiguous", detail: "double percent-encoding" };
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (/[\x00-\x1f\x7f\\]/.test(decoded))
    return {
      ok: false,
      reason: "path-ambiguous",
      detail: "control character or backslash after decoding",
    };
  if (decoded.includes(";"))
    return { ok: false, reason: "path-ambiguous", detail: "encoded path parameter (;)" };
  const out: string[] = [];
  const segments = decoded.split("/");
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === "" && i < segments.length - 1) continue; // duplicate slash
    if (s === ".") continue;
    if (s === "..") {
      if (out.length === 0)
        return { ok: false, reason: "path-ambiguous", detail: "'..' above the root" };
      out.pop();
      continue;
    }
    out.push(s);
  }
  const trailing =
    decoded.length > 1 && decoded.endsWith("/") && out.length > 0 && out[out.length - 1] !== "";
  let path = "/" + out.map(encodeSegment).join("/");
  if (trailing) path += "/";
  return { ok: true, path };
}

// Characters a canonical segment keeps as they are (encodeSegment's output alphabet
// minus "%"): a segment made only of these is returned unchanged, without encoding.
const PLAIN_SEGMENT = /^[A-Za-z0-9\-_.!~*'()@:,+=$&]*$/;

function encodeSegment(s: string): string {
  if (PLAIN_SEGMENT.test(s)) return s;
  return encodeURIComponent(s)
    .replace(/%40/g, "@")
    .replace(/%3A/g, ":")
    .replace(/%2C/g, ",")
    .replace(/%2B/g, "+")
    .replace(/%3D/g, "=")
    .replace(/%24/g, "$")
    .replace(/%26/g, "&")
    .replace(/%21/g, "!")
    .replace(/%27/g, "'")
    .replace(/%28/g, "(")
    .replace(/%29/g, ")")
    .replace(/%2A/g, "*");
}
