import { describe, expect, it } from "vitest";
import {
  DEFAULT_SCRYPT,
  DUMMY_PASSWORD_HASH,
  hashPassword,
  hashSecret,
  parseScryptHash,
  verifyPassword,
} from "./password-hash.js";
import {
  generateBackupCodes,
  hashBackupCodes,
  matchBackupCode,
  normaliseBackupCode,
} from "./backup-codes.js";

describe("password hashing (scrypt)", () => {
  it("round-trips, with the parameters and a random salt encoded in the hash", async () => {
    const h = await hashPassword("correct horse battery staple");
    expect(h).toMatch(/^scrypt\$32768\$8\$3\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(await verifyPassword("correct horse battery staple", h)).toBe(true);
    expect(await verifyPassword("correct horse battery stapl", h)).toBe(false);
    expect(await verifyPassword("", h)).toBe(false);
    expect(await hashPassword("correct horse battery staple")).not.toBe(h);
  });

  it("verifies hashes made with other (older) parameters, as encoded", async () => {
    const h = await hashSecret("pw-with-old-params", { N: 2 ** 12, r: 8, p: 1 });
    expect(h.startsWith("scrypt$4096$8$1$")).toBe(true);
    expect(await verifyPassword("pw-with-old-params", h)).toBe(true);
  });

  it("NIST SP 800-63B: Unicode-normalises (NFKC) so composed and decomposed forms match", async () => {
    const composed = "caf\u00e9-passw0rd";
    const decomposed = "cafe\u0301-passw0rd";
    const h = await hashPassword(composed);
    expect(await verifyPassword(decomposed, h)).toBe(true);
  });

  it("a malformed or hostile hash is a mismatch, never an exception or a memory bomb", async () => {
    const good = await hashPassword("pw12345678");
    const parts = good.split("$");
    const variants = [
      "",
      "bcrypt$2b$10$abc",
      "scrypt$32768$8$3$$",
      parts.slice(0, 5).join("$"),
      ["scrypt", String(2 ** 30), "8", "1", parts[4], parts[5]].join("$"), // N far too large
      ["scrypt", "1000", "8", "1", parts[4], parts[5]].join("$"), // N not a power of two
      ["scrypt", "32768", "1000", "1", parts[4], parts[5]].join("$"), // r too large
      ["scrypt", "32768", "8", "3", "!!", parts[5]].join("$"),
      ["scrypt", "32768", "8", "3", parts[4], "AA"].join("$"), // key too short
    ];
    for (const v of variants) {
      expect(parseScryptHash(v), v).toBeUndefined();
      expect(await verifyPassword("pw12345678", v), v).toBe(false);
    }
  });

  it("nothing matches the dummy hash used for unknown users, and it has the default cost", async () => {
    expect(parseScryptHash(DUMMY_PASSWORD_HASH)?.params).toEqual(DEFAULT_SCRYPT);
    expect(await verifyPassword("", DUMMY_PASSWORD_HASH)).toBe(false);
    expect(await verifyPassword("password", DUMMY_PASSWORD_HASH)).toBe(false);
  });

  it("refuses to hash an oversized password", async () => {
    await expect(hashPassword("x".repeat(1025))).rejects.toMatchObject({ code: "ZT_BAD_REQUEST" });
    expect(await verifyPassword("x".repeat(100_000), DUMMY_PASSWORD_HASH)).toBe(false);
  });
});

describe("backup codes", () => {
  it("ten distinct 50-bit codes in a readable format", () => {
    const codes = generateBackupCodes();
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const c of codes) expect(c).toMatch(/^[a-z2-7]{5}-[a-z2-7]{5}$/);
  });

  it("matches any of the batch (case, spaces and dashes ignored) and nothing else", async () => {
    const codes = generateBackupCodes();
    const hashes = await hashBackupCodes(codes);
    for (const h of hashes) expect(h).not.toContain(codes[0]!.replace("-", ""));
    expect(await matchBackupCode(codes[3]!, hashes)).toBe(3);
    expect(await matchBackupCode(` ${codes[7]!.toUpperCase().replace("-", " ")} `, hashes)).toBe(7);
    expect(await matchBackupCode("aaaaa-aaaaa", hashes)).toBe(-1);
    expect(await matchBackupCode("not a code", hashes)).toBe(-1);
    expect(await matchBackupCode(codes[0]!, [])).toBe(-1);
    expect(normaliseBackupCode("ABCDE-FGH23")).toBe("abcdefgh23");
    expect(normaliseBackupCode("abcde-fgh21")).toBeUndefined();
  });
});
