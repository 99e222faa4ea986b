import { ZtError } from "../core/errors.js";

/** A parsed SPIFFE ID: `spiffe://<trustDomain><path>`. */
export interface SpiffeId {
  trustDomain: string;
  /** "" or "/seg/seg…" */
  path: string;
  /** The canonical string form. */
  uri: string;
}

const TD_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;
const MAX_URI = 2048;
const MAX_TD = 255;

/** Why a string is not a SPIFFE ID (stable kebab-case), or null when it is one. */
export function spiffeIdProblem(input: string): string | null {
  if (input.length > MAX_URI) return "too-long";
  // SPIFFE-ID §2: the scheme is exactly "spiffe" (lowercase), followed by "//".
  if (!input.startsWith("spiffe://")) return "scheme-not-spiffe";
  const rest = input.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const td = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "" : rest.slice(slash);
  if (td.length === 0) return "trust-domain-empty";
  if (td.length > MAX_TD) return "trust-domain-too-long";
  // §2.1: lowercase letters, digits, dot, dash, underscore; no port, userinfo, percent-encoding.
  if (!TD_CHARS.test(td)) return "trust-domain-invalid-characters";
  if (path === "") return null;
  // §2.2: segments are non-empty, not "." or "..", no trailing slash, no query or fragment.
  const segments = path.slice(1).split("/");
  for (const s of segments) {
    if (s.length === 0) return "path-segment-empty";
    if (s === "." || s === "..") return "path-segment-dot";
    if (!SEGMENT_CHARS.test(s)) return "path-invalid-characters";
  }
  return null;
}

/**
 * Parses a SPIFFE ID, enforcing the SPIFFE-ID standard's syntax. Throws
 * ZT_PKI_SPIFFE_ID_INVALID with a reason such as `path-segment-dot`.
 *
 * @example parseSpiffeId("spiffe://example.test/ns/web") // { trustDomain: "example.test", path: "/ns/web", … }
 */
export function parseSpiffeId(input: string): SpiffeId {
  const problem = spiffeIdProblem(input);
  if (problem !== null) {
    throw new ZtError(
      "ZT_PKI_SPIFFE_ID_INVALID",
      `not a valid SPIFFE ID (${problem}): ${JSON.stringify(input.slice(0, 200))}`,
      {
        reason: problem,
      },
    );
  }
  const rest = input.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "" : rest.slice(slash);
  return { trustDomain, path, uri: input };
}

/** A workload SPIFFE ID must name a workload: a trust domain alone is not enough. */
export function parseWorkloadSpiffeId(input: string, trustDomain: string): SpiffeId {
  const id = parseSpiffeId(input);
  if (id.trustDomain !== trustDomain) {
    throw new ZtError(
      "ZT_PKI_SAN_NOT_ALLOWED",
      `SPIFFE ID ${input} is outside this CA's trust domain ${trustDomain}`,
      { reason: "wrong-trust-domain" },
    );
  }
  if (id.path === "") {
    throw new ZtError(
      "ZT_PKI_SPIFFE_ID_INVALID",
      `SPIFFE ID ${input} has no path: a workload ID needs one`,
      {
        reason: "path-empty",
      },
    );
  }
  return id;
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * Lowercases and checks a DNS name (wildcard only as the whole leftmost label). The last
 * label may not be all digits (RFC 1123 §2.1: a host name is never dotted-decimal), so a
 * mistyped address such as `999.1.1.1` is refused, not certified as a name.
 */
export function normaliseDnsName(input: string): string {
  const name = input.toLowerCase().replace(/\.$/, "");
  const labels = name.split(".");
  const ok =
    name.length > 0 &&
    name.length <= 253 &&
    labels.every((l, i) => DNS_LABEL.test(l) || (i === 0 && l === "*" && labels.length > 2));
  if (!ok || /^\d+$/.test(labels[labels.length - 1]!)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `not a valid DNS name: ${JSON.stringify(input.slice(0, 100))}${ok ? " (its last label is all digits; an IP address must be a valid one, e.g. 192.0.2.10)" : ""}`,
      {
        reason: "dns-name-invalid",
      },
    );
  }
  return name;
}
