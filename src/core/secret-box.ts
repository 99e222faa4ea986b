import { createCipheriv, createDecipheriv, randomBytes, hkdfSync } from "node:crypto";
import { ZtError } from "./errors.js";

/**
 * Encryption at rest for private keys and other secrets stored by zt.
 * AES-256-GCM with a per-purpose key derived (HKDF-SHA256) from the master key,
 * a random 96-bit nonce per message, and the purpose bound as associated data,
 * so a ciphertext for one purpose cannot be replayed as another.
 *
 * Format: `ztbox1.<nonce b64url>.<ciphertext+tag b64url>`
 */
export class SecretBox {
  readonly #master: Buffer;

  constructor(masterKey: Uint8Array) {
    if (masterKey.length < 32) {
      throw new ZtError("ZT_CONFIG_INVALID", "master key must be at least 32 bytes");
    }
    this.#master = Buffer.from(masterKey);
  }

  #key(purpose: string): Buffer {
    return Buffer.from(hkdfSync("sha256", this.#master, Buffer.alloc(0), `zt:${purpose}`, 32));
  }

  seal(purpose: string, plaintext: Uint8Array | string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#key(purpose), nonce);
    cipher.setAAD(Buffer.from(purpose));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
    return `ztbox1.${nonce.toString("base64url")}.${body.toString("base64url")}`;
  }

  open(purpose: string, sealed: string): Buffer {
    const parts = sealed.split(".");
    if (parts.length !== 3 || parts[0] !== "ztbox1") {
      throw new ZtError("ZT_KEY_DECRYPT_FAILED", `sealed secret for ${purpose} is malformed`);
    }
    const nonce = Buffer.from(parts[1]!, "base64url");
    const body = Buffer.from(parts[2]!, "base64url");
    if (nonce.length !== 12 || body.length < 16) {
      throw new ZtError("ZT_KEY_DECRYPT_FAILED", `sealed secret for ${purpose} is malformed`);
    }
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.#key(purpose), nonce);
      decipher.setAAD(Buffer.from(purpose));
      decipher.setAuthTag(body.subarray(body.length - 16));
      return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]);
    } catch {
      throw new ZtError(
        "ZT_KEY_DECRYPT_FAILED",
        `cannot decrypt ${purpose}: wrong master key or corrupted data`,
      );
    }
  }
}

export function generateMasterKey(): Buffer {
  return randomBytes(32);
}
