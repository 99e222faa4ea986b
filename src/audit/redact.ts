/**
 * Keys whose values never enter the audit log, whatever a caller puts in `data`
 * (matched case-insensitively, `-` read as `_`, and also written without separators). Bare `code` is left alone on purpose:
 * it is how error codes are named; the secret kinds of code have their own names here.
 */
const SENSITIVE_KEYS = new Set([
  "password",
  "passwd",
  "new_password",
  "old_password",
  "secret",
  "client_secret",
  "totp_secret",
  "token",
  "access_token",
  "refresh_token",
  "id_token",
  "session_token",
  "bearer",
  "totp",
  "totp_code",
  "otp",
  "mfa_code",
  "auth_code",
  "authorization_code",
  "backup_code",
  "cookie",
  "cookies",
  "set_cookie",
  "authorization",
  "proxy_authorization",
  "private_key",
  "privatekey",
  "api_key",
  "apikey",
  "x_api_key",
  "x_apikey",
  "api_token",
  "auth_token",
  "x_auth_token",
  "x_access_token",
  "csrf_token",
  "x_csrf_token",
  "xsrf_token",
  "x_xsrf_token",
  "passphrase",
]);

export const REDACTED = "[redacted]";

/** The sensitive keys written without separators: `sessiontoken`, as `sessionToken` folds. */
const SENSITIVE_JOINED = new Set([...SENSITIVE_KEYS].map((k) => k.replaceAll("_", "")));

/**
 * True for a key whose value never enters the log: one of {@link SENSITIVE_KEYS} in any
 * case, with `-` or `_` between its words or, as TypeScript callers write them, nothing
 * (`sessionToken`, `Session-Token`, `SESSION_TOKEN`, `sessiontoken`).
 */
export function isSensitiveKey(key: string): boolean {
  const k = key.toLowerCase().replaceAll("-", "_");
  return SENSITIVE_KEYS.has(k) || (!k.includes("_") && SENSITIVE_JOINED.has(k));
}

function replacer(key: string, value: unknown): unknown {
  return key !== "" && isSensitiveKey(key) ? REDACTED : value;
}

/**
 * Matches `"<sensitive key>":` in JSON text. JSON.stringify writes every key as
 * `"key":`, so when this does not match, no sensitive key is present and the plain
 * serialisation is the redacted one (no replacer walk on the hot path).
 */
const SENSITIVE_IN_JSON = new RegExp(
  `"(?:${[...SENSITIVE_KEYS].map(keyPattern).join("|")})":`,
  "i",
);

/**
 * A sensitive key as it may appear in JSON text, for a case-insensitive match: `_`, `-`
 * or nothing between its words, and `k` also as U+212A KELVIN SIGN, the one character
 * outside ASCII whose `toLowerCase()` is an ASCII character (which `isSensitiveKey`
 * folds, and the `i` flag, without `u`, does not; the test scans every code point to
 * keep this true).
 */
function keyPattern(key: string): string {
  return key.replaceAll("_", "[-_]?").replaceAll("k", "[k\u212A]");
}

/** JSON text of `data` with every sensitive key's value replaced by `[redacted]`. */
export function redactedJson(data: Record<string, unknown> | undefined): string {
  if (data === undefined) return "{}";
  const plain = JSON.stringify(data) ?? "{}";
  if (!SENSITIVE_IN_JSON.test(plain)) return plain;
  return JSON.stringify(data, replacer) ?? "{}";
}

/** The reference implementation (always walks with the replacer), for tests. */
export function redactedJsonReference(data: Record<string, unknown> | undefined): string {
  if (data === undefined) return "{}";
  return JSON.stringify(data, replacer) ?? "{}";
}
