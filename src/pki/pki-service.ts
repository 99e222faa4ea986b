import {
  createHash,
  generateKeyPairSync,
  verify as cryptoVerify,
  X509Certificate,
} from "node:crypto";
import { isIP } from "node:net";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { newId, newToken, sha256Hex } from "../core/ids.js";
import type { ZtEvent } from "../events/index.js";
import { CaStore, type CaSet, type IntermediateRotationResult, type X509Ca } from "./ca-store.js";
import { ClientCertVerifier, type ClientCertResult } from "./client-cert.js";
import { classifyKey, keyTypeName, parseCsr, type ParsedCsr } from "./csr.js";
import { toPem } from "./der.js";
import { buildSvidFast } from "./svid-der.js";
import { canonicalIpAddress } from "./ip-address.js";
import { CertRecorder, renewProofReplayed, type RecordConditions } from "./cert-recorder.js";
import { MAX_JOIN_TOKEN_TTL_MS, parsePkiSettings, type PkiSettings } from "./pki-config.js";
import { normaliseDnsName, parseWorkloadSpiffeId } from "./spiffe-id.js";
import { buildCrl, randomSerialHex, isRevocationReason, REVOCATION_REASONS } from "./x509-build.js";
import { SshAuthority } from "./ssh-authority.js";
import { RevocationListCache, type BuiltList } from "./revocation-list-cache.js";
import { countRevocationListBuild } from "../audit/index.js";
import { renewProofInput } from "./renewal.js";
import type { SshSignAuthorizer } from "./ssh-authorize.js";
import { quoteInput } from "../core/printable.js";

const BACKDATE_MS = 60_000;
/** Grant statuses that change nothing in the KRL (it lists certificates of revoked grants). */
const KRL_IGNORES_GRANT_STATUS: ReadonlySet<string> = new Set([
  "pending",
  "approved",
  "denied",
  "expired",
]);
/**
 * How long after the notAfter of the SVID that signed a renewal proof the consumed proof
 * is kept: a replica whose clock lags by up to this still refuses that SVID as expired
 * before the proof's row is gone.
 */
export const RENEW_PROOF_SKEW_MS = 5 * 60_000;
/** The shortest SVID lifetime anyone may ask for (and the least an issuer must have left). */
const MIN_SVID_TTL_MS = 60_000;

/** Who is asking for an SVID, as established by the edge (CLI, API, join token, mTLS). */
export type IssueAuth =
  /** An operator with direct access to the store and master key (the CLI). */
  | { kind: "admin"; actor: string }
  /** First contact: a single-use join token bound to a registration entry. */
  | { kind: "join-token"; token: string }
  /**
   * Renewal: a currently valid SVID. `possessionProven` when it came over mTLS;
   * otherwise the CSR must use the same key, or `proof` must be the old key's signature
   * over RENEW_PROOF_PREFIX + CSR DER.
   */
  | { kind: "svid"; certDer: Uint8Array; possessionProven?: boolean; proof?: Uint8Array };

export interface IssueSvidRequest {
  csr: string | Uint8Array;
  /** Defaults to the CSR's URI SAN. */
  spiffeId?: string | undefined;
  dnsNames?: readonly string[] | undefined;
  ttlMs?: number | undefined;
  auth: IssueAuth;
  sourceIp?: string | undefined;
}

export interface IssuedSvid {
  serial: string;
  spiffeId: string;
  dnsNames: string[];
  notBeforeMs: number;
  notAfterMs: number;
  /** The SVID alone. */
  certPem: string;
  /** SVID + intermediate: what a workload presents. */
  chainPem: string;
  /** Trust bundle (roots). */
  bundlePem: string;
}

export interface RevokeRequest {
  serial?: string | undefined;
  spiffeId?: string | undefined;
  reason?: string | undefined;
  actor: string;
}

export interface CertListRow {
  serial: string;
  spiffe_id: string;
  /** `ec-p256`, `ec-p384`, `rsa-<bits>`, `ed25519`; null for a certificate from before zt recorded it. */
  key_type: string | null;
  dns_names: string[];
  not_before: number;
  not_after: number;
  status: "valid" | "expired" | "revoked";
  revoke_reason: string | null;
  requested_by: string;
}

export interface RegistrationInput {
  spiffeId: string;
  dnsNames?: readonly string[];
  maxTtlMs?: number | undefined;
}

/** The `subject` of audit records for rotations zt made by itself. */
export const AUTO_ROTATE_ACTOR = "zt (automatic)";

/** What one automatic-rotation check found or did. */
export interface IntermediateCheckResult {
  /**
   * `rotated`: this process made a new intermediate. `not-due`: enough time left (or
   * another replica has just rotated). `due-auto-rotate-off`: due, but `pki.auto_rotate`
   * is false. `root-expiring`: due, but a new intermediate would end with the root too.
   */
  outcome: "rotated" | "not-due" | "due-auto-rotate-off" | "root-expiring";
  /** The active intermediate after the check (null: none, it expired). */
  intermediate: string | null;
  notAfterMs: number | null;
  /** The intermediate a rotation retired. */
  previous: string | null;
}

export interface PkiServiceOptions {
  authorizeSshSign?: SshSignAuthorizer;
}

interface ServerTlsEntry {
  key: string;
  cert: string;
  ca: string;
  renewAtMs: number;
}

/**
 * zt's PKI: an X.509 CA issuing SPIFFE X.509-SVIDs (with registration entries, join
 * tokens, renewal, revocation, CRL and an in-memory deny list) and an SSH CA.
 * Build one per AppContext with `pkiService(ctx)`.
 */
export class PkiService {
  readonly ctx: AppContext;
  readonly settings: PkiSettings;
  readonly ssh: SshAuthority;
  readonly #caStore: CaStore;
  #cas: CaSet;
  #issuerCerts: X509Certificate[];
  /** Serial (lowercase hex) → notAfter of every revoked, unexpired certificate. */
  readonly #denied = new Map<string, number>();
  readonly #verifier = new ClientCertVerifier();
  /**
   * Each intermediate's CRL (the active one and those retired but still verifying), built
   * on first use and again after every revocation made or heard, a CA reload, an event
   * resync, or half its validity. Only intermediates of the loaded CA set have an entry.
   */
  readonly #crls = new Map<string, RevocationListCache<Buffer>>();
  readonly #serverTls = new Map<string, ServerTlsEntry>();
  #unsubscribe: (() => void) | undefined;
  #unsubscribeResync: (() => void) | undefined;
  readonly #recorder: CertRecorder;

  private constructor(
    ctx: AppContext,
    settings: PkiSettings,
    caStore: CaStore,
    cas: CaSet,
    options: PkiServiceOptions,
  ) {
    this.ctx = ctx;
    this.settings = settings;
    this.#caStore = caStore;
    this.#cas = cas;
    this.#issuerCerts = cas.intermediates.map((i) => i.node);
    this.#recorder = new CertRecorder(ctx.store);
    this.ssh = new SshAuthority(ctx, settings, () => this.#cas, options.authorizeSshSign);
  }

  /** Loads the CAs (creating them when `create`), the deny list, and starts listening for revocations. */
  static async open(
    ctx: AppContext,
    options: PkiServiceOptions & { create?: boolean } = {},
  ): Promise<PkiService> {
    const settings = parsePkiSettings(ctx.config.pki, ctx.config.trust_domain);
    const caStore = new CaStore(ctx.store, ctx.box, ctx.clock, settings);
    let cas: CaSet | undefined;
    for (let attempt = 0; !cas; attempt++) {
      if (options.create) {
        const created = await caStore.ensure();
        for (const kind of created) {
          ctx.audit.record({
            kind: "ca.create",
            outcome: "success",
            subject: "zt",
            data: { ca: kind },
          });
        }
      }
      try {
        cas = await caStore.load();
      } catch (e) {
        // Another replica creating CAs at the same moment may have discarded ours: settle again.
        if (
          !options.create ||
          attempt >= 5 ||
          !(e instanceof ZtError) ||
          e.code !== "ZT_PKI_NOT_INITIALISED"
        )
          throw e;
      }
    }
    const svc = new PkiService(ctx, settings, caStore, cas, options);
    // Listen first, then load: a revocation landing in between is heard, not lost.
    svc.#unsubscribe = ctx.events.subscribe((e) => svc.#onEvent(e));
    // Events pruned past this process: a revocation it never heard may be missing from a
    // cached list, so every list is built again (the deny list and CAs are restated by
    // followEventResync).
    svc.#unsubscribeResync = ctx.events.onResync(async () => {
      svc.#invalidateRevocationLists();
    });
    try {
      await svc.#loadDenyList();
      await svc.ssh.loadRevocations();
    } catch (e) {
      svc.close();
      throw e;
    }
    return svc;
  }

  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#unsubscribeResync?.();
    this.#unsubscribeResync = undefined;
  }

  get cas(): CaSet {
    return this.#cas;
  }

  /**
   * Replaces the active intermediate now (`zt ca rotate-intermediate`); the old one
   * keeps verifying until it expires. Safe against concurrent rotations elsewhere.
   */
  async rotateIntermediate(actor: string): Promise<string> {
    const r = await this.#caStore.rotateIntermediate();
    await this.#announceRotation(actor, r);
    return r.id;
  }

  /**
   * The automatic rotation check (run periodically by `zt up`): when the active
   * intermediate has less than `pki.intermediate_rotate_before` left, by the injected
   * clock, make a new one — unless `pki.auto_rotate` is false, or another replica
   * already did. Throws on a store failure; the caller retries later.
   */
  async checkIntermediateRotation(): Promise<IntermediateCheckResult> {
    const within = this.settings.intermediateRotateBeforeMs;
    if (!this.settings.autoRotate) {
      const active = await this.#caStore.activeIntermediate();
      const due = !active || active.notAfterMs - this.ctx.clock.now() < within;
      return {
        outcome: due ? "due-auto-rotate-off" : "not-due",
        intermediate: active?.id ?? null,
        notAfterMs: active?.notAfterMs ?? null,
        previous: null,
      };
    }
    const r = await this.#caStore.rotateIntermediate({ ifExpiresWithinMs: within });
    if (r.rotated) await this.#announceRotation(AUTO_ROTATE_ACTOR, r);
    // Rotated by another process whose event we have not heard (yet): catch up.
    else if (r.id !== this.#cas.activeIntermediate.id) await this.reloadCas();
    return {
      outcome: r.rotated ? "rotated" : (r.skipped ?? "not-due"),
      intermediate: r.id,
      notAfterMs: r.notAfterMs,
      previous: r.previousId,
    };
  }

  /**
   * Deletes the consumed renewal proofs that no longer matter (run periodically by `zt up`,
   * with the rotation check): those whose signing SVID ended more than
   * RENEW_PROOF_SKEW_MS ago by the injected clock. A replay of such a proof is refused as
   * that SVID is expired; while it is valid the row stays and refuses the replay. Returns
   * how many rows went.
   */
  async pruneRenewProofs(): Promise<number> {
    const r = await this.ctx.store.db
      .deleteFrom("pki_renew_proofs")
      .where("signer_not_after", "<", this.ctx.clock.now() - RENEW_PROOF_SKEW_MS)
      .executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  /** After a rotation: audit it, switch this process, and tell the others (`config.changed`). */
  async #announceRotation(actor: string, r: IntermediateRotationResult): Promise<void> {
    // Recorded first: the rotation is in the store whatever fails below.
    this.ctx.audit.record({
      kind: "ca.rotate",
      outcome: "success",
      subject: actor,
      data: { intermediate: r.id, previous: r.previousId, not_after: r.notAfterMs },
    });
    let failure: unknown;
    try {
      await this.reloadCas();
    } catch (e) {
      failure = e;
    }
    try {
      await this.ctx.events.publish("config.changed", { component: "pki", intermediate: r.id });
    } catch (e) {
      failure ??= e;
    }
    if (failure !== undefined) throw failure;
  }

  async reloadCas(): Promise<void> {
    this.#cas = await this.#caStore.load();
    this.#issuerCerts = this.#cas.intermediates.map((i) => i.node);
    this.#verifier.clear();
    this.#invalidateRevocationLists();
    for (const id of this.#crls.keys())
      if (!this.#cas.intermediates.some((i) => i.id === id)) this.#crls.delete(id);
    this.#serverTls.clear();
  }

  // ---------------------------------------------------------------- issuance

  /**
   * Issues an X.509-SVID for a CSR, if `auth` may hold the requested identity.
   * Every issuance and every refusal is audited (`svid.issue`).
   */
  async issueSvid(req: IssueSvidRequest): Promise<IssuedSvid> {
    const actor = describeAuth(req.auth);
    try {
      const csr = parseCsr(req.csr);
      const issued = await this.#authorizeAndIssue(csr, req);
      this.ctx.audit.record({
        kind: "svid.issue",
        outcome: "success",
        subject: actor,
        sourceIp: req.sourceIp,
        data: {
          serial: issued.serial,
          spiffe_id: issued.spiffeId,
          dns: issued.dnsNames,
          not_after: issued.notAfterMs,
        },
      });
      return issued;
    } catch (e) {
      const err =
        e instanceof ZtError ? e : new ZtError("ZT_INTERNAL", "internal error", {}, { cause: e });
      this.ctx.audit.record({
        kind: "svid.issue",
        outcome: "failure",
        subject: actor,
        sourceIp: req.sourceIp,
        reason:
          typeof err.context["reason"] === "string" ? (err.context["reason"] as string) : err.code,
        data: { code: err.code, requested: req.spiffeId ?? null },
      });
      throw err;
    }
  }

  /**
   * Issues an SVID for a key zt generates itself (the CLI's `cert issue --out`, zt's own
   * listener). Returns the private key PEM with it. Caller is an operator.
   * `beforeIssue` runs once the request is found valid, before anything is issued: the
   * CLI prepares its --out folder there, so bad input writes nothing and a folder that
   * cannot take the key costs no certificate.
   */
  async issueSvidWithNewKey(options: {
    spiffeId: string;
    dnsNames?: readonly string[];
    ttlMs?: number | undefined;
    actor: string;
    beforeIssue?: () => void;
  }): Promise<IssuedSvid & { keyPem: string }> {
    const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = pair.publicKey.export({ format: "der", type: "spki" });
    let callerFailed: { error: unknown } | undefined;
    try {
      const id = parseWorkloadSpiffeId(options.spiffeId, this.settings.trustDomain).uri;
      const { dns, ips } = splitNames(options.dnsNames ?? []);
      const ttlMs = this.#ttl(options.ttlMs, null);
      try {
        options.beforeIssue?.();
      } catch (e) {
        callerFailed = { error: e };
        throw e;
      }
      const issued = await this.#issue(
        { spki, type: "ec-p256" },
        id,
        dns,
        ips,
        ttlMs,
        options.actor,
      );
      this.ctx.audit.record({
        kind: "svid.issue",
        outcome: "success",
        subject: options.actor,
        data: {
          serial: issued.serial,
          spiffe_id: issued.spiffeId,
          dns: issued.dnsNames,
          not_after: issued.notAfterMs,
        },
      });
      return {
        ...issued,
        keyPem: pair.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      };
    } catch (e) {
      // The caller's own step (its folder) failed: nothing was asked of the CA.
      if (callerFailed) throw callerFailed.error;
      const err =
        e instanceof ZtError ? e : new ZtError("ZT_INTERNAL", "internal error", {}, { cause: e });
      this.ctx.audit.record({
        kind: "svid.issue",
        outcome: "failure",
        subject: options.actor,
        reason:
          typeof err.context["reason"] === "string" ? (err.context["reason"] as string) : err.code,
        data: { code: err.code, requested: options.spiffeId },
      });
      throw err;
    }
  }

  async #authorizeAndIssue(csr: ParsedCsr, req: IssueSvidRequest): Promise<IssuedSvid> {
    const td = this.settings.trustDomain;
    if (csr.uris.length > 1) {
      throw new ZtError(
        "ZT_PKI_SAN_NOT_ALLOWED",
        "an X.509-SVID holds exactly one SPIFFE ID; the CSR asks for several",
        {
          reason: "san-multiple-uris",
        },
      );
    }
    const requestedUri = req.spiffeId ?? csr.uris[0];
    if (!requestedUri) {
      throw new ZtError(
        "ZT_PKI_SPIFFE_ID_INVALID",
        "no SPIFFE ID requested (give spiffe_id or a URI SAN in the CSR)",
        {
          reason: "spiffe-id-missing",
        },
      );
    }
    if (req.spiffeId !== undefined && csr.uris[0] !== undefined && csr.uris[0] !== req.spiffeId) {
      throw new ZtError(
        "ZT_PKI_SAN_NOT_ALLOWED",
        "the CSR's URI SAN differs from the requested SPIFFE ID",
        {
          reason: "san-mismatch",
        },
      );
    }
    const spiffeId = parseWorkloadSpiffeId(requestedUri, td).uri;
    const { dns, ips } = splitNames([...csr.dnsNames, ...csr.ips, ...(req.dnsNames ?? [])]);
    const now = this.ctx.clock.now();
    const subjectKey = { spki: csr.spki, type: keyTypeName(csr.keyType, csr.publicKey) };

    const auth = req.auth;
    if (auth.kind === "admin") {
      return this.#issue(subjectKey, spiffeId, dns, ips, this.#ttl(req.ttlMs, null), auth.actor);
    }
    if (auth.kind === "join-token") {
      const tokenHash = sha256Hex(auth.token);
      const row = await this.ctx.store.db
        .selectFrom("pki_join_tokens")
        .innerJoin("pki_registrations", "pki_registrations.id", "pki_join_tokens.registration_id")
        .select([
          "pki_join_tokens.expires_at",
          "pki_join_tokens.used_at",
          "pki_registrations.id as reg_id",
          "pki_registrations.spiffe_id",
          "pki_registrations.dns_names",
          "pki_registrations.max_ttl_ms",
        ])
        .where("pki_join_tokens.token_hash", "=", tokenHash)
        .executeTakeFirst();
      if (!row || row.used_at !== null || Number(row.expires_at) <= now) {
        throw new ZtError("ZT_PKI_TOKEN_INVALID", "join token is unknown, used or expired", {
          reason: !row ? "token-unknown" : row.used_at !== null ? "token-used" : "token-expired",
        });
      }
      this.#checkAllowed(spiffeId, dns, ips, row.spiffe_id, parseJsonList(row.dns_names));
      const ttl = this.#ttl(req.ttlMs, row.max_ttl_ms === null ? null : Number(row.max_ttl_ms));
      // Single use: only the request that flips used_at gets the certificate.
      const res = await this.ctx.store.db
        .updateTable("pki_join_tokens")
        .set({ used_at: now })
        .where("token_hash", "=", tokenHash)
        .where("used_at", "is", null)
        .where("expires_at", ">", now)
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) {
        throw new ZtError("ZT_PKI_TOKEN_INVALID", "join token is unknown, used or expired", {
          reason: "token-used",
        });
      }
      return this.#issue(subjectKey, spiffeId, dns, ips, ttl, `token:${row.reg_id}`);
    }
    // Renewal with a current SVID.
    const current = this.verifyClientCertificate(auth.certDer, now);
    if (!current.ok) {
      throw new ZtError(
        current.reason === "cert-revoked" ? "ZT_PKI_REVOKED" : "ZT_AUTH_FAILED",
        `current SVID refused: ${current.reason}`,
        {
          reason: current.reason,
        },
      );
    }
    if (current.spiffeId !== spiffeId) {
      throw new ZtError(
        "ZT_PKI_SAN_NOT_ALLOWED",
        `an SVID for ${current.spiffeId} can only renew that identity`,
        {
          reason: "san-not-allowed",
        },
      );
    }
    const oldCert = new X509Certificate(auth.certDer);
    const sameKey = Buffer.from(oldCert.publicKey.export({ format: "der", type: "spki" })).equals(
      csr.spki,
    );
    if (!auth.possessionProven && !sameKey) {
      if (!auth.proof || !verifyRenewProof(oldCert, csr.der, auth.proof)) {
        throw new ZtError(
          "ZT_AUTH_FAILED",
          "renewal with a new key needs a proof signed by the current SVID's key",
          {
            reason: "renew-proof-invalid",
          },
        );
      }
      // The proof covers the CSR alone, so the same request sent again verifies again. Its
      // key is new by definition: one zt has certified for this identity makes it a replay
      // (which would certify again a key whose certificate was revoked as compromised).
      const seen = await this.ctx.store.db
        .selectFrom("pki_certs")
        .select("serial")
        .where("spiffe_id", "=", spiffeId)
        .where("key_sha256", "=", createHash("sha256").update(csr.spki).digest("hex"))
        .executeTakeFirst();
      // A copy that passes this read together with another is stopped when its certificate
      // is recorded: the proof is consumed there, by an insert only one copy wins.
      if (seen) throw renewProofReplayed();
    }
    const reg = await this.ctx.store.db
      .selectFrom("pki_registrations")
      .selectAll()
      .where("spiffe_id", "=", spiffeId)
      .executeTakeFirst();
    // The store, not this process's deny list, is the authority: a revocation made by
    // another process (the CLI, a replica) may not have reached us as an event yet.
    const previous = await this.ctx.store.db
      .selectFrom("pki_certs")
      .select(["dns_names", "revoked_at"])
      .where("serial", "=", current.serial)
      .executeTakeFirst();
    if (!previous || previous.revoked_at !== null) {
      if (previous) this.#denied.set(current.serial, current.notAfterMs);
      throw new ZtError(
        previous ? "ZT_PKI_REVOKED" : "ZT_AUTH_FAILED",
        previous ? "current SVID refused: cert-revoked" : "current SVID refused: cert-unknown",
        { reason: previous ? "cert-revoked" : "cert-unknown" },
      );
    }
    const allowedNames = [
      ...parseJsonList(reg?.dns_names ?? "[]"),
      ...parseJsonList(previous?.dns_names ?? "[]"),
    ];
    this.#checkAllowed(spiffeId, dns, ips, spiffeId, allowedNames);
    const ttl = this.#ttl(req.ttlMs, reg?.max_ttl_ms == null ? null : Number(reg.max_ttl_ms));
    return this.#issue(subjectKey, spiffeId, dns, ips, ttl, `svid:${spiffeId}`, {
      renews: current.serial,
      consumesProof:
        !auth.possessionProven && !sameKey ? { signerNotAfterMs: current.notAfterMs } : undefined,
    });
  }

  #checkAllowed(
    spiffeId: string,
    dns: string[],
    ips: string[],
    allowedId: string,
    allowedNames: string[],
  ): void {
    if (spiffeId !== allowedId) {
      throw new ZtError("ZT_PKI_SAN_NOT_ALLOWED", `this credential may not hold ${spiffeId}`, {
        reason: "san-not-allowed",
      });
    }
    // Entries stored before IPs were canonicalised may spell an address another way.
    const allowed = new Set(allowedNames.map((n) => canonicalIpAddress(n) ?? n.toLowerCase()));
    for (const n of [...dns, ...ips]) {
      if (!allowed.has(n)) {
        throw new ZtError(
          "ZT_PKI_SAN_NOT_ALLOWED",
          `this credential may not put ${n} in its certificate`,
          {
            reason: "san-not-allowed",
          },
        );
      }
    }
  }

  #ttl(requested: number | undefined, entryMax: number | null): number {
    const max = Math.min(this.settings.svidMaxTtlMs, entryMax ?? Infinity);
    const ttl = requested ?? Math.min(this.settings.svidTtlMs, max);
    if (!Number.isFinite(ttl) || ttl < MIN_SVID_TTL_MS || ttl > max) {
      throw new ZtError(
        "ZT_PKI_TTL_INVALID",
        `SVID lifetime must be between 1m and ${Math.round(max / 60_000)}m`,
        {
          reason: "ttl-invalid",
        },
      );
    }
    return ttl;
  }

  async #issue(
    subjectKey: { spki: Buffer; type: string },
    spiffeId: string,
    dns: string[],
    ips: string[],
    ttlMs: number,
    requestedBy: string,
    conditions: RecordConditions = {},
  ): Promise<IssuedSvid> {
    const issuer = await this.#usableIssuer();
    const spki = subjectKey.spki;
    const now = this.ctx.clock.now();
    const notBeforeMs = now - BACKDATE_MS;
    // Never beyond the issuer (which #usableIssuer keeps at least MIN_SVID_TTL_MS away).
    const notAfterMs = Math.min(now + ttlMs, issuer.notAfterMs);
    const serial = randomSerialHex();
    const der = buildSvidFast(issuer.fast, {
      serial,
      spiffeId,
      dnsNames: dns,
      ips,
      notBefore: new Date(notBeforeMs),
      notAfter: new Date(notAfterMs),
      spki,
    });
    await this.#recorder.record(
      {
        serial,
        issuer_id: issuer.id,
        spiffe_id: spiffeId,
        dns_names: JSON.stringify([...dns, ...ips]),
        not_before: notBeforeMs,
        // X.509 times have second precision.
        not_after: Math.floor(notAfterMs / 1000) * 1000,
        created_at: now,
        key_sha256: createHash("sha256").update(spki).digest("hex"),
        key_type: subjectKey.type,
        requested_by: requestedBy,
        revoked_at: null,
        revoke_reason: null,
      },
      conditions,
    );
    const certPem = toPem(der, "CERTIFICATE");
    return {
      serial,
      spiffeId,
      dnsNames: [...dns, ...ips],
      notBeforeMs,
      notAfterMs: Math.floor(notAfterMs / 1000) * 1000,
      certPem,
      chainPem: certPem + issuer.pem,
      bundlePem: this.bundlePem(),
    };
  }

  /**
   * The active intermediate, if it can still sign an SVID of the shortest lifetime. If
   * not, another process may have rotated it (and its event not reached us): reload from
   * the store once. Otherwise refuse rather than sign a certificate that ends before it
   * starts.
   */
  async #usableIssuer(): Promise<X509Ca> {
    const usable = (ca: X509Ca) => ca.notAfterMs - this.ctx.clock.now() >= MIN_SVID_TTL_MS;
    if (usable(this.#cas.activeIntermediate)) return this.#cas.activeIntermediate;
    const stale = this.#cas.activeIntermediate;
    try {
      await this.reloadCas();
    } catch (e) {
      if (!(e instanceof ZtError) || e.code !== "ZT_PKI_NOT_INITIALISED") throw e;
    }
    if (usable(this.#cas.activeIntermediate)) return this.#cas.activeIntermediate;
    throw new ZtError(
      "ZT_PKI_NOT_INITIALISED",
      `the active intermediate CA ${stale.id} expires at ${new Date(stale.notAfterMs).toISOString()}: ` +
        "run `zt init`, which creates a new one (`zt up` rotates it ahead of expiry unless pki.auto_rotate is false; " +
        "or rotate with `zt ca rotate-intermediate` before it expires)",
      { reason: "ca-expired" },
    );
  }

  // ---------------------------------------------------------------- registrations

  async addRegistration(
    input: RegistrationInput,
    actor: string,
  ): Promise<{ id: string; spiffeId: string; dnsNames: string[] }> {
    const spiffeId = parseWorkloadSpiffeId(input.spiffeId, this.settings.trustDomain).uri;
    const { dns, ips } = splitNames(input.dnsNames ?? []);
    if (input.maxTtlMs !== undefined) this.#ttl(input.maxTtlMs, null);
    const id = newId("reg");
    const existing = await this.ctx.store.db
      .selectFrom("pki_registrations")
      .select("id")
      .where("spiffe_id", "=", spiffeId)
      .executeTakeFirst();
    if (existing)
      throw new ZtError("ZT_CONFLICT", `a registration for ${spiffeId} exists (${existing.id})`);
    await this.ctx.store.db
      .insertInto("pki_registrations")
      .values({
        id,
        spiffe_id: spiffeId,
        dns_names: JSON.stringify([...dns, ...ips]),
        max_ttl_ms: input.maxTtlMs ?? null,
        created_at: this.ctx.clock.now(),
      })
      .execute();
    this.ctx.audit.record({
      kind: "pki.registration.add",
      outcome: "success",
      subject: actor,
      data: { id, spiffe_id: spiffeId },
    });
    return { id, spiffeId, dnsNames: [...dns, ...ips] };
  }

  async listRegistrations(): Promise<
    { id: string; spiffe_id: string; dns_names: string[]; max_ttl_ms: number | null }[]
  > {
    const rows = await this.ctx.store.db
      .selectFrom("pki_registrations")
      .selectAll()
      .orderBy("spiffe_id")
      .execute();
    return rows.map((r) => ({
      id: r.id,
      spiffe_id: r.spiffe_id,
      dns_names: parseJsonList(r.dns_names),
      max_ttl_ms: r.max_ttl_ms === null ? null : Number(r.max_ttl_ms),
    }));
  }

  /** A single-use join token for a registration entry (by id or SPIFFE ID). Returned once, stored hashed. */
  async createJoinToken(
    entry: string,
    actor: string,
    ttlMs?: number,
  ): Promise<{ token: string; expiresAtMs: number; registrationId: string }> {
    // Bounded exactly as pki.join_token_ttl is.
    if (
      ttlMs !== undefined &&
      (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_JOIN_TOKEN_TTL_MS)
    ) {
      throw new ZtError(
        "ZT_PKI_TTL_INVALID",
        "join token lifetime must be above 0 and at most 30d (the bound of pki.join_token_ttl)",
        { reason: "ttl-invalid" },
      );
    }
    const reg = await this.ctx.store.db
      .selectFrom("pki_registrations")
      .selectAll()
      .where((eb) => eb.or([eb("id", "=", entry), eb("spiffe_id", "=", entry)]))
      .executeTakeFirst();
    if (!reg) throw new ZtError("ZT_NOT_FOUND", `no registration entry ${quoteInput(entry)}`);
    const token = `ztjoin_${newToken()}`;
    const now = this.ctx.clock.now();
    const expiresAtMs = now + (ttlMs ?? this.settings.joinTokenTtlMs);
    await this.ctx.store.db
      .insertInto("pki_join_tokens")
      .values({
        token_hash: sha256Hex(token),
        registration_id: reg.id,
        created_at: now,
        expires_at: expiresAtMs,
        used_at: null,
      })
      .execute();
    this.ctx.audit.record({
      kind: "pki.join-token.create",
      outcome: "success",
      subject: actor,
      data: { registration: reg.id, expires_at: expiresAtMs },
    });
    return { token, expiresAtMs, registrationId: reg.id };
  }

  // ---------------------------------------------------------------- listing, revocation, CRL

  async listCerts(options: { all?: boolean } = {}): Promise<CertListRow[]> {
    const now = this.ctx.clock.now();
    let q = this.ctx.store.db.selectFrom("pki_certs").selectAll().orderBy("created_at", "desc");
    if (!options.all) q = q.where("not_after", ">", now);
    const rows = await q.limit(10_000).execute();
    return rows.map((r) => ({
      serial: r.serial,
      spiffe_id: r.spiffe_id,
      key_type: r.key_type,
      dns_names: parseJsonList(r.dns_names),
      not_before: Number(r.not_before),
      not_after: Number(r.not_after),
      status: r.revoked_at !== null ? "revoked" : Number(r.not_after) <= now ? "expired" : "valid",
      revoke_reason: r.revoke_reason,
      requested_by: r.requested_by,
    }));
  }

  /**
   * Revokes by serial or by SPIFFE ID (every unexpired SVID of it): the deny list drops
   * it at once here and, through `cert.revoked`, in every PEP; the CRL is regenerated.
   */
  async revoke(req: RevokeRequest): Promise<string[]> {
    const reason = req.reason ?? "unspecified";
    if (!isRevocationReason(reason)) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `unknown revocation reason ${quoteInput(String(reason))}; one of ${Object.keys(REVOCATION_REASONS).join(", ")}`,
      );
    }
    if ((req.serial === undefined) === (req.spiffeId === undefined)) {
      throw new ZtError("ZT_USAGE", "give exactly one of a serial or --spiffe-id");
    }
    let serial: string | undefined;
    if (req.serial !== undefined) {
      serial = req.serial
        .toLowerCase()
        .replace(/:/g, "")
        .replace(/^(00)+/, "");
      if (!/^[0-9a-f]{1,40}$/.test(serial))
        throw new ZtError(
          "ZT_BAD_REQUEST",
          `serial: expected a certificate serial number in hexadecimal (as zt cert list shows it; never all zeros), got ${JSON.stringify(req.serial.slice(0, 80))}`,
        );
    }
    const now = this.ctx.clock.now();
    let tokensInvalidated = 0;
    const rows = await this.ctx.store.db.transaction().execute(async (trx) => {
      const out: { serial: string; not_after: number }[] = [];
      if (req.spiffeId !== undefined) {
        // The identity is revoked: its registration's unused join tokens must not issue it
        // a fresh SVID (they read as used). Tokens made afterwards work again.
        const burnt = await trx
          .updateTable("pki_join_tokens")
          .set({ used_at: now })
          .where("used_at", "is", null)
          .where("registration_id", "in", (eb) =>
            eb.selectFrom("pki_registrations").select("id").where("spiffe_id", "=", req.spiffeId!),
          )
          .executeTakeFirst();
        tokensInvalidated = Number(burnt.numUpdatedRows);
      }
      // By SPIFFE ID, repeat until a pass finds nothing: a renewal that held one of this
      // identity's rows (CertRecorder) made the pass wait for its commit, and the next
      // pass sees its new certificate. (PostgreSQL; on SQLite the second pass is empty.)
      for (let pass = 0; pass < 20; pass++) {
        let q = trx
          .updateTable("pki_certs")
          .set({ revoked_at: now, revoke_reason: reason })
          .where("revoked_at", "is", null);
        q =
          serial !== undefined
            ? q.where("serial", "=", serial)
            : q.where("spiffe_id", "=", req.spiffeId!).where("not_after", ">", now);
        const hit = await q.returning(["serial", "not_after"]).execute();
        out.push(...hit);
        if (hit.length === 0 || serial !== undefined) break;
      }
      return out;
    });
    if (rows.length === 0) {
      this.ctx.audit.record({
        kind: "svid.revoke",
        outcome: "failure",
        subject: req.actor,
        reason: "not-found",
        data: {
          serial: req.serial ?? null,
          spiffe_id: req.spiffeId ?? null,
          ...(req.spiffeId !== undefined ? { join_tokens_invalidated: tokensInvalidated } : {}),
        },
      });
      throw new ZtError(
        "ZT_NOT_FOUND",
        tokensInvalidated > 0
          ? `no unrevoked certificate matches (${tokensInvalidated} unused join token(s) of ${req.spiffeId} invalidated)`
          : "no unrevoked certificate matches",
      );
    }
    const serials = rows.map((r) => r.serial);
    for (const r of rows) this.#denied.set(r.serial, Number(r.not_after));
    // After the commit: every CRL build from here on reads the revocation.
    this.#invalidateCrl();
    // Recorded before the event: every PEP's `session.cut` of a connection on these
    // serials names this record (`revoke_id`).
    const revokeId = this.ctx.audit.record({
      kind: "svid.revoke",
      outcome: "success",
      subject: req.actor,
      reason,
      data: {
        serials,
        spiffe_id: req.spiffeId ?? null,
        ...(req.spiffeId !== undefined ? { join_tokens_invalidated: tokensInvalidated } : {}),
      },
    });
    await this.ctx.events.publish("cert.revoked", {
      kind: "x509",
      serials,
      not_after: rows.map((r) => Number(r.not_after)),
      reason,
      revoke_id: revokeId,
    });
    await this.crlDer();
    return serials;
  }

  isRevoked(serialHex: string): boolean {
    return this.#denied.has(serialHex);
  }

  /**
   * The DER CRL of an intermediate (default: the active one; any other of the loaded CA
   * set, e.g. one retired by a rotation), served from memory and rebuilt after any
   * revocation. Once revoke() has returned (or this process has heard a `cert.revoked`
   * event), the CRL includes that revocation: a build that started before it is neither
   * shared with later callers nor cached (see RevocationListCache). Concurrent requests
   * share one build; a CRL is built again at half its validity.
   */
  async crlDer(issuerId?: string): Promise<Buffer> {
    const issuer = issuerId
      ? this.#cas.intermediates.find((i) => i.id === issuerId)
      : this.#cas.activeIntermediate;
    if (!issuer) throw new ZtError("ZT_NOT_FOUND", `no CA ${issuerId}`);
    let cache = this.#crls.get(issuer.id);
    if (!cache) {
      const id = issuer.id;
      cache = new RevocationListCache({
        clock: this.ctx.clock,
        onBuild: () => countRevocationListBuild("x509-crl"),
        build: (now) => {
          // The CA set as it is when the build starts (a reload may have replaced it).
          const current = this.#cas.intermediates.find((i) => i.id === id);
          if (!current) throw new ZtError("ZT_NOT_FOUND", `no CA ${id}`);
          return this.#buildCrl(current, now);
        },
      });
      this.#crls.set(id, cache);
    }
    return cache.get();
  }

  /** Every cached list (each intermediate's CRL and the KRL) is built again on next use. */
  #invalidateRevocationLists(): void {
    this.#invalidateCrl();
    this.ssh.invalidateKrl();
  }

  #invalidateCrl(): void {
    for (const cache of this.#crls.values()) cache.invalidate();
  }

  async #buildCrl(issuer: X509Ca, now: number): Promise<BuiltList<Buffer>> {
    const rows = await this.ctx.store.db
      .selectFrom("pki_certs")
      .select(["serial", "revoked_at", "revoke_reason"])
      .where("issuer_id", "=", issuer.id)
      .where("revoked_at", "is not", null)
      .where("not_after", ">", now)
      .execute();
    const nextUpdate = Math.min(now + this.settings.crlTtlMs, issuer.notAfterMs);
    const der = await buildCrl(
      issuer,
      rows.map((r) => ({
        serial: r.serial,
        revokedAt: new Date(Number(r.revoked_at)),
        // a reason stored before it was checked as an own key counts as unspecified
        reason: isRevocationReason(r.revoke_reason) ? REVOCATION_REASONS[r.revoke_reason] : 0,
      })),
      // Backdated like certificates, so a verifier whose clock lags a little accepts it.
      new Date(now - BACKDATE_MS),
      new Date(nextUpdate),
      BigInt(now),
    );
    // Built again at half its validity, well before its nextUpdate. (An issuer past its
    // end makes no fresher CRL by building it on every request.)
    const refreshInMs = nextUpdate > now ? (nextUpdate - now) / 2 : this.settings.crlTtlMs / 2;
    return { value: der, refreshAtMs: now + refreshInMs };
  }

  async #loadDenyList(): Promise<void> {
    const rows = await this.ctx.store.db
      .selectFrom("pki_certs")
      .select(["serial", "not_after"])
      .where("revoked_at", "is not", null)
      .where("not_after", ">", this.ctx.clock.now())
      .execute();
    for (const r of rows) this.#denied.set(r.serial, Number(r.not_after));
  }

  /** Expired certificates fail validity anyway: drop them from the deny list. */
  #pruneDenyList(): void {
    const now = this.ctx.clock.now();
    for (const [serial, notAfter] of this.#denied) if (notAfter <= now) this.#denied.delete(serial);
  }

  #onEvent(e: ZtEvent): void {
    if (e.kind === "config.changed" && e.data["component"] === "pki") {
      // An intermediate rotated by another process (CLI, replica): sign with it, trust it.
      if (e.data["intermediate"] === this.#cas.activeIntermediate.id) return;
      void this.reloadCas().catch(() => undefined);
      return;
    }
    // A grant revoked (or ended with its user's deletion) revokes the SSH certificates that
    // relied on it: the KRL reads which grants are revoked. A change to a status the KRL
    // does not read leaves it as it is (requests and approvals are frequent); any other,
    // an unknown one included, has it built again.
    if (e.kind === "grant.changed") {
      if (!KRL_IGNORES_GRANT_STATUS.has(String(e.data["status"]))) this.ssh.invalidateKrl();
      return;
    }
    if (e.kind !== "cert.revoked") return;
    this.#pruneDenyList();
    if (e.data["kind"] === "x509" && Array.isArray(e.data["serials"])) {
      const notAfter = Array.isArray(e.data["not_after"]) ? (e.data["not_after"] as unknown[]) : [];
      (e.data["serials"] as unknown[]).forEach((s, i) => {
        if (typeof s === "string")
          this.#denied.set(
            s,
            typeof notAfter[i] === "number" ? (notAfter[i] as number) : Number.MAX_SAFE_INTEGER,
          );
      });
      this.#invalidateCrl();
      void this.crlDer().catch(() => undefined);
    } else if (e.data["kind"] === "ssh") {
      this.ssh.onRevoked(e.data);
    } else {
      // Not a kind this version knows: whatever it revoked, no list keeps serving without it.
      this.#invalidateRevocationLists();
    }
  }

  // ---------------------------------------------------------------- verification and TLS

  /**
   * Checks a client certificate (DER, or a PeerCertificate from node:tls) on the hot
   * path: chain to zt's CA, validity at `nowMs`, SPIFFE ID and trust domain, deny list.
   */
  verifyClientCertificate(
    peer: { raw?: Buffer } | Uint8Array | undefined | null,
    nowMs: number,
  ): ClientCertResult {
    try {
      const der = peer instanceof Uint8Array ? peer : peer?.raw;
      return this.#verifier.verify(
        {
          trustDomain: this.settings.trustDomain,
          issuers: this.#issuerCerts,
          isRevoked: (s) => this.#denied.has(s),
        },
        der,
        nowMs,
      );
    } catch {
      return { ok: false, reason: "cert-untrusted" };
    }
  }

  /** Root certificates (PEM) that verify SVIDs: the trust bundle. */
  bundlePem(): string {
    return this.#cas.roots.map((r) => r.pem).join("");
  }

  /** The SPIFFE trust bundle: a JWK set, one key per root with `use: x509-svid` and x5c. */
  spiffeBundle(): {
    keys: Record<string, unknown>[];
    spiffe_sequence: number;
    spiffe_refresh_hint: number;
  } {
    return {
      keys: this.#cas.roots.map((r) => ({
        ...r.node.publicKey.export({ format: "jwk" }),
        use: "x509-svid",
        x5c: [r.der.toString("base64")],
      })),
      spiffe_sequence: Math.max(
        ...this.#cas.roots.map((r) => Math.floor(r.cert.notBefore.getTime() / 1000)),
      ),
      spiffe_refresh_hint: Math.max(60, Math.floor(this.settings.svidTtlMs / 2000)),
    };
  }

  /**
   * Key and certificate chain for one of zt's own TLS listeners (or its client side
   * towards upstreams), issued from zt's CA and re-issued at half its lifetime.
   */
  async serverTls(
    spiffePath: string,
    hostnames: readonly string[],
  ): Promise<{ key: string; cert: string; ca: string }> {
    const cacheKey = `${spiffePath}|${[...hostnames].sort().join(",")}`;
    const now = this.ctx.clock.now();
    const hit = this.#serverTls.get(cacheKey);
    if (hit && now < hit.renewAtMs) return { key: hit.key, cert: hit.cert, ca: hit.ca };
    const issued = await this.issueSvidWithNewKey({
      spiffeId: `spiffe://${this.settings.trustDomain}${spiffePath}`,
      dnsNames: hostnames,
      actor: "zt",
    });
    const entry: ServerTlsEntry = {
      key: issued.keyPem,
      cert: issued.chainPem,
      ca: issued.bundlePem,
      renewAtMs: issued.notBeforeMs + (issued.notAfterMs - issued.notBeforeMs) / 2,
    };
    this.#serverTls.set(cacheKey, entry);
    return { key: entry.key, cert: entry.cert, ca: entry.ca };
  }
}

function describeAuth(auth: IssueAuth): string {
  if (auth.kind === "admin") return auth.actor;
  if (auth.kind === "join-token") return "join-token";
  // How the current SVID's key was proven: the TLS handshake, or a signature in the body.
  return auth.possessionProven ? "svid:mtls" : "svid";
}

function splitNames(names: readonly string[]): { dns: string[]; ips: string[] } {
  const dns = new Set<string>();
  const ips = new Set<string>();
  if (names.length > 64)
    throw new ZtError("ZT_BAD_REQUEST", "at most 64 DNS names", { reason: "too-many-names" });
  for (const n of names) {
    if (isIP(n) === 0) {
      dns.add(normaliseDnsName(n));
      continue;
    }
    // One canonical text per address: the allow-list compares it, the certificate encodes it.
    const ip = canonicalIpAddress(n);
    if (ip === undefined) {
      throw new ZtError("ZT_BAD_REQUEST", `${n} is not an IP address a certificate can hold`, {
        reason: "ip-invalid",
      });
    }
    ips.add(ip);
  }
  return { dns: [...dns], ips: [...ips] };
}

function parseJsonList(text: string): string[] {
  try {
    const v = JSON.parse(text) as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function verifyRenewProof(oldCert: X509Certificate, csrDer: Buffer, proof: Uint8Array): boolean {
  try {
    const key = oldCert.publicKey;
    const type = classifyKey(key);
    const hash = type === "ed25519" ? null : type === "ec-p384" ? "sha384" : "sha256";
    return cryptoVerify(
      hash,
      renewProofInput(csrDer),
      type.startsWith("ec-") ? { key, dsaEncoding: "der" } : key,
      proof,
    );
  } catch {
    return false;
  }
}
