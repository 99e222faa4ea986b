import { timingSafeEqual } from "node:crypto";
import { HOTP, Secret, TOTP } from "otpauth";

/** Reasons a code is refused; stable kebab-case strings that go unchanged into audit records. */
export type TotpFailureReason = "mfa-invalid" | "mfa-replayed" | "mfa-malformed";

export type TotpResult = { ok: true; step: number } | { ok: false; reason: TotpFailureReason };

export type TotpAlgorithm = "SHA1" | "SHA256" | "SHA512";

export interface VerifyTotpOptions {
  /** The shared secret, base32 (RFC 4648, padding optional). */
  secret: string;
  /** The code the user typed; spaces are ignored. */
  code: string;
  /** The verifier's time, ms since the epoch. */
  nowMs: number;
  /** Time step of the last code accepted for this user (-1 or 0 when none yet). */
  lastAcceptedStep: number;
  /** Steps of clock drift tolerated either side (RFC 6238 §5.2 recommends at most one). Default 1. */
  window?: number;
  /** Defaults: SHA1, 6 digits, 30 s (what every authenticator app does). */
  algorithm?: TotpAlgorithm;
  digits?: number;
  periodSeconds?: number;
}

/** The RFC 6238 time step T = floor(unix seconds / period). */
export function totpStep(nowMs: number, periodSeconds = 30): number {
  return Math.floor(nowMs / 1000 / periodSeconds);
}

/**
 * Checks a TOTP code (RFC 6238) against the current step ± `window`, and refuses a
 * code whose step is not after the last accepted one. Pure: the caller persists the
 * returned step (conditionally, so two concurrent uses cannot both win).
 *
 * @example
 * const r = verifyTotp({ secret, code: "123456", nowMs: clock.now(), lastAcceptedStep: row.totp_last_step });
 * if (r.ok) await db.updateTable("users").set({ totp_last_step: r.step }).where("totp_last_step", "<", r.step)…
 */
export function verifyTotp(options: VerifyTotpOptions): TotpResult {
  const digits = options.digits ?? 6;
  const period = options.periodSeconds ?? 30;
  const window = options.window ?? 1;
  const code = options.code.replace(/\s+/g, "");
  if (code.length !== digits || !/^\d+$/.test(code)) return { ok: false, reason: "mfa-malformed" };
  if (!Number.isFinite(options.nowMs) || !Number.isInteger(window) || window < 0 || window > 10) {
    return { ok: false, reason: "mfa-invalid" };
  }
  let secret: Secret;
  try {
    secret = Secret.fromBase32(options.secret);
  } catch {
    // A secret we cannot read is a server-side fault: fail closed.
    return { ok: false, reason: "mfa-invalid" };
  }
  if (secret.bytes.length === 0) return { ok: false, reason: "mfa-invalid" };
  const current = totpStep(options.nowMs, period);
  const typed = Buffer.from(code);
  let bestFresh = -1;
  let matchedStale = false;
  // Every step in the window is computed and compared, match or not, so timing does not
  // reveal which step matched.
  for (let step = current - window; step <= current + window; step++) {
    if (step < 0) continue;
    const expected = Buffer.from(
      HOTP.generate({ secret, algorithm: options.algorithm ?? "SHA1", digits, counter: step }),
    );
    if (expected.length !== typed.length || !timingSafeEqual(expected, typed)) continue;
    // RFC 6238 §5.2: a code for a step at or before the last accepted one is never accepted again.
    if (step <= options.lastAcceptedStep) matchedStale = true;
    else bestFresh = Math.max(bestFresh, step);
  }
  if (bestFresh >= 0) return { ok: true, step: bestFresh };
  return { ok: false, reason: matchedStale ? "mfa-replayed" : "mfa-invalid" };
}

/** The code an authenticator shows at `nowMs` (for tests, demos and interop checks). */
export function totpCodeAt(secretBase32: string, nowMs: number): string {
  return TOTP.generate({
    secret: Secret.fromBase32(secretBase32),
    algorithm: "SHA1",
    digits: 6,
    period: 30,
    timestamp: nowMs,
  });
}

/** A fresh 160-bit TOTP secret (RFC 4226 §4 recommends 160 bits), base32 without padding. */
export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

/** The `otpauth://totp/…` URI authenticator apps scan (Key Uri Format). */
export function totpUri(options: { issuer: string; accountName: string; secret: string }): string {
  return new TOTP({
    issuer: options.issuer,
    label: options.accountName,
    secret: Secret.fromBase32(options.secret),
    algorithm: "SHA1",
    digits: 6,
    period: 30,
  }).toString();
}
