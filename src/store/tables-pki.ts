/**
 * The PKI's tables: CA keys (sealed with the master key), issued X.509 certificates,
 * SSH certificates (and the grants they relied on), revoked SSH keys, registration
 * entries, join tokens and consumed renewal proofs.
 */
declare module "./tables.js" {
  interface Tables {
    pki_cas: PkiCasTable;
    pki_certs: PkiCertsTable;
    pki_ssh_certs: PkiSshCertsTable;
    pki_ssh_cert_grants: PkiSshCertGrantsTable;
    pki_ssh_revoked_keys: PkiSshRevokedKeysTable;
    pki_registrations: PkiRegistrationsTable;
    pki_join_tokens: PkiJoinTokensTable;
    pki_renew_proofs: PkiRenewProofsTable;
  }
}

export interface PkiCasTable {
  id: string;
  /** root | intermediate | ssh-user | ssh-host */
  kind: string;
  /** X.509 certificate PEM, or the OpenSSH public key line for SSH CAs. */
  cert: string;
  /** PKCS#8 DER of the private key, sealed (`SecretBox`, purpose `pki-ca:<id>`). */
  private_sealed: string;
  /** Issuing CA (null for a root or SSH CA). */
  parent_id: string | null;
  created_at: number;
  not_after: number;
  /** active | retired | discarded (lost a creation race; never trusted) */
  status: string;
}

export interface PkiCertsTable {
  /** Lowercase hex serial, no leading zeros beyond what DER needs. */
  serial: string;
  issuer_id: string;
  spiffe_id: string;
  /** JSON array of DNS names and IP addresses. */
  dns_names: string;
  not_before: number;
  not_after: number;
  created_at: number;
  /** SHA-256 of the subject public key (SPKI DER), hex. */
  key_sha256: string;
  /**
   * The subject key's type: `ec-p256`, `ec-p384`, `rsa-<bits>`, `ed25519`. Null for a
   * certificate issued before zt recorded it.
   */
  key_type: string | null;
  /** Who asked: `cli`, `token:<entry>`, `svid:<spiffe id>`, `zt:server`. */
  requested_by: string;
  revoked_at: number | null;
  revoke_reason: string | null;
}

export interface PkiSshCertsTable {
  /** uint64 serial as a decimal string. */
  serial: string;
  ca_id: string;
  /** user | host */
  cert_type: string;
  key_id: string;
  principals: string;
  /** SHA256 fingerprint of the certified key (OpenSSH `SHA256:…` form). */
  key_fingerprint: string;
  valid_after: number;
  valid_before: number;
  created_at: number;
  revoked_at: number | null;
  revoke_reason: string | null;
}

/**
 * The grants (access request ids) a user certificate relied on, one row each: the KRL
 * lists the certificate once any of them is revoked.
 */
export interface PkiSshCertGrantsTable {
  /** `pki_ssh_certs.serial`. */
  serial: string;
  grant_id: string;
}

export interface PkiSshRevokedKeysTable {
  /** OpenSSH `SHA256:…` fingerprint of the revoked key. */
  key_fingerprint: string;
  /** The public key blob, base64. */
  key_blob: string;
  revoked_at: number;
  reason: string | null;
}

export interface PkiRegistrationsTable {
  id: string;
  spiffe_id: string;
  /** JSON array of DNS names the holder may put in its SVID. */
  dns_names: string;
  /** Longest SVID lifetime for this entry, ms (null: the configured maximum). */
  max_ttl_ms: number | null;
  created_at: number;
}

export interface PkiJoinTokensTable {
  /** SHA-256 of the token, hex. The token itself is never stored. */
  token_hash: string;
  registration_id: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

/**
 * A renewal proof consumed: the current SVID's key signed a CSR for this new key, and zt
 * certified it (`serial`). Keyed on (spiffe_id, key_sha256), so a copy of the request is
 * refused as `renew-proof-replayed` however many arrive at once.
 */
export interface PkiRenewProofsTable {
  spiffe_id: string;
  /** SHA-256 of the new key's SPKI DER, hex (as `pki_certs.key_sha256`). */
  key_sha256: string;
  serial: string;
  used_at: number;
  /**
   * The notAfter of the SVID whose key signed the proof: past it (plus a clock-skew
   * margin) the row is pruned. Rows consumed before this column hold an upper bound.
   */
  signer_not_after: number;
}
