import { randomBytes } from "node:crypto";
import {
  readActiveGrants,
  readRevokedGrants,
  sshGrantContext,
  type ActiveGrant,
} from "../access/index.js";
import type { AppContext } from "../app/index.js";
import { countRevocationListBuild, isUserBanned } from "../audit/index.js";
import { ZtError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { CaSet } from "./ca-store.js";
import type { PkiSettings } from "./pki-config.js";
import { buildSshCertificate, DEFAULT_USER_EXTENSIONS, sshCertLine } from "./ssh/ssh-cert.js";
import { buildKrl } from "./ssh/ssh-krl.js";
import { RevocationListCache, type BuiltList } from "./revocation-list-cache.js";
import { parseSshPublicKey } from "./ssh/ssh-key.js";
import { spiffeIdProblem } from "./spiffe-id.js";
import type {
  SshSignAuthorizer,
  SshSignAuthzRequest,
  SshSignAuthzResult,
} from "./ssh-authorize.js";
import {
  boundByGrants,
  grantsShapingSsh,
  grantsNamedIn,
  keyIdGrants,
  type GrantBound,
  type SshGrantFacts,
} from "./ssh-grant-bound.js";
import {
  validateForceCommand,
  validateHostname,
  validateKnownHostsPattern,
  validatePrincipals,
  validateSourceAddresses,
} from "./ssh-validate.js";

const BACKDATE_MS = 60_000;

export interface SshUserSignRequest {
  /** The user's public key line (`ssh-ed25519 AAAA… comment`). */
  publicKey: string;
  /**
   * The zt user the certificate is for (must exist and be enabled); the Cedar principal
   * `User::"<user>"`. Leave empty when `service` is given.
   */
  user: string;
  /**
   * A workload asking instead of a user (an mTLS SVID on the API): its SPIFFE ID becomes
   * the Cedar principal `Service::"<spiffe id>"` and the key id names it.
   */
  service?: string | undefined;
  /** Seconds since the requester's last MFA (a session's), for `context.mfa_age_seconds`. */
  mfaAgeSeconds?: number | undefined;
  /** The host group being asked for (Cedar resource `HostGroup::"…"`). */
  hostGroup: string;
  principals: readonly string[];
  ttlMs?: number | undefined;
  sourceAddresses?: readonly string[] | undefined;
  forceCommand?: string | undefined;
  /** Extensions to leave out, e.g. `permit-pty` for --no-pty. */
  withoutExtensions?: readonly string[] | undefined;
  /** Who asked (CLI operator, API session) and from where. */
  actor: string;
  sourceIp?: string | undefined;
}

export interface SshHostSignRequest {
  publicKey: string;
  hostnames: readonly string[];
  ttlMs?: number | undefined;
  actor: string;
}

export interface SignedSshCert {
  serial: string;
  keyId: string;
  principals: string[];
  validAfterMs: number;
  validBeforeMs: number;
  /** The `…-cert.pub` file content. */
  certLine: string;
  decisionId: string | undefined;
}

/**
 * The SSH CA: Ed25519 user and host CAs (separate keys), certificates encoded per
 * PROTOCOL.certkeys, a KRL per PROTOCOL.krl. User signing is a policy decision.
 */
export class SshAuthority {
  readonly #ctx: AppContext;
  readonly #settings: PkiSettings;
  readonly #cas: () => CaSet;
  readonly #authorize: SshSignAuthorizer | undefined;
  /**
   * The KRL, built on first use and again after every SSH revocation or grant change made
   * or heard, a CA reload, an event resync, or `pki.crl_ttl` / 2.
   */
  readonly #krl: RevocationListCache<Buffer>;

  constructor(
    ctx: AppContext,
    settings: PkiSettings,
    cas: () => CaSet,
    authorize: SshSignAuthorizer | undefined,
  ) {
    this.#ctx = ctx;
    this.#settings = settings;
    this.#cas = cas;
    this.#authorize = authorize;
    this.#krl = new RevocationListCache({
      clock: ctx.clock,
      onBuild: () => countRevocationListBuild("ssh-krl"),
      build: (now) => this.#buildKrl(now),
    });
  }

  async loadRevocations(): Promise<void> {
    /* the KRL is built from the store on first use; nothing to preload */
  }

  /** A `cert.revoked` event of kind `ssh` (from any process): the KRL is built again. */
  onRevoked(_data: Record<string, unknown>): void {
    this.#krl.invalidate();
  }

  /**
   * Forgets the cached KRL: call once a change that it reads has committed (an SSH
   * revocation, a grant's status, the SSH CAs). The next `krl()` reads the store again.
   */
  invalidateKrl(): void {
    this.#krl.invalidate();
  }

  /** `TrustedUserCAKeys` line. */
  userCaLine(): string {
    return this.#cas().sshUser.publicLine;
  }

  /** `known_hosts` line trusting host certificates for `pattern` (default `*`). */
  knownHostsLine(pattern = "*"): string {
    return `@cert-authority ${validateKnownHostsPattern(pattern)} ${this.#cas().sshHost.publicLine}`;
  }

  /** Signs a user certificate if policy allows `ssh:sign` on the host group. Audited either way. */
  async signUser(req: SshUserSignRequest): Promise<SignedSshCert> {
    let decisionId: string | undefined;
    /** The user's active grants and what the decision saw of them (for the audit record). */
    let held: ActiveGrant[] = [];
    /** When `held` was read (its grants were active then). */
    let heldAt = 0;
    let facts: SshGrantFacts | undefined;
    try {
      const key = parseSshPublicKey(req.publicKey);
      const principals = validatePrincipals(req.principals);
      const sourceAddresses = validateSourceAddresses(req.sourceAddresses ?? []);
      const forceCommand = validateForceCommand(req.forceCommand);
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(req.hostGroup)) {
        throw new ZtError("ZT_BAD_REQUEST", "host group must be a simple name", {
          reason: "host-group-invalid",
        });
      }
      const ttlMs = req.ttlMs ?? this.#settings.sshUserTtlMs;
      if (!Number.isFinite(ttlMs) || ttlMs < 60_000 || ttlMs > this.#settings.sshMaxTtlMs) {
        throw new ZtError(
          "ZT_PKI_TTL_INVALID",
          `SSH certificate lifetime must be between 1m and ${Math.round(this.#settings.sshMaxTtlMs / 60_000)}m`,
          {
            reason: "ttl-invalid",
          },
        );
      }
      const who = await this.#principal(req);
      await this.#refuseRevokedKey(key.fingerprint);
      const without = new Set(req.withoutExtensions ?? []);
      const extensions = DEFAULT_USER_EXTENSIONS.filter((e) => !without.has(e));
      const now = this.#ctx.clock.now();
      const authorize = this.#authorize;
      if (!authorize) {
        throw new ZtError("ZT_POLICY_DENIED", "no policy engine is configured for ssh:sign", {
          reason: "policy-engine-unavailable",
        });
      }
      // Grants belong to users; read from the store, so a grant revoked a moment ago by
      // any process is already gone. `context.grants` / `context.breakglass` as at the PEP.
      held = who.type === "User" ? await readActiveGrants(this.#ctx.store.db, who.id, now) : [];
      heldAt = now;
      facts = sshGrantContext(held, req.hostGroup, now);
      const base: Omit<SshSignAuthzRequest, keyof SshGrantFacts> = {
        principalType: who.type,
        user: who.name,
        groups: who.groups,
        email: who.email,
        mfaAgeSeconds: req.mfaAgeSeconds,
        hostGroup: req.hostGroup,
        principals,
        ttlSeconds: Math.round(ttlMs / 1000),
        sourceAddresses,
        forceCommand,
        extensions,
        sourceIp: req.sourceIp,
        nowMs: now,
      };
      let decision: SshSignAuthzResult;
      try {
        decision = await authorize({ ...base, ...facts });
      } catch {
        // Fail closed: anything unexpected in the decision is a denial.
        decision = {
          allowed: false,
          decisionId: newId("dec"),
          reason: "policy-error",
          policies: [],
        };
      }
      decisionId = decision.decisionId;
      if (!decision.allowed) {
        throw new ZtError(
          "ZT_POLICY_DENIED",
          `policy denies ssh:sign on HostGroup::"${req.hostGroup}" (${decision.reason}); decision ${decision.decisionId}`,
          {
            reason: decision.reason,
            decision_id: decision.decisionId,
          },
        );
      }
      // An allow that needs a grant holds only while the grant does: the certificate ends
      // no later than that grant (a replay of the decision finds which one, see boundByGrants).
      const bound: GrantBound | undefined = await boundByGrants(
        held,
        req.hostGroup,
        now,
        async (f) => (await authorize({ ...base, ...f })).allowed,
      );
      const lifetimeMs = bound ? Math.min(ttlMs, bound.until - now) : ttlMs;
      const critical: Record<string, string> = {};
      if (forceCommand !== undefined) critical["force-command"] = forceCommand;
      if (sourceAddresses.length > 0) critical["source-address"] = sourceAddresses.join(",");
      const reliedOn = bound ? bound.reliedOn.map((g) => g.id) : [];
      const keyId =
        `zt:${who.type === "Service" ? "service" : "user"}=${who.name} decision=${decision.decisionId}` +
        (reliedOn.length > 0 ? ` ${keyIdGrants(reliedOn)}` : "");
      const signed = await this.#sign(
        "user",
        key,
        keyId,
        principals,
        now,
        lifetimeMs,
        critical,
        extensions,
        reliedOn,
      );
      if (reliedOn.length > 0) await this.#grantRevokedWhileSigning(signed.serial, reliedOn);
      this.#ctx.audit.record({
        kind: "ssh.sign",
        outcome: "success",
        subject: req.actor,
        sourceIp: req.sourceIp,
        action: "ssh:sign",
        decisionId: decision.decisionId,
        policies: decision.policies,
        reason: decision.reason,
        data: {
          ...(who.type === "Service" ? { service: who.name } : { user: who.name }),
          host_group: req.hostGroup,
          serial: signed.serial,
          principals,
          valid_before: signed.validBeforeMs,
          key: key.fingerprint,
          ...grantAuditData(held, heldAt, req.hostGroup, facts, bound, lifetimeMs < ttlMs),
        },
      });
      return { ...signed, decisionId: decision.decisionId };
    } catch (e) {
      const err =
        e instanceof ZtError ? e : new ZtError("ZT_INTERNAL", "internal error", {}, { cause: e });
      this.#ctx.audit.record({
        kind: "ssh.sign",
        outcome: err.code === "ZT_POLICY_DENIED" ? "deny" : "failure",
        subject: req.actor,
        sourceIp: req.sourceIp,
        action: "ssh:sign",
        decisionId,
        reason:
          typeof err.context["reason"] === "string" ? (err.context["reason"] as string) : err.code,
        data: {
          ...(req.service !== undefined ? { service: req.service } : { user: req.user }),
          host_group: req.hostGroup,
          code: err.code,
          ...(typeof err.context["key"] === "string" ? { key: err.context["key"] } : {}),
          ...grantAuditData(held, heldAt, req.hostGroup, facts, undefined, false),
        },
      });
      throw err;
    }
  }

  /** The Cedar principal of a signing request: an enabled zt user (with groups) or a workload. */
  async #principal(req: SshUserSignRequest): Promise<{
    type: "User" | "Service";
    /** The user's id (grants belong to it); empty for a service. */
    id: string;
    name: string;
    groups: string[];
    email?: string | null;
  }> {
    if (req.service !== undefined) {
      if (req.user !== "")
        throw new ZtError("ZT_BAD_REQUEST", "give a user or a service, not both", {
          reason: "principal-ambiguous",
        });
      // Verified by the caller (mTLS); checked again so a key id never carries junk.
      if (spiffeIdProblem(req.service) !== null)
        throw new ZtError("ZT_PKI_SPIFFE_ID_INVALID", "service: not a SPIFFE ID", {
          reason: "spiffe-id-invalid",
        });
      return { type: "Service", id: "", name: req.service, groups: [] };
    }
    const user = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "name", "email", "disabled"])
      .where("name", "=", req.user)
      .executeTakeFirst();
    if (!user)
      throw new ZtError("ZT_USER_NOT_FOUND", `no zt user ${req.user}`, {
        reason: "user-not-found",
      });
    if (user.disabled)
      throw new ZtError("ZT_USER_DISABLED", `user ${req.user} is disabled`, {
        reason: "user-disabled",
      });
    // An operator's ban on the user (`zt ban add user:…`) holds for SSH as at the PEP.
    if (isUserBanned(user.name, this.#ctx.clock.now(), { byOperator: true }))
      throw new ZtError("ZT_BANNED", `user ${req.user} is banned`, { reason: "user-banned" });
    const groups = await this.#ctx.store.db
      .selectFrom("user_groups")
      .select("group_name")
      .where("user_id", "=", user.id)
      .execute();
    return {
      type: "User",
      id: user.id,
      name: user.name,
      groups: groups.map((g) => g.group_name),
      email: user.email,
    };
  }

  /** A key revoked with `zt ssh revoke key.pub` gets no new certificate, user or host. */
  async #refuseRevokedKey(fingerprint: string): Promise<void> {
    const revokedKey = await this.#ctx.store.db
      .selectFrom("pki_ssh_revoked_keys")
      .select("key_fingerprint")
      .where("key_fingerprint", "=", fingerprint)
      .executeTakeFirst();
    if (revokedKey) {
      throw new ZtError("ZT_PKI_REVOKED", `the key ${fingerprint} is revoked`, {
        reason: "key-revoked",
        key: fingerprint,
      });
    }
  }

  /** Signs a host certificate (operator only). */
  async signHost(req: SshHostSignRequest): Promise<SignedSshCert> {
    try {
      const key = parseSshPublicKey(req.publicKey);
      if (req.hostnames.length === 0)
        throw new ZtError("ZT_BAD_REQUEST", "at least one --hostname is required", {
          reason: "hostname-missing",
        });
      const names = [...new Set(req.hostnames.map(validateHostname))];
      const ttlMs = req.ttlMs ?? this.#settings.sshHostTtlMs;
      if (!Number.isFinite(ttlMs) || ttlMs < 60_000 || ttlMs > 400 * 86_400_000) {
        throw new ZtError(
          "ZT_PKI_TTL_INVALID",
          "host certificate lifetime must be between 1m and 400d",
          { reason: "ttl-invalid" },
        );
      }
      await this.#refuseRevokedKey(key.fingerprint);
      const signed = await this.#sign(
        "host",
        key,
        `zt:host=${names[0]}`,
        names,
        this.#ctx.clock.now(),
        ttlMs,
        {},
        [],
      );
      this.#ctx.audit.record({
        kind: "ssh.host-sign",
        outcome: "success",
        subject: req.actor,
        data: { serial: signed.serial, hostnames: names, key: key.fingerprint },
      });
      return { ...signed, decisionId: undefined };
    } catch (e) {
      const err =
        e instanceof ZtError ? e : new ZtError("ZT_INTERNAL", "internal error", {}, { cause: e });
      this.#ctx.audit.record({
        kind: "ssh.host-sign",
        outcome: "failure",
        subject: req.actor,
        reason:
          typeof err.context["reason"] === "string" ? (err.context["reason"] as string) : err.code,
        ...(typeof err.context["key"] === "string"
          ? { data: { code: err.code, key: err.context["key"] } }
          : {}),
      });
      throw err;
    }
  }

  async #sign(
    type: "user" | "host",
    key: ReturnType<typeof parseSshPublicKey>,
    keyId: string,
    principals: string[],
    now: number,
    ttlMs: number,
    critical: Record<string, string>,
    extensions: readonly string[],
    /** The grants a user certificate relied on: revoking any of them revokes it (KRL). */
    grantIds: readonly string[] = [],
  ): Promise<Omit<SignedSshCert, "decisionId">> {
    const cas = this.#cas();
    const ca = type === "user" ? cas.sshUser : cas.sshHost;
    const validAfterMs = Math.floor((now - BACKDATE_MS) / 1000) * 1000;
    const validBeforeMs = Math.floor((now + ttlMs) / 1000) * 1000;
    for (let attempt = 0; ; attempt++) {
      // A random, non-zero 63-bit serial: unique per CA (the primary key catches a collision).
      const serial = (randomBytes(8).readBigUInt64BE() >> 1n) | 1n;
      const fullKeyId = `${keyId} serial=${serial}`;
      try {
        // One transaction: a certificate is never recorded without the grants it relied on.
        await this.#ctx.store.db.transaction().execute(async (trx) => {
          await trx
            .insertInto("pki_ssh_certs")
            .values({
              serial: serial.toString(),
              ca_id: ca.id,
              cert_type: type,
              key_id: fullKeyId,
              principals: JSON.stringify(principals),
              key_fingerprint: key.fingerprint,
              valid_after: validAfterMs,
              valid_before: validBeforeMs,
              created_at: now,
              revoked_at: null,
              revoke_reason: null,
            })
            .execute();
          if (grantIds.length > 0)
            await trx
              .insertInto("pki_ssh_cert_grants")
              .values(grantIds.map((g) => ({ serial: serial.toString(), grant_id: g })))
              .execute();
        });
      } catch (e) {
        if (attempt < 3) continue;
        throw e;
      }
      const blob = buildSshCertificate(
        { privateKey: ca.privateKey, publicBlob: ca.publicBlob },
        {
          key,
          serial,
          type,
          keyId: fullKeyId,
          principals,
          validAfter: BigInt(validAfterMs / 1000),
          validBefore: BigInt(validBeforeMs / 1000),
          criticalOptions: critical,
          extensions,
        },
      );
      return {
        serial: serial.toString(),
        keyId: fullKeyId,
        principals,
        validAfterMs,
        validBeforeMs,
        certLine: sshCertLine(blob, key.type, key.comment) + "\n",
      };
    }
  }

  /**
   * A grant revoked between the read of the user's grants and the record of the
   * certificate: its event may have been heard, and a KRL built and cached, before the
   * certificate was in the store, so that KRL lacks it. Checked after the record: a
   * revocation committed before this read is seen here (and every process told, by a
   * `cert.revoked` event, to build its KRL again); one committed after has its own
   * `grant.changed` event, heard after the certificate is in the store.
   */
  async #grantRevokedWhileSigning(serial: string, grantIds: readonly string[]): Promise<void> {
    const ended = await readRevokedGrants(this.#ctx.store.db, grantIds);
    if (ended.size === 0) return;
    this.#krl.invalidate();
    await this.#ctx.events.publish("cert.revoked", {
      kind: "ssh",
      serials: [serial],
      key: null,
      reason: "grant-revoked",
    });
  }

  /** Revokes a certificate by serial, or a key (and every certificate for it). */
  async revoke(req: {
    serial?: string | undefined;
    publicKey?: string | undefined;
    reason?: string | undefined;
    actor: string;
  }): Promise<{ serials: string[]; key?: string }> {
    const now = this.#ctx.clock.now();
    const reason = req.reason ?? "unspecified";
    // Free text, stored with the certificate, published and audited: bounded, and never a
    // control or format character (an escape sequence, a newline, a bidi override).
    if (!/^[^\p{Cc}\p{Cf}]{1,200}$/u.test(reason)) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `--reason: 1 to 200 characters without control characters, got ${JSON.stringify(reason.slice(0, 40))}${reason.length > 40 ? "…" : ""}`,
        { reason: "reason-invalid", field: "reason" },
      );
    }
    let serials: string[] = [];
    let fingerprint: string | undefined;
    if (req.serial !== undefined) {
      const serial = parseSshSerial(req.serial);
      const row = await this.#ctx.store.db
        .selectFrom("pki_ssh_certs")
        .select("serial")
        .where("serial", "=", serial)
        .executeTakeFirst();
      if (!row) {
        this.#ctx.audit.record({
          kind: "ssh.revoke",
          outcome: "failure",
          subject: req.actor,
          reason: "not-found",
          data: { serial },
        });
        throw new ZtError("ZT_NOT_FOUND", `no SSH certificate with serial ${serial}`);
      }
      serials = [row.serial];
    } else if (req.publicKey !== undefined) {
      const key = parseSshPublicKey(req.publicKey);
      fingerprint = key.fingerprint;
      await this.#ctx.store.db
        .insertInto("pki_ssh_revoked_keys")
        .values({
          key_fingerprint: key.fingerprint,
          key_blob: key.blob.toString("base64"),
          revoked_at: now,
          reason,
        })
        .onConflict((oc) => oc.column("key_fingerprint").doNothing())
        .execute();
      const rows = await this.#ctx.store.db
        .selectFrom("pki_ssh_certs")
        .select("serial")
        .where("key_fingerprint", "=", key.fingerprint)
        .where("revoked_at", "is", null)
        .execute();
      serials = rows.map((r) => r.serial);
    } else {
      throw new ZtError("ZT_USAGE", "give a serial or a public key to revoke");
    }
    if (serials.length > 0) {
      await this.#ctx.store.db
        .updateTable("pki_ssh_certs")
        .set({ revoked_at: now, revoke_reason: reason })
        .where("serial", "in", serials)
        .where("revoked_at", "is", null)
        .execute();
    }
    // After the commit: every KRL build from here on reads the revocation.
    this.#krl.invalidate();
    await this.#ctx.events.publish("cert.revoked", {
      kind: "ssh",
      serials,
      key: fingerprint ?? null,
      reason,
    });
    this.#ctx.audit.record({
      kind: "ssh.revoke",
      outcome: "success",
      subject: req.actor,
      reason,
      data: { serials, key: fingerprint ?? null },
    });
    return fingerprint ? { serials, key: fingerprint } : { serials };
  }

  /**
   * The KRL for sshd's `RevokedKeys`: revoked serials (certificates revoked with
   * `zt ssh revoke`, and user certificates one of whose grants was revoked since), and
   * revoked keys. Served from memory: once revoke() has returned here, or this process
   * has heard the event of a revocation or a grant change, the KRL includes it; a build
   * that started before is neither shared with later callers nor cached. Concurrent
   * callers share one build.
   */
  krl(): Promise<Buffer> {
    return this.#krl.get();
  }

  async #buildKrl(now: number): Promise<BuiltList<Buffer>> {
    const cas = this.#cas();
    const certs = await this.#ctx.store.db
      .selectFrom("pki_ssh_certs")
      .select(["serial", "ca_id", "revoked_at"])
      .where("revoked_at", "is not", null)
      .where("valid_before", ">", now)
      .execute();
    const keys = await this.#ctx.store.db
      .selectFrom("pki_ssh_revoked_keys")
      .select(["key_blob", "revoked_at"])
      .execute();
    // A certificate that relied on grants ends when any of them is revoked: the access
    // that permitted it is gone (which of them the allow could do without, the policy
    // alone knows). Its grants are recorded with it; those its key id names count too
    // (a certificate signed before they were recorded, or by an older replica).
    const recorded = await this.#ctx.store.db
      .selectFrom("pki_ssh_cert_grants as g")
      .innerJoin("pki_ssh_certs as c", "c.serial", "g.serial")
      .select(["c.serial", "c.ca_id", "g.grant_id"])
      .where("c.revoked_at", "is", null)
      .where("c.valid_before", ">", now)
      .execute();
    const named = await this.#ctx.store.db
      .selectFrom("pki_ssh_certs")
      .select(["serial", "ca_id", "key_id"])
      .where("revoked_at", "is", null)
      .where("valid_before", ">", now)
      .where("key_id", "like", "% grant=%")
      .execute();
    const bound = [
      ...recorded,
      ...named.flatMap((c) =>
        grantsNamedIn(c.key_id).map((g) => ({ serial: c.serial, ca_id: c.ca_id, grant_id: g })),
      ),
    ];
    const ended = await readRevokedGrants(this.#ctx.store.db, [
      ...new Set(bound.map((c) => c.grant_id)),
    ]);
    const listed = new Set<string>();
    for (const c of bound) {
      const at = ended.get(c.grant_id);
      if (at === undefined || listed.has(c.serial)) continue;
      listed.add(c.serial);
      certs.push({ serial: c.serial, ca_id: c.ca_id, revoked_at: at });
    }
    let version = 0;
    for (const r of [...certs, ...keys]) version = Math.max(version, Number(r.revoked_at));
    const value = buildKrl({
      version: BigInt(version),
      generatedAt: BigInt(Math.floor(now / 1000)),
      comment: "zt",
      certificates: [cas.sshUser, cas.sshHost].map((ca) => ({
        caBlob: ca.publicBlob,
        serials: certs.filter((c) => c.ca_id === ca.id).map((c) => BigInt(c.serial)),
      })),
      keyBlobs: keys.map((k) => Buffer.from(k.key_blob, "base64")),
    });
    // A KRL states no validity of its own; certificates that expire stay listed (harmless)
    // until the next build, at the latest this long after this one.
    return { value, refreshAtMs: now + this.#settings.crlTtlMs / 2 };
  }
}

/**
 * The grants of an `ssh:sign` decision for its audit record: the active grants that
 * could change it (`grants`: request ids; when the allow relied on grants, the
 * certificate relied on all of these), whether a break-glass was active for the host
 * group, and — when the allow relied on a grant — the grant it ends with and whether the
 * certificate was shortened to end with it. Nothing when no grant was held.
 */
function grantAuditData(
  held: readonly ActiveGrant[],
  now: number,
  hostGroup: string,
  facts: SshGrantFacts | undefined,
  bound: GrantBound | undefined,
  clamped: boolean,
): Record<string, unknown> {
  const relevant = grantsShapingSsh(held, hostGroup, now);
  if (relevant.length === 0) return {};
  return {
    grants: relevant.map((g) => g.id),
    ...(facts?.breakglass ? { breakglass: true } : {}),
    ...(bound
      ? {
          grant: { id: bound.grant.id, kind: bound.grant.kind, expires_at: bound.until },
          ttl_clamped_to_grant: clamped,
        }
      : {}),
  };
}

/** The largest SSH certificate serial: a uint64 (OpenSSH PROTOCOL.certkeys). */
const SSH_SERIAL_MAX = 18446744073709551615n;

/**
 * A serial as someone typed it (decimal; leading zeros as `0042` allowed) in the form zt
 * stores it (`42`). One past 64 bits is refused saying so: no certificate can have it.
 */
function parseSshSerial(text: string): string {
  const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
  if (!/^\d+$/.test(text))
    throw new ZtError("ZT_BAD_REQUEST", `SSH serial must be a decimal number, got ${shown}`);
  const digits = text.replace(/^0+(?=\d)/, "");
  if (digits.length > 20 || BigInt(digits) > SSH_SERIAL_MAX)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `SSH serial ${shown} is past 64 bits: a certificate serial is at most ${SSH_SERIAL_MAX}`,
    );
  return digits;
}
