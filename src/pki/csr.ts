import { createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { ZtError } from "../core/errors.js";
import { readDerChildren, pemOrDer } from "./der.js";
import { x509 } from "./x509-lib.js";

/** The largest CSR we read (a P-256 CSR with a few SANs is ~500 bytes). */
export const MAX_CSR_BYTES = 16 * 1024;

export type SubjectKeyType = "ec-p256" | "ec-p384" | "rsa" | "ed25519";

/** What a verified CSR tells us: the key it proves possession of, and what it asks for. */
export interface ParsedCsr {
  der: Buffer;
  spki: Buffer;
  publicKey: KeyObject;
  keyType: SubjectKeyType;
  /** URI SANs requested (the CA decides; these are only checked against what is allowed). */
  uris: string[];
  dnsNames: string[];
  ips: string[];
}

function invalid(message: string, reason: string): ZtError {
  return new ZtError("ZT_PKI_CSR_INVALID", message, { reason });
}

/** Classifies a subject public key; refuses anything but P-256/P-384, RSA ≥ 2048 bits, Ed25519. */
export function classifyKey(key: KeyObject): SubjectKeyType {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === "ec") {
    if (details.namedCurve === "prime256v1") return "ec-p256";
    if (details.namedCurve === "secp384r1") return "ec-p384";
  } else if (type === "rsa") {
    const bits = details.modulusLength ?? 0;
    if (bits >= 2048 && bits <= 8192) return "rsa";
    throw new ZtError("ZT_PKI_KEY_INVALID", `RSA keys must be 2048 to 8192 bits, got ${bits}`, {
      reason: "key-size",
    });
  } else if (type === "ed25519") {
    return "ed25519";
  }
  throw new ZtError(
    "ZT_PKI_KEY_INVALID",
    `unsupported key type ${type ?? "unknown"}${details.namedCurve ? ` (${details.namedCurve})` : ""}: use ECDSA P-256`,
    { reason: "key-type" },
  );
}

function hashFor(
  alg: { name: string; hash?: { name: string } },
  keyType: SubjectKeyType,
): string | null {
  const hash = alg.hash?.name;
  const h =
    hash === "SHA-256"
      ? "sha256"
      : hash === "SHA-384"
        ? "sha384"
        : hash === "SHA-512"
          ? "sha512"
          : undefined;
  if (alg.name === "ECDSA" && keyType.startsWith("ec-") && h) return h;
  if (alg.name === "RSASSA-PKCS1-v1_5" && keyType === "rsa" && h) return h;
  if (alg.name === "Ed25519" && keyType === "ed25519") return null;
  throw invalid(
    `CSR signature algorithm ${alg.name}${hash ? `/${hash}` : ""} does not fit its ${keyType} key`,
    "signature-algorithm",
  );
}

/**
 * Parses a PKCS#10 CSR (PEM or DER) and verifies its self-signature, which proves the
 * requester holds the private key. Extensions other than the SANs are ignored: the CA
 * decides them. Throws ZT_PKI_CSR_INVALID / ZT_PKI_KEY_INVALID with a reason.
 */
export function parseCsr(input: string | Uint8Array): ParsedCsr {
  const size = typeof input === "string" ? Buffer.byteLength(input) : input.length;
  if (size > MAX_CSR_BYTES) {
    throw new ZtError(
      "ZT_PAYLOAD_TOO_LARGE",
      `CSR is ${size} bytes; the limit is ${MAX_CSR_BYTES}`,
      {
        reason: "csr-too-large",
      },
    );
  }
  const der = pemOrDer(input, "CERTIFICATE REQUEST");
  // RFC 2986 §4: CertificationRequest ::= SEQUENCE { info, signatureAlgorithm, signature BIT STRING }
  const outer = readDerChildren(der);
  if (outer.length !== 1 || outer[0]!.tag !== 0x30 || outer[0]!.whole.length !== der.length) {
    throw invalid("CSR is not a single DER SEQUENCE", "der-malformed");
  }
  const parts = readDerChildren(outer[0]!.content);
  if (
    parts.length !== 3 ||
    parts[0]!.tag !== 0x30 ||
    parts[1]!.tag !== 0x30 ||
    parts[2]!.tag !== 0x03
  ) {
    throw invalid("CSR does not have the PKCS#10 structure", "der-malformed");
  }
  const info = parts[0]!.whole;
  const sigBits = parts[2]!.content;
  if (sigBits.length < 2 || sigBits[0] !== 0)
    throw invalid("CSR signature is not a whole-byte BIT STRING", "der-malformed");
  const signature = sigBits.subarray(1);

  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch {
    throw invalid("CSR could not be parsed as PKCS#10", "der-malformed");
  }
  const spki = Buffer.from(csr.publicKey.rawData);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch {
    throw new ZtError("ZT_PKI_KEY_INVALID", "CSR public key is not a valid key", {
      reason: "key-malformed",
    });
  }
  const keyType = classifyKey(publicKey);
  let alg: { name: string; hash?: { name: string } };
  try {
    alg = csr.signatureAlgorithm as { name: string; hash?: { name: string } };
  } catch {
    throw invalid("CSR signature algorithm is not supported", "signature-algorithm");
  }
  const hash = hashFor(alg, keyType);
  const ok = cryptoVerify(
    hash,
    info,
    keyType.startsWith("ec-") ? { key: publicKey, dsaEncoding: "der" } : publicKey,
    signature,
  );
  if (!ok)
    throw invalid(
      "CSR self-signature does not verify: the requester must sign with its own key",
      "bad-signature",
    );

  const uris: string[] = [];
  const dnsNames: string[] = [];
  const ips: string[] = [];
  try {
    const ext = csr.getExtension("2.5.29.17");
    const san = ext ? new x509.SubjectAlternativeNameExtension(ext.rawData) : null;
    for (const n of san?.names.items ?? []) {
      if (n.type === "url") uris.push(n.value);
      else if (n.type === "dns") dnsNames.push(n.value);
      else if (n.type === "ip") ips.push(n.value);
      else throw invalid(`CSR asks for an unsupported SAN type ${n.type}`, "san-type");
    }
  } catch (e) {
    if (e instanceof ZtError) throw e;
    throw invalid("CSR subjectAltName request could not be parsed", "san-malformed");
  }
  return { der, spki, publicKey, keyType, uris, dnsNames, ips };
}
