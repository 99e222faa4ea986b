import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { parseDuration } from "../core/duration.js";
import type { ZtConfig } from "../config/index.js";
import type { LockoutPolicy } from "./lockout.js";

/** The longest lockout, however many lockouts in a row. */
export const MAX_LOCK_MS = 60 * 60 * 1000;

export interface IdentitySettings {
  issuer: string;
  lockout: LockoutPolicy;
}

const issuerSchema = z
  .string()
  .min(1, "expected a non-empty issuer name")
  .max(64, "expected at most 64 characters")
  .refine(
    (s) => !s.includes(":"),
    'expected no ":" (it separates issuer and account in otpauth labels)',
  );

/** Reads the `mfa` section of zt.yaml (already shape-checked by the config schema). */
export function identitySettings(config: Pick<ZtConfig, "mfa">): IdentitySettings {
  const issuer = issuerSchema.safeParse(config.mfa.issuer);
  if (!issuer.success) {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `mfa.issuer: ${issuer.error.issues[0]?.message ?? "invalid"}`,
    );
  }
  let windowMs: number;
  try {
    windowMs = parseDuration(config.mfa.failure_window, "mfa.failure_window");
  } catch (e) {
    throw new ZtError("ZT_CONFIG_INVALID", (e as Error).message);
  }
  if (windowMs < 1000 || windowMs > MAX_LOCK_MS) {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      "mfa.failure_window: expected a duration between 1s and 1h",
    );
  }
  if (config.mfa.max_failures > 100) {
    throw new ZtError("ZT_CONFIG_INVALID", "mfa.max_failures: expected at most 100");
  }
  return {
    issuer: issuer.data,
    lockout: {
      maxFailures: config.mfa.max_failures,
      windowMs,
      baseLockMs: windowMs,
      maxLockMs: MAX_LOCK_MS,
    },
  };
}
