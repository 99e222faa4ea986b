import { execFileSync } from "node:child_process";
import * as OTPAuth from "otpauth";

/**
 * The TOTP code of a base32 secret from the real `oathtool`: now by the wall clock, or at
 * `atMs` (an injected clock's time).
 */
export function oathtoolCode(secret: string, atMs?: number): string {
  const at = atMs === undefined ? [] : ["-N", `@${Math.floor(atMs / 1000)}`];
  return execFileSync("oathtool", ["--totp", "-b", secret, ...at])
    .toString()
    .trim();
}

/** The TOTP code (RFC 6238: SHA-1, 6 digits, 30 s) of a base32 secret at `atMs`. */
export function totpAt(secret: string, atMs: number): string {
  return new OTPAuth.TOTP({
    secret: OTPAuth.Secret.fromBase32(secret),
    digits: 6,
    period: 30,
    algorithm: "SHA1",
  }).generate({ timestamp: atMs });
}
