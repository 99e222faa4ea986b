/**
 * Identity provider (NIST SP 800-207 IdP): users, groups, scrypt password hashes,
 * TOTP (RFC 6238) with replay protection, backup codes and brute-force lockout.
 * This file is the capability's only public face.
 */
export { IdentityService, identityService } from "./identity-service.js";
export type {
  AddUserOptions,
  AddUserResult,
  AuthenticateOptions,
  LoginFailureReason,
  MfaEnrolment,
  UserInfo,
} from "./identity-service.js";
export { hashPassword, verifyPassword } from "./password-hash.js";
export { verifyTotp, totpStep, totpCodeAt, newTotpSecret, totpUri } from "./totp-verifier.js";
export type {
  TotpResult,
  TotpFailureReason,
  VerifyTotpOptions,
  TotpAlgorithm,
} from "./totp-verifier.js";
export {
  checkLockout,
  reserveAttempt,
  settleFailure,
  settleSuccess,
  releaseAttempt,
  lockDurationMs,
  failuresInLastHour,
  EMPTY_LOCKOUT,
  FAILURE_MEMORY_MS,
} from "./lockout.js";
export type { LockoutPolicy, LockoutState, LockoutCheck, ReserveResult } from "./lockout.js";
export { identitySettings, MAX_LOCK_MS } from "./identity-config.js";
export type { IdentitySettings } from "./identity-config.js";
export { NAME_RE, parseUserName, parseGroupName } from "./names.js";
export { generateBackupCodes, normaliseBackupCode, BACKUP_CODE_COUNT } from "./backup-codes.js";
export { printTotpEnrolment, renderTerminalQr } from "./totp-enrolment-printer.js";
export type { TotpEnrolmentPrintOptions } from "./totp-enrolment-printer.js";
export { sourceKey } from "./source-key.js";
