import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { HOTP, Secret, TOTP, URI } from "otpauth";
import {
  totpCodeAt,
  totpStep,
  totpUri,
  newTotpSecret,
  verifyTotp,
  type TotpAlgorithm,
} from "./totp-verifier.js";

const b32 = (ascii: string) => Secret.fromLatin1(ascii).base32;

/** RFC 6238 Appendix B: the seeds (ASCII) for each mode. */
const RFC6238_SEEDS: Record<TotpAlgorithm, string> = {
  SHA1: "12345678901234567890",
  SHA256: "12345678901234567890123456789012",
  SHA512: "1234567890123456789012345678901234567890123456789012345678901234",
};

/** RFC 6238 Appendix B, test vectors table: time (s), T (hex), TOTP, mode. */
const RFC6238_VECTORS: [number, string, string, TotpAlgorithm][] = [
  [59, "0000000000000001", "94287082", "SHA1"],
  [59, "0000000000000001", "46119246", "SHA256"],
  [59, "0000000000000001", "90693936", "SHA512"],
  [1111111109, "00000000023523EC", "07081804", "SHA1"],
  [1111111109, "00000000023523EC", "68084774", "SHA256"],
  [1111111109, "00000000023523EC", "25091201", "SHA512"],
  [1111111111, "00000000023523ED", "14050471", "SHA1"],
  [1111111111, "00000000023523ED", "67062674", "SHA256"],
  [1111111111, "00000000023523ED", "99943326", "SHA512"],
  [1234567890, "000000000273EF07", "89005924", "SHA1"],
  [1234567890, "000000000273EF07", "91819424", "SHA256"],
  [1234567890, "000000000273EF07", "93441116", "SHA512"],
  [2000000000, "0000000003F940AA", "69279037", "SHA1"],
  [2000000000, "0000000003F940AA", "90698825", "SHA256"],
  [2000000000, "0000000003F940AA", "38618901", "SHA512"],
  [20000000000, "0000000027BC86AA", "65353130", "SHA1"],
  [20000000000, "0000000027BC86AA", "77737706", "SHA256"],
  [20000000000, "0000000027BC86AA", "47863826", "SHA512"],
];

/** RFC 4226 Appendix D: HOTP values for the secret "12345678901234567890", counters 0–9. */
const RFC4226_HOTP = [
  "755224",
  "287082",
  "359152",
  "969429",
  "338314",
  "254676",
  "287922",
  "162583",
  "399871",
  "520489",
];

describe("RFC 6238 Appendix B test vectors", () => {
  for (const [seconds, tHex, code, algorithm] of RFC6238_VECTORS) {
    it(`RFC 6238 App. B: T=${seconds}s ${algorithm} → ${code}`, () => {
      expect(totpStep(seconds * 1000)).toBe(parseInt(tHex, 16));
      const r = verifyTotp({
        secret: b32(RFC6238_SEEDS[algorithm]),
        code,
        nowMs: seconds * 1000,
        lastAcceptedStep: -1,
        window: 0,
        algorithm,
        digits: 8,
      });
      expect(r).toEqual({ ok: true, step: parseInt(tHex, 16) });
    });
  }

  it("RFC 6238 App. B: a vector's code is refused under another mode", () => {
    const r = verifyTotp({
      secret: b32(RFC6238_SEEDS.SHA256),
      code: "94287082",
      nowMs: 59_000,
      lastAcceptedStep: -1,
      algorithm: "SHA256",
      digits: 8,
    });
    expect(r).toEqual({ ok: false, reason: "mfa-invalid" });
  });
});

describe("RFC 4226 Appendix D test vectors (HOTP under TOTP: step = counter)", () => {
  RFC4226_HOTP.forEach((code, counter) => {
    it(`RFC 4226 App. D: counter ${counter} → ${code}`, () => {
      const r = verifyTotp({
        secret: b32("12345678901234567890"),
        code,
        nowMs: counter * 30_000,
        lastAcceptedStep: -1,
        window: 0,
      });
      expect(r).toEqual({ ok: true, step: counter });
    });
  });
});

describe("verifyTotp", () => {
  const secret = b32("12345678901234567890");
  const t0 = 1_234_567_890_000;
  const step0 = totpStep(t0);

  it("accepts the current code and returns its step", () => {
    expect(
      verifyTotp({ secret, code: totpCodeAt(secret, t0), nowMs: t0, lastAcceptedStep: 0 }),
    ).toEqual({
      ok: true,
      step: step0,
    });
  });

  it("RFC 6238 §5.2: refuses a code whose step was already accepted (replay)", () => {
    const code = totpCodeAt(secret, t0);
    const first = verifyTotp({ secret, code, nowMs: t0, lastAcceptedStep: 0 });
    expect(first.ok).toBe(true);
    const last = first.ok ? first.step : -1;
    expect(verifyTotp({ secret, code, nowMs: t0, lastAcceptedStep: last })).toEqual({
      ok: false,
      reason: "mfa-replayed",
    });
    // still refused a step later, while it is inside the window
    expect(verifyTotp({ secret, code, nowMs: t0 + 30_000, lastAcceptedStep: last })).toEqual({
      ok: false,
      reason: "mfa-replayed",
    });
  });

  it("RFC 6238 §5.2: refuses an older code after a newer one was accepted", () => {
    const newer = verifyTotp({
      secret,
      code: totpCodeAt(secret, t0 + 30_000),
      nowMs: t0,
      lastAcceptedStep: 0,
    });
    expect(newer).toEqual({ ok: true, step: step0 + 1 });
    expect(
      verifyTotp({ secret, code: totpCodeAt(secret, t0), nowMs: t0, lastAcceptedStep: step0 + 1 }),
    ).toEqual({ ok: false, reason: "mfa-replayed" });
  });

  it("accepts ±1 step of drift and refuses ±2", () => {
    for (const [offset, ok] of [
      [-2, false],
      [-1, true],
      [0, true],
      [1, true],
      [2, false],
    ] as const) {
      const r = verifyTotp({
        secret,
        code: totpCodeAt(secret, t0 + offset * 30_000),
        nowMs: t0,
        lastAcceptedStep: 0,
      });
      expect(r.ok, `offset ${offset}`).toBe(ok);
      if (ok) expect(r).toEqual({ ok: true, step: step0 + offset });
      else expect(r).toEqual({ ok: false, reason: "mfa-invalid" });
    }
  });

  it("window 0 accepts only the current step", () => {
    const prev = totpCodeAt(secret, t0 - 30_000);
    expect(verifyTotp({ secret, code: prev, nowMs: t0, lastAcceptedStep: 0, window: 0 }).ok).toBe(
      false,
    );
  });

  it("refuses malformed codes without computing anything", () => {
    for (const code of ["", "12345", "1234567", "12a456", "１２３４５６", "-12345", "123456\n7"]) {
      expect(
        verifyTotp({ secret, code, nowMs: t0, lastAcceptedStep: 0 }),
        JSON.stringify(code),
      ).toEqual({
        ok: false,
        reason: "mfa-malformed",
      });
    }
  });

  it('ignores spaces inside a code ("123 456")', () => {
    const code = totpCodeAt(secret, t0);
    expect(
      verifyTotp({
        secret,
        code: `${code.slice(0, 3)} ${code.slice(3)}`,
        nowMs: t0,
        lastAcceptedStep: 0,
      }).ok,
    ).toBe(true);
  });

  it("fails closed on an unreadable secret or a nonsensical window", () => {
    const code = totpCodeAt(secret, t0);
    expect(verifyTotp({ secret: "not base32!", code, nowMs: t0, lastAcceptedStep: 0 })).toEqual({
      ok: false,
      reason: "mfa-invalid",
    });
    expect(verifyTotp({ secret: "", code, nowMs: t0, lastAcceptedStep: 0 })).toEqual({
      ok: false,
      reason: "mfa-invalid",
    });
    expect(verifyTotp({ secret, code, nowMs: t0, lastAcceptedStep: 0, window: -1 }).ok).toBe(false);
    expect(verifyTotp({ secret, code, nowMs: Number.NaN, lastAcceptedStep: 0 }).ok).toBe(false);
  });

  it("property: differential against otpauth's generator over random secrets, times, offsets and last steps", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 10, maxLength: 64 }),
        fc.integer({ min: 60, max: 4_000_000_000 }),
        fc.integer({ min: -3, max: 3 }),
        fc.integer({ min: -3, max: 3 }),
        (bytes, seconds, offset, lastRel) => {
          const s = new Secret({ buffer: bytes.slice().buffer as ArrayBuffer });
          const nowMs = seconds * 1000;
          const step = Math.floor(seconds / 30);
          const code = TOTP.generate({ secret: s, timestamp: nowMs + offset * 30_000 });
          const last = step + lastRel;
          // Reference: which steps in the window does the code match (collisions included)?
          const matches = [-1, 0, 1]
            .map((d) => step + d)
            .filter((k) => HOTP.generate({ secret: s, counter: k }) === code);
          const fresh = matches.filter((k) => k > last);
          const r = verifyTotp({ secret: s.base32, code, nowMs, lastAcceptedStep: last });
          if (fresh.length > 0) expect(r).toEqual({ ok: true, step: Math.max(...fresh) });
          else if (matches.length > 0) expect(r).toEqual({ ok: false, reason: "mfa-replayed" });
          else expect(r).toEqual({ ok: false, reason: "mfa-invalid" });
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("enrolment helpers", () => {
  it("newTotpSecret gives 160 random bits in base32", () => {
    const a = newTotpSecret();
    expect(a).toMatch(/^[A-Z2-7]{32}$/);
    expect(Secret.fromBase32(a).bytes.length).toBe(20);
    expect(newTotpSecret()).not.toBe(a);
  });

  it("totpUri is a Key Uri Format URI that parses back to the same parameters", () => {
    const secret = newTotpSecret();
    const uri = totpUri({ issuer: "Acme zt", accountName: "alice", secret });
    const u = new URL(uri);
    expect(u.protocol).toBe("otpauth:");
    expect(u.searchParams.get("issuer")).toBe("Acme zt");
    expect(u.searchParams.get("secret")).toBe(secret);
    const parsed = URI.parse(uri);
    expect(parsed).toBeInstanceOf(TOTP);
    expect(parsed.secret.base32).toBe(secret);
    expect(parsed.label).toBe("alice");
    expect(u.searchParams.get("digits")).toBe("6");
    expect(u.searchParams.get("period")).toBe("30");
    expect(u.searchParams.get("algorithm")).toBe("SHA1");
  });
});
