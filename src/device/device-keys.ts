import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { readPrivateFile, writePrivateFile } from "../core/secure-files.js";

/** What `zt device enroll` keeps on the device (a 0600 file). */
export interface DeviceKeyFile {
  device_id: string;
  name: string;
  user: string;
  /** Ed25519 private key, PKCS#8 PEM. */
  private_key: string;
}

const keyFileSchema = z.object({
  device_id: z.string().regex(/^dev_[A-Za-z0-9_-]+$/),
  name: z.string(),
  user: z.string(),
  private_key: z.string().startsWith("-----BEGIN PRIVATE KEY-----"),
});

/** A fresh Ed25519 device key pair (private PKCS#8 PEM, public SPKI PEM). */
export function generateDeviceKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/** Parses a registered public key; only Ed25519 is accepted. */
export function parseDevicePublicKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new ZtError("ZT_DEVICE_INVALID", "public key: expected an Ed25519 SPKI PEM");
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw new ZtError("ZT_DEVICE_INVALID", "public key: expected an Ed25519 key");
  return key;
}

export function signWithDeviceKey(privatePem: string, payload: string): string {
  return sign(null, Buffer.from(payload, "utf8"), createPrivateKey(privatePem)).toString("base64");
}

/** Verifies an Ed25519 signature (base64) over payload; false on any malformed input. */
export function verifyDeviceSignature(
  publicPem: string,
  payload: string,
  signatureB64: string,
): boolean {
  try {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(signatureB64)) return false;
    return verify(
      null,
      Buffer.from(payload, "utf8"),
      parseDevicePublicKey(publicPem),
      Buffer.from(signatureB64, "base64"),
    );
  } catch {
    return false;
  }
}

/** The default key directory: $XDG_CONFIG_HOME/zt or ~/.config/zt. */
export function defaultKeyDir(env: Readonly<Record<string, string | undefined>>): string {
  const base = env["XDG_CONFIG_HOME"] || join(env["HOME"] || homedir(), ".config");
  return join(base, "zt");
}

export function deviceKeyPath(keyDir: string): string {
  return join(keyDir, "device.json");
}

export function saveDeviceKey(keyDir: string, file: DeviceKeyFile): string {
  const path = deviceKeyPath(keyDir);
  writePrivateFile(path, JSON.stringify(file, null, 2) + "\n");
  return path;
}

/** Reads the device key file, refusing one readable by group or others. */
export function loadDeviceKey(keyDir: string): DeviceKeyFile {
  const path = deviceKeyPath(keyDir);
  const text = readPrivateFile(path).toString("utf8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ZtError("ZT_DEVICE_INVALID", `${path}: not valid JSON`);
  }
  const r = keyFileSchema.safeParse(parsed);
  if (!r.success)
    throw new ZtError(
      "ZT_DEVICE_INVALID",
      `${path}: ${r.error.issues[0]!.path.join(".")}: ${r.error.issues[0]!.message}`,
    );
  return r.data;
}
