import { randomBytes } from "node:crypto";
import type { Kysely, Transaction } from "kysely";
import { announceEndedAccess, endAccessOfUser, type AccessRequest } from "../access/index.js";
import type { AppContext } from "../app/index.js";
import { isUserBanned } from "../audit/index.js";
import { ZtError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import { revokeSessionsOfUser, type SessionInfo, type SessionService } from "../session/index.js";
import type { Tables, UsersTable } from "../store/index.js";
import { hashBackupCodes, generateBackupCodes, matchBackupCode } from "./backup-codes.js";
import { identitySettings, type IdentitySettings } from "./identity-config.js";
import {
  EMPTY_LOCKOUT,
  MAX_FAILURES_REMEMBERED,
  releaseAttempt,
  reserveAttempt,
  settleFailure,
  settleSuccess,
  type LockoutState,
} from "./lockout.js";
import {
  MIN_PASSWORD_LENGTH,
  NAME_RE,
  parseEmail,
  parseGroupName,
  parseGroupNames,
  parseUserName,
} from "./names.js";
import {
  DUMMY_PASSWORD_HASH,
  needsRehash,
  hashPassword,
  MAX_PASSWORD_LENGTH,
  verifyPassword,
} from "./password-hash.js";
import { sourceKey } from "./source-key.js";
import { newTotpSecret, totpUri, verifyTotp } from "./totp-verifier.js";
import { sealedPurpose } from "../keys/sealed-purposes.js";

/** A user as other capabilities see it: never a secret. */
export interface UserInfo {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
  disabled: boolean;
  createdAt: number;
}

export interface AddUserOptions {
  name: string;
  groups?: string[];
  /** Omit to have a strong random password generated (returned once). */
  password?: string;
  email?: string;
}

export interface MfaEnrolment {
  totpSecret: string;
  /** `otpauth://totp/…` with the issuer from `mfa.issuer`. */
  totpUri: string;
  /** Ten single-use codes, shown once; only their hashes are stored. */
  backupCodes: string[];
}

export interface AddUserResult extends MfaEnrolment {
  user: UserInfo;
  /** Only when it was generated. */
  password?: string;
}

export interface AuthenticateOptions {
  username: string;
  password: string;
  totp?: string;
  backupCode?: string;
  sourceIp: string;
}

/** Stable reasons for a refused login; the same strings go into the audit record. */
export type LoginFailureReason =
  | "auth-failed"
  | "user-disabled"
  | "mfa-required"
  | "mfa-invalid"
  | "mfa-malformed"
  | "mfa-replayed"
  | "mfa-locked"
  | "mfa-not-enrolled"
  | "user-banned";

const TOTP_PURPOSE = sealedPurpose.totp;
/** Every this many settled attempts, lockout rows idle for longer than a full lockout are deleted. */
const PRUNE_EVERY = 64;

type Db = Kysely<Tables> | Transaction<Tables>;

/** One sign-in attempt in flight: its input and how each outcome is settled and audited. */
interface LoginAttempt {
  options: AuthenticateOptions;
  /** The normalised user name, when it is a valid name at all. */
  name: string | undefined;
  now: number;
  fail(
    code: ZtError["code"],
    reason: LoginFailureReason,
    message: string,
    detail?: string,
  ): Promise<ZtError>;
  refuseDisabled(name: string): Promise<ZtError>;
  succeed(method: "totp" | "backup-code"): Promise<void>;
}

/**
 * The identity provider: users, groups, passwords (scrypt), TOTP (RFC 6238) with replay
 * protection, backup codes, and brute-force lockout per user and per source address.
 * Admin changes publish events so the Policy Administrator can re-check live sessions.
 */
export class IdentityService {
  readonly #ctx: AppContext;
  readonly #settings: IdentitySettings;
  #settles = 0;
  /** What each successful `authenticate` proved, for `signIn`'s last read (by result object). */
  readonly #proven = new WeakMap<UserInfo, { passwordHash: string; totpSealed: string | null }>();

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    this.#settings = identitySettings(ctx.config);
  }

  get #db(): Kysely<Tables> {
    return this.#ctx.store.db;
  }

  /**
   * Creates a user with a TOTP secret and backup codes. Groups are created on first use.
   * Publishes `user.added`, so every PEP's entity snapshot knows the user before they sign in.
   */
  async addUser(options: AddUserOptions): Promise<AddUserResult> {
    const name = parseUserName(options.name);
    const groups = parseGroupNames(options.groups ?? []);
    const email = options.email === undefined ? null : parseEmail(options.email);
    let generated: string | undefined;
    let password = options.password;
    if (password === undefined) {
      generated = randomBytes(15).toString("base64url");
      password = generated;
    } else {
      checkPasswordPolicy(password);
    }
    if (await this.#findByName(this.#db, name)) throw userExists(name);
    const [passwordHash, enrolment] = await Promise.all([
      hashPassword(password),
      this.#newEnrolment(name),
    ]);
    const now = this.#ctx.clock.now();
    const id = newId("usr");
    try {
      await this.#db.transaction().execute(async (trx) => {
        await trx
          .insertInto("users")
          .values({
            id,
            name,
            email,
            password_hash: passwordHash,
            totp_secret_sealed: this.#ctx.box.seal(TOTP_PURPOSE(id), enrolment.totpSecret),
            totp_last_step: 0,
            disabled: 0,
            created_at: now,
            updated_at: now,
          })
          .execute();
        await this.#writeGroups(trx, id, groups, now);
        await this.#writeBackupCodes(trx, id, enrolment.hashes);
      });
    } catch (e) {
      if (await this.#findByName(this.#db, name)) throw userExists(name);
      throw e;
    }
    this.#ctx.audit.record({ kind: "user.add", outcome: "info", subject: name, data: { groups } });
    // Every PEP learns the user now, not at its next restart (it may serve their next request).
    await this.#ctx.events.publish("user.added", { userId: id, name, groups });
    const user: UserInfo = { id, name, email, groups, disabled: false, createdAt: now };
    return {
      user,
      ...(generated !== undefined ? { password: generated } : {}),
      totpSecret: enrolment.totpSecret,
      totpUri: enrolment.totpUri,
      backupCodes: enrolment.backupCodes,
    };
  }

  async getUser(name: string): Promise<UserInfo | undefined> {
    if (typeof name !== "string" || !NAME_RE.test(name)) return undefined;
    const row = await this.#findByName(this.#db, name);
    return row ? this.#toInfo(row, await this.groupsOf(row.id)) : undefined;
  }

  async getUserById(id: string): Promise<UserInfo | undefined> {
    const row = await this.#db
      .selectFrom("users")
      .selectAll()
      .where("id", "=", id)
      .executeTakeFirst();
    return row ? this.#toInfo(row, await this.groupsOf(row.id)) : undefined;
  }

  async listUsers(): Promise<UserInfo[]> {
    const rows = await this.#db.selectFrom("users").selectAll().orderBy("name").execute();
    const memberships = await this.#db
      .selectFrom("user_groups")
      .select(["user_id", "group_name"])
      .orderBy("group_name")
      .execute();
    const byUser = new Map<string, string[]>();
    for (const m of memberships) {
      const list = byUser.get(m.user_id) ?? [];
      list.push(m.group_name);
      byUser.set(m.user_id, list);
    }
    return rows.map((r) => this.#toInfo(r, byUser.get(r.id) ?? []));
  }

  /** Group names of a user, sorted. */
  async groupsOf(userId: string): Promise<string[]> {
    const rows = await this.#db
      .selectFrom("user_groups")
      .select("group_name")
      .where("user_id", "=", userId)
      .orderBy("group_name")
      .execute();
    return rows.map((r) => r.group_name);
  }

  /**
   * Disables or enables a user; live sessions hear `user.disabled` / `user.enabled`.
   * Disabling also revokes every session of the user in the store (reason
   * `user-disabled`), whether or not a zt process is running to hear the event, so
   * enabling the user again later does not bring an old session back. For the same
   * reason it ends the user's pending access requests and active grants, JIT and
   * break-glass alike (revoked by `zt`, reason `user-disabled`), in the transaction
   * that disables them.
   */
  async setDisabled(name: string, disabled: boolean): Promise<UserInfo> {
    const row = await this.#require(name);
    const now = this.#ctx.clock.now();
    let ended: AccessRequest[] = [];
    await this.#db.transaction().execute(async (trx) => {
      await trx
        .updateTable("users")
        .set({ disabled: disabled ? 1 : 0, updated_at: now })
        .where("id", "=", row.id)
        .execute();
      if (disabled) ended = await endAccessOfUser(trx, row.id, now);
    });
    if (disabled) await revokeSessionsOfUser(this.#ctx, row.id, "user-disabled");
    const kind = disabled ? "user.disabled" : "user.enabled";
    const recordId = this.#ctx.audit.record({
      kind: disabled ? "user.disable" : "user.enable",
      outcome: "info",
      subject: row.name,
      ...(ended.length ? { data: { access_revoked: ended.map((r) => r.id) } } : {}),
    });
    // `revoke_id`: the record a cut made on hearing this event names (as for session.revoked).
    await this.#ctx.events.publish(kind, {
      userId: row.id,
      name: row.name,
      ...(disabled ? { revoke_id: recordId } : {}),
    });
    await announceEndedAccess(this.#ctx, ended, "user-disabled");
    return this.#toInfo({ ...row, disabled: disabled ? 1 : 0 }, await this.groupsOf(row.id));
  }

  /** Replaces a user's groups. */
  async setGroups(name: string, groups: string[]): Promise<UserInfo> {
    const next = parseGroupNames(groups);
    return this.#changeGroups(name, () => next);
  }

  async addToGroup(name: string, group: string): Promise<UserInfo> {
    const g = parseGroupName(group);
    return this.#changeGroups(name, (current) => [...current, g]);
  }

  async removeFromGroup(name: string, group: string): Promise<UserInfo> {
    const g = parseGroupName(group);
    return this.#changeGroups(name, (current) => current.filter((x) => x !== g));
  }

  /** Adds and removes groups in one change (one event). */
  async changeGroups(
    name: string,
    change: { add?: string[]; remove?: string[] },
  ): Promise<UserInfo> {
    const add = parseGroupNames(change.add ?? [], "add");
    const remove = new Set(parseGroupNames(change.remove ?? [], "remove"));
    return this.#changeGroups(name, (current) => [
      ...current.filter((g) => !remove.has(g)),
      ...add,
    ]);
  }

  /**
   * New TOTP secret and backup codes; codes of the old secret stop working at once, and
   * every session of the user is revoked (reason `mfa-reset`): a session won with the
   * old factor does not outlive it.
   */
  async resetMfa(name: string): Promise<MfaEnrolment> {
    const row = await this.#require(name);
    const enrolment = await this.#newEnrolment(row.name);
    const now = this.#ctx.clock.now();
    await this.#db.transaction().execute(async (trx) => {
      await trx
        .updateTable("users")
        .set({
          totp_secret_sealed: this.#ctx.box.seal(TOTP_PURPOSE(row.id), enrolment.totpSecret),
          totp_last_step: 0,
          updated_at: now,
        })
        .where("id", "=", row.id)
        .execute();
      await trx.deleteFrom("backup_codes").where("user_id", "=", row.id).execute();
      await this.#writeBackupCodes(trx, row.id, enrolment.hashes);
    });
    const revoked = await revokeSessionsOfUser(this.#ctx, row.id, "mfa-reset");
    this.#ctx.audit.record({
      kind: "mfa.reset",
      outcome: "info",
      subject: row.name,
      data: { sessions_revoked: revoked.length },
    });
    await this.#ctx.events.publish("mfa.reset", { userId: row.id, name: row.name });
    return {
      totpSecret: enrolment.totpSecret,
      totpUri: enrolment.totpUri,
      backupCodes: enrolment.backupCodes,
    };
  }

  /**
   * Checks password + second factor (TOTP or a backup code). Order: lockout (per user and
   * per source address) → banned user name → password → disabled → second factor. Throws
   * ZtError with `context.reason` set to a LoginFailureReason; every attempt is audited,
   * never a secret.
   */
  async authenticate(options: AuthenticateOptions): Promise<UserInfo> {
    const now = this.#ctx.clock.now();
    const rawName =
      typeof options.username === "string" ? options.username.trim().toLowerCase() : "";
    const validName = NAME_RE.test(rawName);
    // An invalid name is not logged: people type passwords into the username field.
    const subject = validName ? rawName : undefined;
    const sourceIp = typeof options.sourceIp === "string" ? options.sourceIp : "";
    const keys = [...(validName ? [`user:${rawName}`] : []), sourceKey(sourceIp)];
    const audit = (
      outcome: "success" | "failure",
      reason: string | undefined,
      data?: Record<string, unknown>,
    ) =>
      this.#ctx.audit.record({
        kind: "login",
        outcome,
        // No user by that name: what was typed may be a password put in the wrong field,
        // and the audit log keeps it for good (hash-chained). Only known names are kept.
        subject: reason === "unknown-user" ? undefined : subject,
        sourceIp,
        reason,
        data,
      });

    const reserved = await this.#reserve(keys, now);
    if (!reserved.ok) {
      audit("failure", "mfa-locked");
      throw new ZtError("ZT_MFA_LOCKED", "too many failed sign-in attempts; try again later", {
        reason: "mfa-locked",
        retry_after_seconds: Math.max(Math.ceil(reserved.retryAfterMs / 1000), 1),
      });
    }
    let audited = false;
    const attempt: LoginAttempt = {
      options,
      name: validName ? rawName : undefined,
      now,
      fail: async (code, reason, message, detail) => {
        audit("failure", detail ?? reason);
        audited = true;
        await this.#settle(keys, "failure", now);
        return new ZtError(code, message, { reason });
      },
      refuseDisabled: async (name) => {
        audit("failure", "user-disabled");
        audited = true;
        // Counted like a wrong password: the client gets the same answer for both, and an
        // attempt left uncounted would show in the lockout that this password is right.
        await this.#settle(keys, "failure", now);
        return new ZtError("ZT_USER_DISABLED", `user ${name} is disabled`, {
          reason: "user-disabled",
        });
      },
      succeed: async (method) => {
        await this.#settle(keys, "success", now);
        audit("success", undefined, { method });
        audited = true;
      },
    };
    try {
      return await this.#checkCredentials(attempt);
    } catch (e) {
      // Fail closed, and leave a trace: anything unexpected is a refusal with an audit record.
      // The reserved attempt stays counted as a failure.
      if (!audited) audit("failure", "internal-error");
      throw e;
    }
  }

  /**
   * Banned name, password, disabled, then the second factor; every outcome goes through
   * `attempt`.
   */
  async #checkCredentials(attempt: LoginAttempt): Promise<UserInfo> {
    const { options, now, fail } = attempt;
    const password = typeof options.password === "string" ? options.password : "";
    const backupCode =
      typeof options.backupCode === "string" && options.backupCode.trim() !== ""
        ? options.backupCode
        : undefined;
    const totp =
      typeof options.totp === "string" && options.totp.trim() !== "" ? options.totp : undefined;
    // A backup code costs a scrypt of its own. A refusal made before the codes are looked at
    // spends it too: otherwise the time would tell that the password was right.
    const refuse = async (refusal: () => Promise<ZtError>): Promise<ZtError> => {
      if (totp === undefined && backupCode !== undefined) await matchBackupCode(backupCode, []);
      return refusal();
    };
    // A banned user name (`zt ban add user:…`, or a login jail) signs in no more until the
    // ban ends, whatever the password; audited as such (no jail counts it). A jail only
    // bans names that exist (an unknown name's attempts have no subject), so the refusal
    // must look like an unknown name's from outside: the same answer, a scrypt's time,
    // and counted towards the lockout.
    if (attempt.name !== undefined && isUserBanned(attempt.name, now)) {
      await verifyPassword(password, DUMMY_PASSWORD_HASH);
      throw await refuse(() =>
        fail("ZT_AUTH_FAILED", "user-banned", "invalid username, password or code"),
      );
    }
    const row = attempt.name ? await this.#findByName(this.#db, attempt.name) : undefined;
    // Unknown users cost one scrypt too, so response time does not reveal who exists.
    const passwordOk = await verifyPassword(password, row?.password_hash ?? DUMMY_PASSWORD_HASH);
    if (!row || !passwordOk) {
      throw await refuse(() =>
        fail(
          "ZT_AUTH_FAILED",
          "auth-failed",
          "invalid username or password",
          row ? "bad-password" : "unknown-user",
        ),
      );
    }
    if (row.disabled) {
      throw await refuse(() => attempt.refuseDisabled(row.name));
    }

    let method: "totp" | "backup-code";
    if (totp !== undefined) {
      method = "totp";
      if (!row.totp_secret_sealed) {
        throw await fail(
          "ZT_MFA_INVALID",
          "mfa-not-enrolled",
          "no authenticator is enrolled for this user",
        );
      }
      const secret = this.#ctx.box
        .open(TOTP_PURPOSE(row.id), row.totp_secret_sealed)
        .toString("utf8");
      const result = verifyTotp({
        secret,
        code: totp,
        nowMs: now,
        lastAcceptedStep: row.totp_last_step,
      });
      if (!result.ok) {
        throw result.reason === "mfa-replayed"
          ? await fail(
              "ZT_MFA_REPLAYED",
              "mfa-replayed",
              "this code was already used; wait for the next one",
            )
          : await fail("ZT_MFA_INVALID", result.reason, "invalid authentication code");
      }
      // RFC 6238 §5.2: the step is consumed atomically, so two concurrent logins with one
      // code cannot both pass (the second UPDATE matches no row).
      const claimed = await this.#db
        .updateTable("users")
        .set({ totp_last_step: result.step })
        .where("id", "=", row.id)
        .where("totp_last_step", "<", result.step)
        .executeTakeFirst();
      if (Number(claimed.numUpdatedRows) !== 1) {
        throw await fail(
          "ZT_MFA_REPLAYED",
          "mfa-replayed",
          "this code was already used; wait for the next one",
        );
      }
    } else if (backupCode !== undefined) {
      method = "backup-code";
      const codes = await this.#db
        .selectFrom("backup_codes")
        .select(["id", "code_hash", "used_at"])
        .where("user_id", "=", row.id)
        .orderBy("id")
        .execute();
      const index = await matchBackupCode(
        backupCode,
        codes.map((c) => c.code_hash),
      );
      const match = index >= 0 ? codes[index] : undefined;
      if (!match) throw await fail("ZT_MFA_INVALID", "mfa-invalid", "invalid authentication code");
      const claimed = await this.#db
        .updateTable("backup_codes")
        .set({ used_at: now })
        .where("id", "=", match.id)
        .where("used_at", "is", null)
        .executeTakeFirst();
      if (Number(claimed.numUpdatedRows) !== 1) {
        throw await fail("ZT_MFA_REPLAYED", "mfa-replayed", "this backup code was already used");
      }
    } else {
      throw await fail("ZT_MFA_INVALID", "mfa-required", "an authentication code is required");
    }

    // The row was read before the password check (a scrypt). An admin change committed
    // since (new password, MFA reset, disable) has revoked the user's sessions already:
    // this sign-in must not go on to make a new one with what that change replaced.
    const current = await this.#db
      .selectFrom("users")
      .select(["password_hash", "totp_secret_sealed", "disabled"])
      .where("id", "=", row.id)
      .executeTakeFirst();
    if (current?.disabled) throw await attempt.refuseDisabled(row.name);
    if (
      !current ||
      current.totp_secret_sealed !== row.totp_secret_sealed ||
      (current.password_hash !== row.password_hash &&
        // A concurrent sign-in may have upgraded the hash of this same password.
        !(await verifyPassword(password, current.password_hash)))
    ) {
      throw await fail(
        "ZT_AUTH_FAILED",
        "auth-failed",
        "invalid username or password",
        "credentials-changed",
      );
    }

    await attempt.succeed(method);
    let passwordHash = current.password_hash;
    if (needsRehash(current.password_hash)) {
      // Parameters were raised since this hash was made: upgrade it now that we know the password.
      const upgraded = await hashPassword(
        typeof options.password === "string" ? options.password : "",
      );
      const r = await this.#db
        .updateTable("users")
        .set({ password_hash: upgraded })
        .where("id", "=", row.id)
        .where("password_hash", "=", current.password_hash)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) passwordHash = upgraded;
    }
    const info = this.#toInfo(row, await this.groupsOf(row.id));
    this.#proven.set(info, { passwordHash, totpSealed: current.totp_secret_sealed });
    return info;
  }

  /**
   * A sign-in that ends in a session: `authenticate`, then `beforeSession` (the PEP
   * refreshes its view of the user), the session, and a last read of the user.
   *
   * An admin change (new password, MFA reset, disable) revokes the sessions it finds. One
   * that commits after `authenticate`'s re-read but before the session row exists finds
   * no such row, and the session would outlive it. Read after the insert, the user row
   * shows any change that committed before this read, and one that commits after it
   * finds the new row to revoke: either way no session outlives the change. When the
   * last read shows a change, the user's sessions are revoked (reason
   * `credentials-changed`) and the sign-in refused like any other (ZT_AUTH_FAILED, or
   * ZT_USER_DISABLED), audited as a failed login.
   */
  async signIn(
    options: AuthenticateOptions,
    sessions: SessionService,
    session: { userAgent: string; beforeSession?: (user: UserInfo) => Promise<void> },
  ): Promise<{ user: UserInfo; session: SessionInfo; token: string }> {
    const user = await this.authenticate(options);
    await session.beforeSession?.(user);
    const created = await sessions.create({
      userId: user.id,
      sourceIp: options.sourceIp,
      userAgent: session.userAgent,
    });
    const proven = this.#proven.get(user);
    const now = await this.#db
      .selectFrom("users")
      .select(["password_hash", "totp_secret_sealed", "disabled"])
      .where("id", "=", user.id)
      .executeTakeFirst();
    if (
      proven &&
      now &&
      !now.disabled &&
      now.password_hash === proven.passwordHash &&
      now.totp_secret_sealed === proven.totpSealed
    )
      return { user, ...created };
    await revokeSessionsOfUser(this.#ctx, user.id, "credentials-changed");
    const disabled = Boolean(now?.disabled);
    this.#ctx.audit.record({
      kind: "login",
      outcome: "failure",
      subject: user.name,
      sourceIp: options.sourceIp,
      reason: disabled ? "user-disabled" : "credentials-changed",
      data: { session_id: created.session.id },
    });
    throw disabled
      ? new ZtError("ZT_USER_DISABLED", `user ${user.name} is disabled`, {
          reason: "user-disabled",
        })
      : new ZtError("ZT_AUTH_FAILED", "invalid username or password", { reason: "auth-failed" });
  }

  /**
   * Sets a new password (generated when omitted, and returned once) and revokes every
   * session of the user (reason `password-changed`): whoever signed in with the old
   * password is out at once, at every PEP. The caller holds no session here (an admin
   * command), so none is spared.
   */
  async setPassword(name: string, password?: string): Promise<{ password?: string }> {
    const row = await this.#require(name);
    let generated: string | undefined;
    if (password === undefined) generated = randomBytes(15).toString("base64url");
    else checkPasswordPolicy(password);
    const hash = await hashPassword(password ?? generated!);
    await this.#db
      .updateTable("users")
      .set({ password_hash: hash, updated_at: this.#ctx.clock.now() })
      .where("id", "=", row.id)
      .execute();
    const revoked = await revokeSessionsOfUser(this.#ctx, row.id, "password-changed");
    this.#ctx.audit.record({
      kind: "user.password",
      outcome: "info",
      subject: row.name,
      data: { sessions_revoked: revoked.length },
    });
    return generated !== undefined ? { password: generated } : {};
  }

  /**
   * Deletes a user with their memberships, backup codes and sessions (cascade), and ends
   * their pending access requests and active grants (revoked, reason `user-deleted`), so a
   * later user given the same name inherits nothing. Publishes `user.deleted` so every PEP
   * drops the user's live sessions at once, and `grant.changed` for each ended grant.
   */
  async deleteUser(name: string): Promise<void> {
    const row = await this.#require(name);
    const now = this.#ctx.clock.now();
    let ended: AccessRequest[] = [];
    let devices: string[] = [];
    await this.#db.transaction().execute(async (trx) => {
      // Memberships, backup codes and sessions go with the user (ON DELETE CASCADE).
      await trx.deleteFrom("auth_failures").where("key", "=", `user:${row.name}`).execute();
      ended = await endAccessOfUser(trx, row.id, now);
      // Their devices stay (the record of what they were) but are revoked: a device key
      // of a user who no longer exists must not report, bind or be approved.
      const revoked = await trx
        .updateTable("devices")
        .set({ status: "revoked", compliant: 0 })
        .where("user_id", "=", row.id)
        .where("status", "!=", "revoked")
        .returning("id")
        .execute();
      devices = revoked.map((d) => d.id);
      await trx.deleteFrom("users").where("id", "=", row.id).execute();
    });
    const recordId = this.#ctx.audit.record({
      kind: "user.delete",
      outcome: "info",
      subject: row.name,
      data: { access_revoked: ended.map((r) => r.id), devices_revoked: devices },
    });
    // The sessions went with the user (no session.revoke): cuts name this record instead.
    await this.#ctx.events.publish("user.deleted", {
      userId: row.id,
      name: row.name,
      revoke_id: recordId,
    });
    await announceEndedAccess(this.#ctx, ended, "user-deleted");
    for (const deviceId of devices)
      await this.#ctx.events.publish("device.changed", {
        deviceId,
        userId: row.id,
        status: "revoked",
        compliant: false,
        reason: "user-deleted",
      });
  }

  /** How many unused backup codes a user has left. */
  async backupCodesLeft(name: string): Promise<number> {
    const row = await this.#require(name);
    const r = await this.#db
      .selectFrom("backup_codes")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("user_id", "=", row.id)
      .where("used_at", "is", null)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /** Clears the lockout of a user (admin action after verifying who is asking). */
  async unlock(name: string): Promise<void> {
    const row = await this.#require(name);
    await this.#db.deleteFrom("auth_failures").where("key", "=", `user:${row.name}`).execute();
    this.#ctx.audit.record({ kind: "user.unlock", outcome: "info", subject: row.name });
  }

  // ——— internals ———

  async #newEnrolment(name: string): Promise<MfaEnrolment & { hashes: string[] }> {
    const totpSecret = newTotpSecret();
    const backupCodes = generateBackupCodes();
    const hashes = await hashBackupCodes(backupCodes);
    return {
      totpSecret,
      totpUri: totpUri({ issuer: this.#settings.issuer, accountName: name, secret: totpSecret }),
      backupCodes,
      hashes,
    };
  }

  async #writeGroups(trx: Db, userId: string, groups: string[], now: number): Promise<void> {
    if (groups.length === 0) return;
    await trx
      .insertInto("groups")
      .values(groups.map((g) => ({ name: g, created_at: now })))
      .onConflict((oc) => oc.column("name").doNothing())
      .execute();
    await trx
      .insertInto("user_groups")
      .values(groups.map((g) => ({ user_id: userId, group_name: g })))
      .onConflict((oc) => oc.columns(["user_id", "group_name"]).doNothing())
      .execute();
  }

  async #writeBackupCodes(trx: Db, userId: string, hashes: string[]): Promise<void> {
    await trx
      .insertInto("backup_codes")
      .values(
        hashes.map((h) => ({ id: newId("bkc"), user_id: userId, code_hash: h, used_at: null })),
      )
      .execute();
  }

  async #changeGroups(name: string, next: (current: string[]) => string[]): Promise<UserInfo> {
    const row = await this.#require(name);
    const now = this.#ctx.clock.now();
    let before: string[] = [];
    let after: string[] = [];
    await this.#db.transaction().execute(async (trx) => {
      const current = (
        await trx
          .selectFrom("user_groups")
          .select("group_name")
          .where("user_id", "=", row.id)
          .execute()
      ).map((r) => r.group_name);
      before = [...current].sort();
      after = [...new Set(next(current))].sort();
      const removed = before.filter((g) => !after.includes(g));
      const added = after.filter((g) => !before.includes(g));
      if (removed.length > 0) {
        await trx
          .deleteFrom("user_groups")
          .where("user_id", "=", row.id)
          .where("group_name", "in", removed)
          .execute();
      }
      await this.#writeGroups(trx, row.id, added, now);
    });
    if (before.join(",") !== after.join(",")) {
      this.#ctx.audit.record({
        kind: "user.groups",
        outcome: "info",
        subject: row.name,
        data: { before, after },
      });
      await this.#ctx.events.publish("user.groups-changed", {
        userId: row.id,
        name: row.name,
        groups: after,
      });
    }
    return this.#toInfo(row, after);
  }

  async #findByName(db: Db, name: string): Promise<UsersTable | undefined> {
    return db.selectFrom("users").selectAll().where("name", "=", name).executeTakeFirst();
  }

  async #require(name: string): Promise<UsersTable> {
    const n = parseUserName(name);
    const row = await this.#findByName(this.#db, n);
    if (!row) throw new ZtError("ZT_USER_NOT_FOUND", `no user named ${n}`, { name: n });
    return row;
  }

  #toInfo(row: UsersTable, groups: string[]): UserInfo {
    return {
      id: row.id,
      name: row.name,
      email: row.email,
      groups,
      disabled: Number(row.disabled) !== 0,
      createdAt: Number(row.created_at),
    };
  }

  /** Reserves one attempt on every key, atomically; refuses if any key is locked. */
  async #reserve(
    keys: string[],
    now: number,
  ): Promise<{ ok: true } | { ok: false; retryAfterMs: number }> {
    const policy = this.#settings.lockout;
    return this.#db.transaction().execute(async (trx) => {
      const states = await this.#lockRows(trx, keys, policy.maxFailures);
      let retryAfterMs = 0;
      const next: LockoutState[] = [];
      for (const s of states) {
        const r = reserveAttempt(s, now, policy);
        if (!r.ok) retryAfterMs = Math.max(retryAfterMs, r.retryAfterMs);
        next.push(r.state);
      }
      if (retryAfterMs > 0) return { ok: false as const, retryAfterMs };
      await this.#writeRows(trx, keys, next);
      return { ok: true as const };
    });
  }

  /**
   * Settles a reserved attempt. failure: counts (and may lock) on every key. success: the
   * user's key is reset, the source key only un-counts this attempt.
   */
  async #settle(keys: string[], outcome: "failure" | "success", reservedAt: number): Promise<void> {
    const policy = this.#settings.lockout;
    const now = this.#ctx.clock.now();
    await this.#db.transaction().execute(async (trx) => {
      const states = await this.#lockRows(trx, keys, policy.maxFailures);
      const next = states.map((s, i) => {
        if (outcome === "failure") return settleFailure(s, now, policy);
        if (keys[i]!.startsWith("user:")) return settleSuccess(s, now);
        return releaseAttempt(s, reservedAt, now);
      });
      await this.#writeRows(trx, keys, next);
    });
    if (++this.#settles % PRUNE_EVERY === 0) {
      await this.#db
        .deleteFrom("auth_failures")
        .where("updated_at", "<", now - policy.maxLockMs - policy.windowMs)
        .where("locked_until", "<", now)
        .execute();
    }
  }

  async #lockRows(
    trx: Transaction<Tables>,
    keys: string[],
    maxFailures: number,
  ): Promise<LockoutState[]> {
    // Insert-if-missing first so that on PostgreSQL the row exists to be locked FOR UPDATE.
    await trx
      .insertInto("auth_failures")
      .values(
        keys.map((key) => ({
          key,
          failures: 0,
          window_start: 0,
          recent_failures: "[]",
          failed_at: "[]",
          lockouts: 0,
          locked_until: 0,
          updated_at: 0,
        })),
      )
      .onConflict((oc) => oc.column("key").doNothing())
      .execute();
    const rows = await trx
      .selectFrom("auth_failures")
      .selectAll()
      .where("key", "in", keys)
      .orderBy("key")
      .$if(this.#ctx.store.dialect === "postgres", (q) => q.forUpdate())
      .execute();
    return keys.map((k) => {
      const r = rows.find((x) => x.key === k);
      return r
        ? {
            recent: parseRecent(r.recent_failures, Number(r.updated_at), maxFailures),
            failed: parseFailed(r.failed_at, Number(r.updated_at), Number(r.failures)),
            lockouts: Number(r.lockouts),
            lockedUntil: Number(r.locked_until),
            updatedAt: Number(r.updated_at),
          }
        : EMPTY_LOCKOUT;
    });
  }

  async #writeRows(
    trx: Transaction<Tables>,
    keys: string[],
    states: LockoutState[],
  ): Promise<void> {
    for (let i = 0; i < keys.length; i++) {
      const s = states[i]!;
      await trx
        .updateTable("auth_failures")
        .set({
          // `failures` is the hour's count as of this write, for readers of the count alone.
          failures: s.failed.length,
          window_start: s.recent[0] ?? 0,
          recent_failures: JSON.stringify(s.recent),
          failed_at: JSON.stringify(s.failed),
          lockouts: s.lockouts,
          locked_until: s.lockedUntil,
          updated_at: s.updatedAt,
        })
        .where("key", "=", keys[i]!)
        .execute();
    }
  }
}

/**
 * Reads the stored failure timestamps. A value that is not a list of timestamps fails
 * closed: it counts as a full window of failures at the row's last update.
 */
function parseRecent(text: string, updatedAt: number, maxFailures: number): number[] {
  try {
    const v: unknown = JSON.parse(text);
    if (Array.isArray(v) && v.length <= 1000 && v.every((t) => Number.isSafeInteger(t))) {
      return (v as number[]).slice(-maxFailures * 4).sort((a, b) => a - b);
    }
  } catch {
    // fall through
  }
  return new Array<number>(maxFailures).fill(updatedAt);
}

/**
 * Reads the stored timestamps of the last hour's failures. A value that is not a list of
 * timestamps keeps the stored count, as failures at the row's last update (for a risk
 * signal, unknown means "as many as recorded", never zero).
 */
function parseFailed(text: string, updatedAt: number, count: number): number[] {
  try {
    const v: unknown = JSON.parse(text);
    if (
      Array.isArray(v) &&
      v.length <= MAX_FAILURES_REMEMBERED &&
      v.every((t) => Number.isSafeInteger(t))
    ) {
      return (v as number[]).slice().sort((a, b) => a - b);
    }
  } catch {
    // fall through
  }
  const n = Number.isSafeInteger(count) ? Math.min(Math.max(count, 0), MAX_FAILURES_REMEMBERED) : 0;
  return new Array<number>(n).fill(updatedAt);
}

function userExists(name: string): ZtError {
  return new ZtError("ZT_USER_EXISTS", `a user named ${name} already exists`, { name });
}

function checkPasswordPolicy(password: string): void {
  if (typeof password !== "string" || [...password].length < MIN_PASSWORD_LENGTH) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `password: expected at least ${MIN_PASSWORD_LENGTH} characters`,
      {
        field: "password",
      },
    );
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `password: expected at most ${MAX_PASSWORD_LENGTH} characters`,
      {
        field: "password",
      },
    );
  }
  // A lone surrogate has no UTF-8 encoding (it would be hashed as U+FFFD): not a password.
  if (/\p{Cs}/u.test(password)) {
    throw new ZtError("ZT_BAD_REQUEST", "password: expected well-formed Unicode text", {
      field: "password",
    });
  }
  // A control character (NUL, tab, a line break, ESC …) cannot be typed into the sign-in
  // form: such a password would lock its user out from the start.
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(password)) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      "password: expected no control characters (they cannot be typed at sign-in)",
      { field: "password" },
    );
  }
}

const memo = new WeakMap<AppContext, IdentityService>();

/** The IdentityService of an AppContext, built once. */
export function identityService(ctx: AppContext): IdentityService {
  let s = memo.get(ctx);
  if (!s) {
    s = new IdentityService(ctx);
    memo.set(ctx, s);
  }
  return s;
}
