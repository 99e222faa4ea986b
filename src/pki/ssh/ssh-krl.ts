import { SshWriter } from "./ssh-wire.js";

/** PROTOCOL.krl section and sub-section types we write. */
const KRL_SECTION_CERTIFICATES = 1;
const KRL_SECTION_EXPLICIT_KEY = 2;
const KRL_SECTION_CERT_SERIAL_LIST = 0x20;
const KRL_MAGIC = Buffer.from("SSHKRL\n\0", "latin1");
const KRL_FORMAT_VERSION = 1;

export interface KrlInput {
  /** Increases with every change. */
  version: bigint;
  /** Seconds since the epoch. */
  generatedAt: bigint;
  comment: string;
  /** Revoked serials, per CA public key blob. */
  certificates: readonly { caBlob: Buffer; serials: readonly bigint[] }[];
  /** Plain public key blobs revoked outright (with every certificate for them). */
  keyBlobs: readonly Buffer[];
}

/**
 * Writes a binary OpenSSH KRL (PROTOCOL.krl) that sshd reads with `RevokedKeys`:
 * a certificate section listing revoked serials for our CA, and an explicit-key section.
 * Unsigned: OpenSSH ≥ 9.4 refuses KRL signatures; distribute it over a trusted channel.
 */
export function buildKrl(input: KrlInput): Buffer {
  const w = new SshWriter()
    .raw(KRL_MAGIC)
    .uint32(KRL_FORMAT_VERSION)
    .uint64(input.version)
    .uint64(input.generatedAt)
    .uint64(0n)
    .string("")
    .string(input.comment);
  for (const { caBlob, serials } of input.certificates) {
    if (serials.length === 0) continue;
    const list = new SshWriter();
    for (const s of [...new Set(serials)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
      list.uint64(s);
    const section = new SshWriter()
      .string(caBlob)
      .string("")
      .byte(KRL_SECTION_CERT_SERIAL_LIST)
      .string(list.toBuffer());
    w.byte(KRL_SECTION_CERTIFICATES).string(section.toBuffer());
  }
  if (input.keyBlobs.length > 0) {
    const keys = new SshWriter();
    for (const b of input.keyBlobs) keys.string(b);
    w.byte(KRL_SECTION_EXPLICIT_KEY).string(keys.toBuffer());
  }
  return w.toBuffer();
}
