/**
 * One error type for the whole of zt. Every error carries a stable `code` from a
 * closed union; callers match on the code, never on the message. One table maps a
 * code to its HTTP status and CLI exit code, so the API, the PEP and the CLI agree.
 */

export const ERROR_TABLE = {
  // generic
  ZT_INTERNAL: { http: 500, exit: 70 },
  ZT_BAD_REQUEST: { http: 400, exit: 64 },
  ZT_NOT_FOUND: { http: 404, exit: 66 },
  ZT_CONFLICT: { http: 409, exit: 65 },
  ZT_UNSUPPORTED_MEDIA_TYPE: { http: 415, exit: 64 },
  ZT_PAYLOAD_TOO_LARGE: { http: 413, exit: 64 },
  ZT_HEADERS_TOO_LARGE: { http: 431, exit: 64 },
  ZT_RATE_LIMITED: { http: 429, exit: 75 },
  ZT_UNAVAILABLE: { http: 503, exit: 69 },
  ZT_USAGE: { http: 400, exit: 64 },
  // config & files
  ZT_CONFIG_INVALID: { http: 500, exit: 78 },
  ZT_CONFIG_NOT_FOUND: { http: 500, exit: 78 },
  ZT_FILE_PERMISSIONS: { http: 500, exit: 77 },
  ZT_KEY_DECRYPT_FAILED: { http: 500, exit: 77 },
  ZT_STORE: { http: 500, exit: 74 },
  // identity & sessions
  ZT_AUTH_REQUIRED: { http: 401, exit: 77 },
  ZT_AUTH_FAILED: { http: 401, exit: 77 },
  ZT_CLIENT_CERT_REFUSED: { http: 401, exit: 77 },
  ZT_USER_NOT_FOUND: { http: 404, exit: 67 },
  ZT_USER_EXISTS: { http: 409, exit: 65 },
  ZT_USER_DISABLED: { http: 403, exit: 77 },
  ZT_MFA_INVALID: { http: 401, exit: 77 },
  ZT_MFA_REPLAYED: { http: 401, exit: 77 },
  ZT_MFA_LOCKED: { http: 429, exit: 75 },
  ZT_SESSION_INVALID: { http: 401, exit: 77 },
  ZT_SESSION_EXPIRED: { http: 401, exit: 77 },
  ZT_SESSION_REVOKED: { http: 401, exit: 77 },
  ZT_CSRF: { http: 403, exit: 77 },
  ZT_STEP_UP_REQUIRED: { http: 401, exit: 77 },
  // policy
  ZT_POLICY_INVALID: { http: 400, exit: 65 },
  ZT_POLICY_TEST_FAILED: { http: 400, exit: 1 },
  ZT_POLICY_DENIED: { http: 403, exit: 77 },
  ZT_POLICY_ENTITY_INVALID: { http: 400, exit: 65 },
  ZT_ROUTE_NOT_FOUND: { http: 404, exit: 66 },
  // proxy
  ZT_REQUEST_AMBIGUOUS: { http: 400, exit: 64 },
  ZT_UPSTREAM_UNAVAILABLE: { http: 502, exit: 69 },
  ZT_UPSTREAM_TIMEOUT: { http: 504, exit: 69 },
  ZT_FORWARD_AUTH_UNTRUSTED: { http: 403, exit: 77 },
  // pki
  ZT_PKI_CSR_INVALID: { http: 400, exit: 65 },
  ZT_PKI_SAN_NOT_ALLOWED: { http: 403, exit: 77 },
  ZT_PKI_SPIFFE_ID_INVALID: { http: 400, exit: 65 },
  ZT_PKI_KEY_INVALID: { http: 400, exit: 65 },
  ZT_PKI_TTL_INVALID: { http: 400, exit: 65 },
  ZT_PKI_TOKEN_INVALID: { http: 401, exit: 77 },
  ZT_PKI_REVOKED: { http: 403, exit: 77 },
  ZT_PKI_NOT_INITIALISED: { http: 503, exit: 69 },
  // access & devices
  ZT_ACCESS_SELF_APPROVAL: { http: 403, exit: 77 },
  ZT_ACCESS_NOT_APPROVER: { http: 403, exit: 77 },
  ZT_ACCESS_STATE: { http: 409, exit: 65 },
  ZT_DEVICE_INVALID: { http: 400, exit: 65 },
  ZT_DEVICE_SIGNATURE: { http: 401, exit: 77 },
  // audit
  ZT_AUDIT_CHAIN_BROKEN: { http: 500, exit: 1 },
  ZT_AUDIT_CHECKPOINT_INVALID: { http: 400, exit: 1 },
  ZT_BANNED: { http: 403, exit: 77 },
  // segmentation
  ZT_SEG_MODEL_INVALID: { http: 400, exit: 65 },
  ZT_SEG_APPLY_FAILED: { http: 500, exit: 1 },
  ZT_SEG_NFT_UNAVAILABLE: { http: 503, exit: 69 },
  ZT_SEG_STATE_UNSAFE: { http: 500, exit: 77 },
} as const satisfies Record<string, { http: number; exit: number }>;

export type ZtErrorCode = keyof typeof ERROR_TABLE;

export type ZtErrorContext = Readonly<Record<string, unknown>>;

/** The one error type. `code` is stable; `message` is for humans; `context` is structured. */
export class ZtError extends Error {
  readonly code: ZtErrorCode;
  readonly context: ZtErrorContext;

  constructor(
    code: ZtErrorCode,
    message: string,
    context: ZtErrorContext = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ZtError";
    this.code = code;
    this.context = context;
  }

  get httpStatus(): number {
    return ERROR_TABLE[this.code].http;
  }

  get exitCode(): number {
    return ERROR_TABLE[this.code].exit;
  }

  /** The shape returned to API clients: stable code, human message, safe context. */
  toJSON(): { error: { code: ZtErrorCode; message: string } & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.context } };
  }
}

export function isZtError(e: unknown): e is ZtError {
  return e instanceof ZtError;
}

/** Wraps anything thrown into a ZtError; unknown errors become ZT_INTERNAL without leaking details. */
export function toZtError(e: unknown): ZtError {
  if (e instanceof ZtError) return e;
  return new ZtError("ZT_INTERNAL", "internal error", {}, { cause: e });
}

export function httpStatusFor(code: ZtErrorCode): number {
  return ERROR_TABLE[code].http;
}

export function exitCodeFor(code: ZtErrorCode): number {
  return ERROR_TABLE[code].exit;
}
