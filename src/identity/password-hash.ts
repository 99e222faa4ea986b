import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";
import { ZtError } from "../core/errors.js";

/** scrypt cost parameters, encoded into every hash so they can be raised later. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number;
  r: number;
  p: number;
}

/**
 * N=2^15, r=8, p=3: 32 MiB per hash, one of the OWASP Password Storage Cheat Sheet's
 * equivalent minimum settings for scrypt (same work as N=2^17, p=1 with a quarter of the memory).
 */
export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 15, r: 8, p: 3 };

const KEY_LEN = 32;
const SALT_LEN = 16;
/** Longest password accepted for hashing: scrypt cost does not depend on it, but parsing and memory do. */
export const MAX_PASSWORD_LENGTH = 1024;

function scryptAsync(secret: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = {
    N: params.N,
    r: params.r,
    p: params.p,
    maxmem: 256 * params.N * params.r + 16 * 1024 * 1024,
  };
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, KEY_LEN, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/**
 * A lone surrogate (a string that is not well-formed UTF-16, e.g. the JSON escape
 * `"\ud800"`) has no UTF-8 encoding: scrypt would hash it as U+FFFD, so a password
 * holding U+FFFD would also be matched by any lone surrogate in its place. Such text is
 * never a password: refused when set, a mismatch when typed.
 */
const LONE_SURROGATE = /\p{Cs}/u;

/** NIST SP 800-63B §5.1.1.2: normalise Unicode so the same password typed on two keyboards matches. */
function normalise(password: string): string {
  return password.normalize("NFKC");
}

/** Hashes with explicit parameters (tests and backup codes use cheaper ones). */
export async function hashSecret(
  secret: string,
  params: ScryptParams,
  salt = randomBytes(SALT_LEN),
): Promise<string> {
  const key = await scryptAsync(secret, salt, params);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString("base64url")}$${key.toString("base64url")}`;
}

/**
 * Hashes a password with scrypt (memory-hard) and a random 128-bit salt.
 * Format: `scrypt$N$r$p$<salt b64url>$<hash b64url>`.
 *
 * @example const h = await hashPassword("correct horse"); await verifyPassword("correct horse", h) // true
 */
export async function hashPassword(password: string): Promise<string> {
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `password: expected at most ${MAX_PASSWORD_LENGTH} characters`,
    );
  }
  if (LONE_SURROGATE.test(password)) {
    throw new ZtError("ZT_BAD_REQUEST", "password: expected well-formed Unicode text");
  }
  return hashSecret(normalise(password), DEFAULT_SCRYPT);
}

export interface ParsedHash {
  params: ScryptParams;
  salt: Buffer;
  key: Buffer;
}

/** Parses a stored hash; returns undefined for anything malformed or with parameters outside sane bounds. */
export function parseScryptHash(hash: string): ParsedHash | undefined {
  const parts = hash.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return undefined;
  const [N, r, p] = [parts[1]!, parts[2]!, parts[3]!].map((s) =>
    /^\d{1,8}$/.test(s) ? Number(s) : NaN,
  ) as [number, number, number];
  // Bounds stop a tampered row from turning a login into a memory or CPU bomb.
  if (!(N >= 2 ** 10 && N <= 2 ** 20 && (N & (N - 1)) === 0)) return undefined;
  if (!(r >= 1 && r <= 32 && p >= 1 && p <= 16)) return undefined;
  const b64 = /^[A-Za-z0-9_-]+$/;
  if (!b64.test(parts[4]!) || !b64.test(parts[5]!)) return undefined;
  const salt = Buffer.from(parts[4]!, "base64url");
  const key = Buffer.from(parts[5]!, "base64url");
  if (salt.length < 16 || key.length < 16 || key.length > 64) return undefined;
  return { params: { N, r, p }, salt, key };
}

/** Recomputes the key for `secret` under a parsed hash's salt and parameters. */
export async function deriveFor(secret: string, parsed: ParsedHash): Promise<Buffer> {
  const options: ScryptOptions = {
    N: parsed.params.N,
    r: parsed.params.r,
    p: parsed.params.p,
    maxmem: 256 * parsed.params.N * parsed.params.r + 16 * 1024 * 1024,
  };
  return new Promise((resolve, reject) => {
    scrypt(secret, parsed.salt, parsed.key.length, options, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

/**
 * Checks a password against a stored hash in constant time. A malformed hash is
 * a mismatch (fail closed), never an exception.
 */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const parsed = parseScryptHash(hash);
  if (!parsed || password.length > MAX_PASSWORD_LENGTH || LONE_SURROGATE.test(password)) {
    // Same work as a real check, so a malformed row or input is not a timing signal.
    await deriveFor("", DUMMY_PARSED);
    return false;
  }
  const key = await deriveFor(normalise(password), parsed);
  return timingSafeEqual(key, parsed.key);
}

const DUMMY_PARSED: ParsedHash = {
  params: DEFAULT_SCRYPT,
  salt: Buffer.from("7a742d64756d6d792d73616c742d3031", "hex"),
  key: Buffer.alloc(KEY_LEN),
};

/**
 * A hash no password matches, with the default cost: verifying against it takes as long
 * as a real check, so unknown user names cannot be told from wrong passwords by timing.
 */
export const DUMMY_PASSWORD_HASH = `scrypt$${DEFAULT_SCRYPT.N}$${DEFAULT_SCRYPT.r}$${DEFAULT_SCRYPT.p}$${DUMMY_PARSED.salt.toString("base64url")}$${DUMMY_PARSED.key.toString("base64url")}`;

/** Whether a stored hash was made with other parameters than today's defaults. */
export function needsRehash(hash: string): boolean {
  const parsed = parseScryptHash(hash);
  if (!parsed) return false;
  const d = DEFAULT_SCRYPT;
  return (
    parsed.params.N !== d.N ||
    parsed.params.r !== d.r ||
    parsed.params.p !== d.p ||
    parsed.key.length !== KEY_LEN
  );
}
