import { createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { ZtError } from "../core/errors.js";
import { readDerChildren, pemOrDer } from "./der.js";
import { formatIpAddress } from "./ip-address.js";

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

/**
 * Why an RSA public exponent is unusable, or null. CA/B Baseline Requirements §6.1.6: odd
 * and at least 3. With e = 1 every padded digest is its own signature, so a CSR's
 * self-signature (or a renewal proof) would prove nothing; an even e has no private key.
 */
export function rsaExponentProblem(e: bigint | undefined): string | null {
  if (e === undefined || e < 3n || e % 2n === 0n)
    return `the public exponent must be odd and at least 3 (65537 is usual), got ${e ?? "none"}`;
  return null;
}

/** Classifies a subject public key; refuses anything but P-256/P-384, RSA ≥ 2048 bits (odd e ≥ 3), Ed25519. */
export function classifyKey(key: KeyObject): SubjectKeyType {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === "ec") {
    if (details.namedCurve === "prime256v1") return "ec-p256";
    if (details.namedCurve === "secp384r1") return "ec-p384";
  } else if (type === "rsa") {
    const bits = details.modulusLength ?? 0;
    if (bits < 2048 || bits > 8192)
      throw new ZtError("ZT_PKI_KEY_INVALID", `RSA keys must be 2048 to 8192 bits, got ${bits}`, {
        reason: "key-size",
      });
    const problem = rsaExponentProblem(details.publicExponent);
    if (problem)
      throw new ZtError("ZT_PKI_KEY_INVALID", `RSA key: ${problem}`, { reason: "key-exponent" });
    return "rsa";
  } else if (type === "ed25519") {
    return "ed25519";
  }
  throw new ZtError(
    "ZT_PKI_KEY_INVALID",
    `unsupported key type ${type ?? "unknown"}${details.namedCurve ? ` (${details.namedCurve})` : ""}: use ECDSA P-256`,
    { reason: "key-type" },
  );
}

/**
 * The name `zt cert list` shows for a subject key of `type`: the type itself, with an RSA
 * key's modulus size (`rsa-2048`).
 */
export function keyTypeName(type: SubjectKeyType, key: KeyObject): string {
  return type === "rsa" ? `rsa-${key.asymmetricKeyDetails?.modulusLength ?? 0}` : type;
}

/** DER prefixes of P-256 / P-384 SubjectPublicKeyInfo with an uncompressed point (RFC 5480). */
const EC_SPKI_PREFIXES = [
  {
    type: "ec-p256" as const,
    crv: "P-256",
    size: 32,
    prefix: Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"),
  },
  {
    type: "ec-p384" as const,
    crv: "P-384",
    size: 48,
    prefix: Buffer.from("3076301006072a8648ce3d020106052b81040022036200" + "04", "hex"),
  },
];

/**
 * Hot path: OpenSSL 3 decodes an SPKI through its generic decoder chain, which costs
 * about twice a JWK import of the same point, so the common EC keys are imported from
 * their coordinates (still validated on the curve by OpenSSL). Anything else: null.
 */
function importEcSpki(spki: Buffer): { key: KeyObject; type: SubjectKeyType } | null {
  for (const c of EC_SPKI_PREFIXES) {
    if (
      spki.length !== c.prefix.length + 2 * c.size ||
      !spki.subarray(0, c.prefix.length).equals(c.prefix)
    )
      continue;
    const x = spki.subarray(c.prefix.length, c.prefix.length + c.size).toString("base64url");
    const y = spki.subarray(c.prefix.length + c.size).toString("base64url");
    return {
      key: createPublicKey({ key: { kty: "EC", crv: c.crv, x, y }, format: "jwk" }),
      type: c.type,
    };
  }
  return null;
}

/** Signature algorithms a CSR may use, by AlgorithmIdentifier OID (hex of the OID's content). */
const SIGNATURE_OIDS: Record<string, { name: "ECDSA" | "RSA" | "Ed25519"; hash: string | null }> = {
  "2a8648ce3d040302": { name: "ECDSA", hash: "sha256" },
  "2a8648ce3d040303": { name: "ECDSA", hash: "sha384" },
  "2a8648ce3d040304": { name: "ECDSA", hash: "sha512" },
  "2a864886f70d01010b": { name: "RSA", hash: "sha256" },
  "2a864886f70d01010c": { name: "RSA", hash: "sha384" },
  "2a864886f70d01010d": { name: "RSA", hash: "sha512" },
  "2b6570": { name: "Ed25519", hash: null },
};

function signatureAlgorithm(algId: Buffer): {
  name: "ECDSA" | "RSA" | "Ed25519";
  hash: string | null;
} {
  const [oid] = readDerChildren(algId);
  const alg = oid && oid.tag === 0x06 ? SIGNATURE_OIDS[oid.content.toString("hex")] : undefined;
  if (!alg)
    throw invalid(
      "CSR signature algorithm is not supported (use ECDSA with SHA-256)",
      "signature-algorithm",
    );
  return alg;
}

function hashFor(
  alg: { name: string; hash: string | null },
  keyType: SubjectKeyType,
): string | null {
  if (alg.name === "ECDSA" && keyType.startsWith("ec-")) return alg.hash;
  if (alg.name === "RSA" && keyType === "rsa") return alg.hash;
  if (alg.name === "Ed25519" && keyType === "ed25519") return null;
  throw invalid(
    `CSR signature algorithm ${alg.name} does not fit its ${keyType} key`,
    "signature-algorithm",
  );
}

const OID_EXTENSION_REQUEST = "2a864886f70d01090e";
const OID_SAN = "551d11";

/** The GeneralNames of a subjectAltName in the CSR's extensionRequest attribute (RFC 2985 §5.4.2). */
function requestedSans(attributes: Buffer) {
  for (const attr of readDerChildren(attributes)) {
    const [type, values] = readDerChildren(attr.content);
    if (!type || type.tag !== 0x06 || type.content.toString("hex") !== OID_EXTENSION_REQUEST)
      continue;
    if (!values || values.tag !== 0x31)
      throw invalid("CSR extensionRequest is malformed", "der-malformed");
    const [extensions] = readDerChildren(values.content);
    if (!extensions || extensions.tag !== 0x30)
      throw invalid("CSR extensionRequest is malformed", "der-malformed");
    for (const ext of readDerChildren(extensions.content)) {
      const fields = readDerChildren(ext.content);
      const oid = fields[0];
      const value = fields[fields.length - 1];
      if (!oid || oid.tag !== 0x06 || !value || value.tag !== 0x04)
        throw invalid("CSR extension is malformed", "der-malformed");
      if (oid.content.toString("hex") !== OID_SAN) continue;
      const [names] = readDerChildren(value.content);
      if (!names || names.tag !== 0x30)
        throw invalid("CSR subjectAltName is malformed", "san-malformed");
      return readDerChildren(names.content);
    }
  }
  return [];
}

/** An iPAddress GeneralName as text (IPv6 in RFC 5952 compressed form). */
function formatIp(b: Buffer): string {
  const text = formatIpAddress(b);
  if (text === undefined) throw invalid("CSR iPAddress SAN must be 4 or 16 bytes", "san-malformed");
  return text;
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

  const alg = signatureAlgorithm(parts[1]!.content);
  // CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes [0] }
  const cri = readDerChildren(parts[0]!.content);
  if (
    cri.length !== 4 ||
    cri[0]!.tag !== 0x02 ||
    cri[1]!.tag !== 0x30 ||
    cri[2]!.tag !== 0x30 ||
    cri[3]!.tag !== 0xa0
  ) {
    throw invalid("CSR info does not have the PKCS#10 structure", "der-malformed");
  }
  if (cri[0]!.content.length !== 1 || cri[0]!.content[0] !== 0)
    throw invalid("CSR version must be 0 (v1)", "der-malformed");
  const spki = Buffer.from(cri[2]!.whole);
  let publicKey: KeyObject;
  let keyType: SubjectKeyType;
  try {
    const fast = importEcSpki(spki);
    publicKey = fast?.key ?? createPublicKey({ key: spki, format: "der", type: "spki" });
    keyType = fast?.type ?? classifyKey(publicKey);
  } catch (e) {
    if (e instanceof ZtError) throw e;
    throw new ZtError("ZT_PKI_KEY_INVALID", "CSR public key is not a valid key", {
      reason: "key-malformed",
    });
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
  for (const name of requestedSans(cri[3]!.content)) {
    if (name.tag === 0x86) uris.push(name.content.toString("latin1"));
    else if (name.tag === 0x82) dnsNames.push(name.content.toString("latin1"));
    else if (name.tag === 0x87) ips.push(formatIp(name.content));
    else
      throw invalid(
        `CSR asks for an unsupported SAN type (tag 0x${name.tag.toString(16)})`,
        "san-type",
      );
  }
  return { der, spki, publicKey, keyType, uris, dnsNames, ips };
}
