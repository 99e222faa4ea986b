import { createHash, randomBytes, type webcrypto } from "node:crypto";
import { derInteger, readDerChildren } from "./der.js";
import { x509 } from "./x509-lib.js";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/**
 * Certificate building: data in, DER out. No clock, no store; the caller decides
 * every date and serial, so these functions are easy to test and to reason about.
 */

export const EC_P256_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;
export const EC_P256_KEYGEN = { name: "ECDSA", namedCurve: "P-256" } as const;

/** A CA able to sign: its certificate, its private key, its key identifier. */
export interface SigningCa {
  id: string;
  cert: x509.X509Certificate;
  der: Buffer;
  signingKey: CryptoKey;
  /** Subject key identifier (hex). */
  keyId: string;
  notAfterMs: number;
}

/**
 * A positive 128-bit random serial as lowercase hex, without leading zero bytes
 * (CA/B BR §7.1: at least 64 bits from a CSPRNG; SPIFFE asks for uniqueness).
 */
export function randomSerialHex(): string {
  const b = randomBytes(16);
  if (b[0] === 0) b[0] = 1;
  return b.toString("hex");
}

/** The serial as @peculiar/x509 wants it: DER INTEGER content bytes (a 0x00 keeps it positive). */
function serialForDer(hex: string): string {
  return Number.parseInt(hex.slice(0, 2), 16) >= 0x80 ? `00${hex}` : hex;
}

/** RFC 5280 §4.2.1.2 (1): SHA-1 of the subjectPublicKey BIT STRING's bits. */
export function keyIdentifier(spki: Uint8Array): string {
  const [seq] = readDerChildren(Buffer.from(spki));
  const parts = seq ? readDerChildren(seq.content) : [];
  const bits = parts[1];
  const material = bits && bits.tag === 0x03 ? bits.content.subarray(1) : Buffer.from(spki);
  return createHash("sha1").update(material).digest("hex");
}

export interface CaCertOptions {
  subject: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  spki: Uint8Array;
  /** Path length for intermediates (0: may sign leaves only). */
  pathLength?: number;
}

/** A self-signed root: CA, keyCertSign + cRLSign, only ever used to sign intermediates. */
export async function buildRootCert(
  options: CaCertOptions,
  keys: CryptoKeyPair,
): Promise<x509.X509Certificate> {
  const keyId = keyIdentifier(options.spki);
  return x509.X509CertificateGenerator.create({
    serialNumber: serialForDer(options.serial),
    subject: options.subject,
    issuer: options.subject,
    notBefore: options.notBefore,
    notAfter: options.notAfter,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    signingAlgorithm: EC_P256_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      new x509.SubjectKeyIdentifierExtension(keyId),
      new x509.AuthorityKeyIdentifierExtension(keyId),
    ],
  });
}

/** An intermediate signed by `issuer`: signs SVIDs and the CRL. */
export async function buildIntermediateCert(
  options: CaCertOptions,
  publicKey: CryptoKey,
  issuer: SigningCa,
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    serialNumber: serialForDer(options.serial),
    subject: options.subject,
    issuer: issuer.cert.subjectName,
    notBefore: options.notBefore,
    notAfter: options.notAfter,
    publicKey,
    signingKey: issuer.signingKey,
    signingAlgorithm: EC_P256_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(true, options.pathLength ?? 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      new x509.SubjectKeyIdentifierExtension(keyIdentifier(options.spki)),
      new x509.AuthorityKeyIdentifierExtension(issuer.keyId),
    ],
  });
}

/** Everything an X.509-SVID says. The CA fills it in; nothing comes from the CSR but the key. */
export interface SvidTemplate {
  serial: string;
  spiffeId: string;
  dnsNames: readonly string[];
  ips: readonly string[];
  notBefore: Date;
  notAfter: Date;
  /** SubjectPublicKeyInfo DER of the workload's key. */
  spki: Uint8Array;
}

/**
 * Builds an X.509-SVID per the SPIFFE X509-SVID standard: exactly one URI SAN (the
 * SPIFFE ID), optional DNS/IP SANs, cA=false, critical keyUsage digitalSignature,
 * EKU serverAuth + clientAuth, SKI and AKI.
 */
export async function buildSvid(issuer: SigningCa, t: SvidTemplate): Promise<Buffer> {
  const names: { type: "url" | "dns" | "ip"; value: string }[] = [
    { type: "url", value: t.spiffeId },
  ];
  for (const d of t.dnsNames) names.push({ type: "dns", value: d });
  for (const ip of t.ips) names.push({ type: "ip", value: ip });
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialForDer(t.serial),
    subject: "O=zt SVID",
    issuer: issuer.cert.subjectName,
    notBefore: t.notBefore,
    notAfter: t.notAfter,
    publicKey: t.spki,
    signingKey: issuer.signingKey,
    signingAlgorithm: EC_P256_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      // SPIFFE X509-SVID §4.3: leaf keyUsage MUST include digitalSignature, MUST NOT keyCertSign/cRLSign.
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(names, false),
      new x509.SubjectKeyIdentifierExtension(keyIdentifier(t.spki)),
      new x509.AuthorityKeyIdentifierExtension(issuer.keyId),
    ],
  });
  return Buffer.from(cert.rawData);
}

export interface CrlEntry {
  serial: string;
  revokedAt: Date;
  reason: x509.X509CrlReason;
}

/** A CRL signed by the issuing CA, with AKI and a CRL number (RFC 5280 §5.2.1, §5.2.3). */
export async function buildCrl(
  issuer: SigningCa,
  entries: readonly CrlEntry[],
  thisUpdate: Date,
  nextUpdate: Date,
  crlNumber: bigint,
): Promise<Buffer> {
  const crl = await x509.X509CrlGenerator.create({
    issuer: issuer.cert.subjectName,
    thisUpdate,
    nextUpdate,
    signingKey: issuer.signingKey,
    signingAlgorithm: EC_P256_SHA256,
    extensions: [
      new x509.AuthorityKeyIdentifierExtension(issuer.keyId),
      new x509.Extension("2.5.29.20", false, derInteger(crlNumber)),
    ],
    entries: entries.map((e) => ({
      serialNumber: serialForDer(e.serial),
      revocationDate: e.revokedAt,
      reason: e.reason,
    })),
  });
  return Buffer.from(crl.rawData);
}

/** Maps our reason words to RFC 5280 reason codes. */
export const REVOCATION_REASONS = {
  unspecified: x509.X509CrlReason.unspecified,
  "key-compromise": x509.X509CrlReason.keyCompromise,
  "ca-compromise": x509.X509CrlReason.cACompromise,
  "affiliation-changed": x509.X509CrlReason.affiliationChanged,
  superseded: x509.X509CrlReason.superseded,
  "cessation-of-operation": x509.X509CrlReason.cessationOfOperation,
  "privilege-withdrawn": x509.X509CrlReason.privilegeWithdrawn,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASONS;

/**
 * Whether a name is one of REVOCATION_REASONS' own keys: `name in` would take `toString`,
 * `constructor` or `__proto__`, names every object has, and put no reason code in the CRL.
 */
export function isRevocationReason(name: unknown): name is RevocationReason {
  return typeof name === "string" && Object.hasOwn(REVOCATION_REASONS, name);
}
