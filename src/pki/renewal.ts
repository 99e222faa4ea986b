import { createPrivateKey, sign, webcrypto, X509Certificate, type KeyObject } from "node:crypto";
import { ZtError } from "../core/errors.js";
import { pemCertificates, toPem } from "./der.js";
import { x509 } from "./x509-lib.js";
import { EC_P256_KEYGEN, EC_P256_SHA256 } from "./x509-build.js";

/** Domain separation for renewal proofs: the old key signs this prefix + the new CSR. */
export const RENEW_PROOF_PREFIX = Buffer.from("zt-svid-renew-v1\0", "latin1");

export function renewProofInput(csrDer: Uint8Array): Buffer {
  return Buffer.concat([RENEW_PROOF_PREFIX, csrDer]);
}

/**
 * When to renew a certificate: at half its lifetime, moved by up to ±10 % of the
 * lifetime (`random` in [0, 1)) so a fleet issued together does not renew together.
 * Pure: the caller passes the randomness.
 */
export function nextRenewalAtMs(notBeforeMs: number, notAfterMs: number, random: number): number {
  const life = Math.max(0, notAfterMs - notBeforeMs);
  const jitter = (random * 2 - 1) * 0.1 * life;
  return Math.round(notBeforeMs + life / 2 + jitter);
}

/** What `zt cert renew` sends: a new key, its CSR, and a proof by the current key. */
export interface RenewalRequest {
  keyPem: string;
  csrPem: string;
  csrDer: Buffer;
  proof: Buffer;
  currentCertDer: Buffer;
  spiffeId: string;
  dnsNames: string[];
}

/** Reads the current SVID (first certificate of a chain file) and what it names. */
export function describeSvid(chainPem: string): {
  der: Buffer;
  spiffeId: string;
  /** DNS names and IP addresses, as text (`dnsNames`) and with their SAN type (`names`). */
  dnsNames: string[];
  names: { type: "dns" | "ip"; value: string }[];
  notBeforeMs: number;
  notAfterMs: number;
} {
  const der = pemCertificates(chainPem)[0];
  if (!der) throw new ZtError("ZT_BAD_REQUEST", "no certificate found in the --cert file");
  const cert = new X509Certificate(der);
  const names = (cert.subjectAltName ?? "").split(", ");
  const uri = names.find((n) => n.startsWith("URI:"));
  if (!uri)
    throw new ZtError(
      "ZT_PKI_SPIFFE_ID_INVALID",
      "the --cert file is not an X.509-SVID (no URI SAN)",
    );
  // The type comes from the certificate, never from how the value looks: a DNS name may
  // be all digits and dots (999.1.1.1), which no IP address parser accepts.
  const typed = names.flatMap((n): { type: "dns" | "ip"; value: string }[] =>
    n.startsWith("DNS:")
      ? [{ type: "dns", value: n.slice(4) }]
      : n.startsWith("IP Address:")
        ? [{ type: "ip", value: n.slice(11) }]
        : [],
  );
  return {
    der,
    spiffeId: uri.slice(4),
    dnsNames: typed.map((n) => n.value),
    names: typed,
    notBeforeMs: Date.parse(cert.validFrom),
    notAfterMs: Date.parse(cert.validTo),
  };
}

/** Builds a renewal request with a fresh P-256 key (key rotation on every renewal). */
export async function buildRenewalRequest(
  chainPem: string,
  currentKey: string | KeyObject,
): Promise<RenewalRequest> {
  const current = describeSvid(chainPem);
  const keys = (await webcrypto.subtle.generateKey(EC_P256_KEYGEN, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const names: { type: "url" | "dns" | "ip"; value: string }[] = [
    { type: "url", value: current.spiffeId },
  ];
  names.push(...current.names);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "O=zt SVID",
    keys,
    signingAlgorithm: EC_P256_SHA256,
    extensions: [new x509.SubjectAlternativeNameExtension(names)],
  });
  const csrDer = Buffer.from(csr.rawData);
  const oldKey = typeof currentKey === "string" ? createPrivateKey(currentKey) : currentKey;
  const type = oldKey.asymmetricKeyType;
  const hash =
    type === "ed25519"
      ? null
      : oldKey.asymmetricKeyDetails?.namedCurve === "secp384r1"
        ? "sha384"
        : "sha256";
  const proof = sign(
    hash,
    renewProofInput(csrDer),
    type === "ec" ? { key: oldKey, dsaEncoding: "der" } : oldKey,
  );
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  return {
    keyPem: toPem(pkcs8, "PRIVATE KEY"),
    csrPem: toPem(csrDer, "CERTIFICATE REQUEST"),
    csrDer,
    proof,
    currentCertDer: current.der,
    spiffeId: current.spiffeId,
    dnsNames: current.dnsNames,
  };
}
