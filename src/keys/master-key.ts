import { join } from "node:path";
import { ZtError } from "../core/errors.js";
import { fileExists, readPrivateFile, writePrivateFile } from "../core/secure-files.js";
import { generateMasterKey, SecretBox } from "../core/secret-box.js";

export interface MasterKeyOptions {
  dataDir: string;
  masterKeyFile?: string | undefined;
  /** Value of ZT_MASTER_KEY, if set (base64 or hex, 32 bytes). */
  envValue?: string | undefined;
  /** Create the key file when missing (zt init / zt up). */
  create?: boolean;
  /** `zt keys rotate-master` itself: a pending `<key file>.next` is its to finish. */
  rotating?: boolean;
}

/** The master key file these options name (ZT_MASTER_KEY aside). */
export function masterKeyFile(options: MasterKeyOptions): string {
  return options.masterKeyFile ?? join(options.dataDir, "master.key");
}

/** Where `zt keys rotate-master` keeps the new key until the store is re-sealed with it. */
export function pendingMasterKeyFile(file: string): string {
  return `${file}.next`;
}

/** A master key file's key (0600 checked), as a SecretBox. */
export function readMasterKeyFile(file: string): SecretBox {
  return new SecretBox(
    decodeKey(readPrivateFile(file, "master key file").toString("utf8"), `master key file ${file}`),
  );
}

/** A new random master key, as written to a key file. */
export function newMasterKeyText(): string {
  return generateMasterKey().toString("base64") + "\n";
}

/**
 * 32 bytes as 64 hex digits, or as canonical padded base64 (44 characters, e.g. the
 * output of `openssl rand -base64 32`). Node's base64 decoder skips what it does not
 * understand, so a passphrase of the right length would "decode" to 32 bytes: the text
 * must re-encode to itself.
 */
function decodeKey(text: string, where: string): Buffer {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, "hex");
  const buf = /^[A-Za-z0-9+/]{43}=$/.test(t) ? Buffer.from(t, "base64") : undefined;
  if (!buf || buf.length !== 32 || buf.toString("base64") !== t) {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `${where}: expected 32 random bytes as 64 hex digits or 44 characters of base64 ` +
        "(generate one with `openssl rand -base64 32`); a passphrase is not a key",
    );
  }
  return buf;
}

/**
 * The master key that encrypts private keys at rest: ZT_MASTER_KEY, else the
 * configured key file, else `<data_dir>/master.key`. A key file must be 0600.
 */
export function loadMasterKey(options: MasterKeyOptions): SecretBox {
  if (options.envValue) return new SecretBox(decodeKey(options.envValue, "ZT_MASTER_KEY"));
  const file = masterKeyFile(options);
  if (!options.rotating && fileExists(pendingMasterKeyFile(file)))
    throw new ZtError(
      "ZT_CONFLICT",
      `a master key rotation was interrupted (${pendingMasterKeyFile(file)} exists): run \`zt keys rotate-master\` to finish it`,
      { file },
    );
  if (!fileExists(file)) {
    if (!options.create) {
      throw new ZtError(
        "ZT_CONFIG_NOT_FOUND",
        `master key file ${file} not found; run \`zt init\` first`,
        { file },
      );
    }
    writePrivateFile(file, newMasterKeyText());
  }
  return readMasterKeyFile(file);
}
