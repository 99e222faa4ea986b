import { sign, type KeyObject } from "node:crypto";
import { ZtError } from "../core/errors.js";
import { ipAddressBytes } from "./ip-address.js";
import { keyIdentifier } from "./x509-build.js";
import { x509 } from "./x509-lib.js";

/**
 * The issuance hot path, hand-written: an X.509-SVID's DER built from a fixed template
 * and signed with node:crypto directly. `buildSvid` (via @peculiar/x509) is the reference;
 * `svid-der.test.ts` proves both produce byte-identical TBSCertificates for the same input.
 */

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  if (n < 0x10000) return Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = content.length === 1 ? content[0]! : Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}

const hex = (h: string) => Buffer.from(h, "hex");

// Fixed pieces of every SVID (RFC 5280 §4.1, SPIFFE X509-SVID §4).
const VERSION_V3 = hex("a003020102");
const ECDSA_SHA256 = hex("300a06082a8648ce3d040302");
const SUBJECT = Buffer.from(new x509.Name("O=zt SVID").toArrayBuffer());
/** basicConstraints, critical, cA FALSE (empty SEQUENCE). */
const EXT_BASIC_CONSTRAINTS = hex("300c0603551d130101ff04023000");
/** keyUsage, critical, digitalSignature only. */
const EXT_KEY_USAGE = hex("300e0603551d0f0101ff040403020780");
/** extKeyUsage: serverAuth, clientAuth. */
const EXT_EKU = hex("301d0603551d250416301406082b0601050507030106082b06010505070302");
const OID_SAN = hex("0603551d11");
const OID_SKI = hex("0603551d0e");
const OID_AKI = hex("0603551d23");

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(d: Date): Buffer {
  const iso = d.toISOString();
  const compact = iso.slice(0, 19).replace(/[-:T]/g, "") + "Z";
  return d.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(compact.slice(2), "latin1"))
    : tlv(0x18, Buffer.from(compact, "latin1"));
}

function ipBytes(ip: string): Buffer {
  const b = ipAddressBytes(ip);
  // Callers pass names through splitNames; anything else here is a bug, never a guess.
  if (!b) throw new ZtError("ZT_BAD_REQUEST", `not an IP address: ${ip}`, { reason: "ip-invalid" });
  return b;
}

/** The issuing CA as the hot path needs it: raw subject, key id, a KeyObject. */
export interface FastIssuer {
  subjectDer: Buffer;
  keyId: string;
  privateKey: KeyObject;
}

export interface FastSvidInput {
  serial: string;
  spiffeId: string;
  dnsNames: readonly string[];
  ips: readonly string[];
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
}

/** The TBSCertificate of an SVID (exported for the equivalence test). */
export function svidTbs(issuer: FastIssuer, t: FastSvidInput): Buffer {
  let serial = hex(t.serial.length % 2 ? `0${t.serial}` : t.serial);
  if (serial[0]! & 0x80) serial = Buffer.concat([Buffer.from([0]), serial]);
  const names = [tlv(0x86, Buffer.from(t.spiffeId, "latin1"))];
  for (const d of t.dnsNames) names.push(tlv(0x82, Buffer.from(d, "latin1")));
  for (const ip of t.ips) names.push(tlv(0x87, ipBytes(ip)));
  const san = tlv(0x30, OID_SAN, tlv(0x04, tlv(0x30, ...names)));
  const ski = tlv(0x30, OID_SKI, tlv(0x04, tlv(0x04, hex(keyIdentifier(t.spki)))));
  const aki = tlv(0x30, OID_AKI, tlv(0x04, tlv(0x30, tlv(0x80, hex(issuer.keyId)))));
  return tlv(
    0x30,
    VERSION_V3,
    tlv(0x02, serial),
    ECDSA_SHA256,
    issuer.subjectDer,
    tlv(0x30, time(t.notBefore), time(t.notAfter)),
    SUBJECT,
    t.spki,
    tlv(0xa3, tlv(0x30, EXT_BASIC_CONSTRAINTS, EXT_KEY_USAGE, EXT_EKU, san, ski, aki)),
  );
}

/** Builds and signs an X.509-SVID (ECDSA P-256 / SHA-256 issuer). Synchronous. */
export function buildSvidFast(issuer: FastIssuer, t: FastSvidInput): Buffer {
  const tbs = svidTbs(issuer, t);
  const sig = sign("sha256", tbs, { key: issuer.privateKey, dsaEncoding: "der" });
  return tlv(0x30, tbs, ECDSA_SHA256, tlv(0x03, Buffer.from([0]), sig));
}
