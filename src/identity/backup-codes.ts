import { randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import {
  deriveFor,
  hashSecret,
  parseScryptHash,
  type ParsedHash,
  type ScryptParams,
} from "./password-hash.js";

/** How many backup codes a user gets at enrolment or reset. */
export const BACKUP_CODE_COUNT = 10;

/** RFC 4648 base32 alphabet, lowercase: no 0/1/8/9, so no o/0 or l/1 confusion. */
const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

/** Backup codes carry 50 random bits, so a cheaper scrypt than for passwords is still far out of reach. */
const BACKUP_SCRYPT: ScryptParams = { N: 2 ** 12, r: 8, p: 1 };

/** No batch at all (a user without codes, or none to check): the work of one, matching nothing. */
const NO_BATCH: ParsedHash = {
  params: BACKUP_SCRYPT,
  salt: Buffer.alloc(16),
  key: Buffer.alloc(32),
};

/** Ten fresh codes such as `k7mqa-2xw4d` (50 bits each), to be shown once. */
export function generateBackupCodes(count = BACKUP_CODE_COUNT): string[] {
  const codes: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = "";
    for (let j = 0; j < 10; j++) s += ALPHABET[randomInt(ALPHABET.length)];
    codes.push(`${s.slice(0, 5)}-${s.slice(5)}`);
  }
  return codes;
}

/** Canonical form for comparison: lowercase, without spaces or dashes; undefined when malformed. */
export function normaliseBackupCode(code: string): string | undefined {
  const c = code.replace(/[\s-]+/g, "").toLowerCase();
  return /^[a-z2-7]{10}$/.test(c) ? c : undefined;
}

/**
 * Hashes a batch of codes. The batch shares one salt so checking a typed code costs
 * one scrypt, whichever of the ten it is.
 */
export async function hashBackupCodes(codes: string[]): Promise<string[]> {
  const salt = randomBytes(16);
  return Promise.all(
    codes.map((c) => hashSecret(normaliseBackupCode(c) ?? c, BACKUP_SCRYPT, salt)),
  );
}

/**
 * Finds which stored hash (if any) a typed code matches. Returns its index, or -1.
 * Every candidate is compared, so the time taken does not depend on which one matched;
 * with no hash to check (`[]`, or none readable) it still costs one batch's derivation,
 * so a refusal can spend what a check would have.
 */
export async function matchBackupCode(code: string, hashes: string[]): Promise<number> {
  const canonical = normaliseBackupCode(code);
  const derived = new Map<string, Buffer>();
  let found = -1;
  for (let i = 0; i < hashes.length; i++) {
    const parsed = parseScryptHash(hashes[i]!);
    if (!parsed) continue;
    const groupKey = hashes[i]!.split("$").slice(0, 5).join("$") + `$${parsed.key.length}`;
    let key = derived.get(groupKey);
    if (!key) {
      key = await deriveFor(canonical ?? "", parsed);
      derived.set(groupKey, key);
    }
    if (canonical !== undefined && timingSafeEqual(key, parsed.key) && found < 0) found = i;
  }
  if (derived.size === 0) await deriveFor(canonical ?? "", NO_BATCH);
  return found;
}
