import { randomBytes, sign, type KeyObject } from "node:crypto";
import { SshWriter } from "./ssh-wire.js";
import type { SshPublicKey } from "./ssh-key.js";

/** PROTOCOL.certkeys: SSH_CERT_TYPE_USER = 1, SSH_CERT_TYPE_HOST = 2. */
export type SshCertType = "user" | "host";

/** The standard user extensions OpenSSH's ssh-keygen grants by default. */
export const DEFAULT_USER_EXTENSIONS = [
  "permit-X11-forwarding",
  "permit-agent-forwarding",
  "permit-port-forwarding",
  "permit-pty",
  "permit-user-rc",
] as const;

export interface SshCertTemplate {
  key: SshPublicKey;
  serial: bigint;
  type: SshCertType;
  keyId: string;
  principals: readonly string[];
  /** Seconds since the epoch. */
  validAfter: bigint;
  validBefore: bigint;
  /** Critical options (user certs): `force-command`, `source-address`. */
  criticalOptions: Readonly<Record<string, string>>;
  /** Extension names (all carry empty data). */
  extensions: readonly string[];
}

export interface SshCa {
  privateKey: KeyObject;
  /** Ed25519 public key blob. */
  publicBlob: Buffer;
}

/**
 * Encodes and signs an OpenSSH certificate per PROTOCOL.certkeys, with an Ed25519 CA.
 * Returns the certificate blob; `${type}-cert-v01@openssh.com base64` is its file form.
 */
export function buildSshCertificate(
  ca: SshCa,
  t: SshCertTemplate,
  nonce: Buffer = randomBytes(32),
): Buffer {
  const principals = new SshWriter();
  for (const p of t.principals) principals.string(p);
  // PROTOCOL.certkeys: options and extensions are lexically ordered by name, each at most once.
  const critical = new SshWriter();
  for (const name of Object.keys(t.criticalOptions).sort()) {
    critical.string(name).string(new SshWriter().string(t.criticalOptions[name]!).toBuffer());
  }
  const extensions = new SshWriter();
  for (const name of [...new Set(t.extensions)].sort()) extensions.string(name).string("");
  const body = new SshWriter()
    .string(`${t.key.type}-cert-v01@openssh.com`)
    .string(nonce)
    .raw(t.key.fields)
    .uint64(t.serial)
    .uint32(t.type === "user" ? 1 : 2)
    .string(t.keyId)
    .string(principals.toBuffer())
    .uint64(t.validAfter)
    .uint64(t.validBefore)
    .string(critical.toBuffer())
    .string(extensions.toBuffer())
    .string("")
    .string(ca.publicBlob)
    .toBuffer();
  const signature = sign(null, body, ca.privateKey);
  return Buffer.concat([
    body,
    new SshWriter()
      .string(new SshWriter().string("ssh-ed25519").string(signature).toBuffer())
      .toBuffer(),
  ]);
}

/** The one-line file form of a certificate (`…-cert.pub`). */
export function sshCertLine(cert: Buffer, keyType: string, comment: string): string {
  return `${keyType}-cert-v01@openssh.com ${cert.toString("base64")} ${comment}`.trimEnd();
}
