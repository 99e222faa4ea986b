import { X509Certificate } from "node:crypto";
import { rsaExponentProblem } from "./csr.js";
import { spiffeIdProblem } from "./spiffe-id.js";

/** The verdict on a presented client certificate. */
export type ClientCertResult =
  | { ok: true; spiffeId: string; serial: string; notAfterMs: number }
  | {
      ok: false;
      reason:
        | "cert-revoked"
        | "cert-expired"
        | "cert-untrusted"
        | "cert-key-exponent"
        | "spiffe-id-invalid"
        | "wrong-trust-domain";
    };

/** What the verifier needs to know: trusted issuers, the trust domain, the deny list. */
export interface ClientCertTrust {
  trustDomain: string;
  /** Intermediates (already verified to a root) that may have issued SVIDs. */
  issuers: readonly X509Certificate[];
  isRevoked(serialHex: string): boolean;
}

interface ParsedLeaf {
  problem:
    "cert-untrusted" | "cert-key-exponent" | "spiffe-id-invalid" | "wrong-trust-domain" | null;
  spiffeId: string;
  serial: string;
  notBeforeMs: number;
  notAfterMs: number;
}

const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/**
 * Verifies a client certificate (an X.509-SVID) against zt's CA: issued by a trusted
 * intermediate, not a CA, clientAuth EKU, an RSA key's exponent odd and at least 3,
 * exactly one URI SAN that is a SPIFFE ID in our trust domain, inside its validity
 * window at `nowMs`, and not on the deny list.
 * Pure apart from a parse cache; a failure is a value, never an exception.
 */
export class ClientCertVerifier {
  readonly #cache = new Map<string, ParsedLeaf>();
  readonly #maxCache: number;

  constructor(maxCache = 10_000) {
    this.#maxCache = maxCache;
  }

  verify(trust: ClientCertTrust, der: Uint8Array | undefined, nowMs: number): ClientCertResult {
    if (!der || der.length === 0) return { ok: false, reason: "cert-untrusted" };
    const key = Buffer.from(der).toString("base64");
    let leaf = this.#cache.get(key);
    if (!leaf) {
      leaf = parseLeaf(trust, der);
      if (this.#cache.size >= this.#maxCache) this.#cache.clear();
      this.#cache.set(key, leaf);
    }
    if (leaf.problem) return { ok: false, reason: leaf.problem };
    if (nowMs < leaf.notBeforeMs || nowMs >= leaf.notAfterMs)
      return { ok: false, reason: "cert-expired" };
    if (trust.isRevoked(leaf.serial)) return { ok: false, reason: "cert-revoked" };
    return { ok: true, spiffeId: leaf.spiffeId, serial: leaf.serial, notAfterMs: leaf.notAfterMs };
  }

  /** Forget cached parses (after CA rotation). */
  clear(): void {
    this.#cache.clear();
  }
}

function parseLeaf(trust: ClientCertTrust, der: Uint8Array): ParsedLeaf {
  const fail = (problem: NonNullable<ParsedLeaf["problem"]>): ParsedLeaf => ({
    problem,
    spiffeId: "",
    serial: "",
    notBeforeMs: 0,
    notAfterMs: 0,
  });
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    return fail("cert-untrusted");
  }
  const issuer = trust.issuers.find((i) => cert.checkIssued(i) && cert.verify(i.publicKey));
  if (!issuer) return fail("cert-untrusted");
  if (cert.ca) return fail("cert-untrusted");
  const eku = cert.keyUsage;
  if (eku && !eku.includes(CLIENT_AUTH)) return fail("cert-untrusted");
  // CA/B BR §6.1.6, as issuance checks it: an SVID certified before zt refused such keys
  // must not outlive that refusal. With e = 1 its handshake signature proves nothing.
  const key = cert.publicKey;
  if (
    key.asymmetricKeyType === "rsa" &&
    rsaExponentProblem(key.asymmetricKeyDetails?.publicExponent) !== null
  )
    return fail("cert-key-exponent");
  const uris = sanUris(cert.subjectAltName);
  // SPIFFE X509-SVID §2: exactly one URI SAN.
  if (uris.length !== 1) return fail("spiffe-id-invalid");
  const uri = uris[0]!;
  if (spiffeIdProblem(uri) !== null) return fail("spiffe-id-invalid");
  const td = uri.slice("spiffe://".length).split("/")[0];
  if (td !== trust.trustDomain) return fail("wrong-trust-domain");
  return {
    problem: null,
    spiffeId: uri,
    serial: cert.serialNumber.toLowerCase().replace(/^(00)+/, ""),
    notBeforeMs: Date.parse(cert.validFrom),
    notAfterMs: Date.parse(cert.validTo),
  };
}

/** URI entries of Node's subjectAltName string (`DNS:a, URI:spiffe://…`). */
function sanUris(san: string | undefined): string[] {
  if (!san) return [];
  const out: string[] = [];
  for (const part of san.split(", ")) {
    if (part.startsWith("URI:")) {
      let v = part.slice(4);
      // Node quotes values with special characters as JSON strings; such a value is no SPIFFE ID.
      if (v.startsWith('"')) v = "\u0000";
      out.push(v);
    }
  }
  return out;
}
