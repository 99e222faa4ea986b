/**
 * The purposes secrets are sealed under (`SecretBox` binds the purpose as associated
 * data): one place for every sealed column, so the code that seals, the code that opens
 * and the master key rotation can never disagree.
 */
export const sealedPurpose = {
  /** `keys.private_sealed`: a signing key (assertion, audit checkpoint …). */
  signingKey: (purpose: string) => `key:${purpose}`,
  /** `pki_cas.private_sealed`: a CA's private key. */
  ca: (id: string) => `pki-ca:${id}`,
  /** `users.totp_secret_sealed`: a user's TOTP secret. */
  totp: (userId: string) => `identity.totp:${userId}`,
} as const;
