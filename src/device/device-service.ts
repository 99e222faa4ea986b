import { createHash } from "node:crypto";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import { SessionService, type SessionCheck } from "../session/index.js";
import { withStoreLock, type DevicesTable } from "../store/index.js";
import { parseDevicesConfig, type DevicesConfig } from "./device-config.js";
import { generateDeviceKey, parseDevicePublicKey, verifyDeviceSignature } from "./device-keys.js";
import { bindPayload, parsePostureReport, type PostureReport } from "./posture-report.js";
import {
  isCompliantAt,
  scorePosture,
  type PostureChecks,
  type PostureScore,
} from "./posture-score.js";

export interface DeviceInfo {
  id: string;
  userId: string;
  userName: string;
  name: string;
  status: "pending" | "approved" | "revoked";
  createdAt: number;
  approvedAt: number | null;
  approvedBy: string | null;
  lastReportAt: number | null;
  /** The last report's checks judged by the rules in force (`compliantNow`: the effective verdict). */
  compliant: boolean;
  /** Approved, compliant, and reported within the interval — as of now. */
  compliantNow: boolean;
  score: number;
  os: string | null;
  checks: PostureChecks;
}

export interface EnrollResult {
  device: DeviceInfo;
  autoApproved: boolean;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** The form of every device id (`newId("dev")`); anything else names no device. */
const DEVICE_ID_RE = /^dev_[A-Za-z0-9_-]{1,64}$/;

/**
 * Device trust: enrolment (a registered Ed25519 public key linked to its owner),
 * approval, signed posture reports and session binding. Every change is audited and
 * published as `device.changed`, which the Policy Administrator acts on.
 */
export class DeviceService {
  readonly #ctx: AppContext;
  readonly config: DevicesConfig;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    this.config = parseDevicesConfig(ctx.config.devices);
  }

  async enroll(options: {
    userName: string;
    name: string;
    publicKeyPem: string;
  }): Promise<EnrollResult> {
    if (!NAME_RE.test(options.name))
      throw new ZtError(
        "ZT_DEVICE_INVALID",
        "device name: expected letters, digits, . _ - (max 63)",
      );
    parseDevicePublicKey(options.publicKeyPem);
    const user = await this.#userByName(options.userName);
    const store = this.#ctx.store;
    const pg = store.dialect === "postgres";
    // The owner's state, their groups and the insert are one step: the owner's row is read
    // in the same transaction as the write (and, on PostgreSQL, locked for share), so a
    // disabling committed before this point refuses the enrolment, and one not yet
    // committed waits until the device is written. (SQLite: the write lock is taken first.)
    const written = await withStoreLock(store, ownerLockKey(user.id), async (db) => {
      const owner = await db
        .selectFrom("users")
        .select(["id", "disabled"])
        .where("id", "=", user.id)
        .$if(pg, (q) => q.forShare())
        .executeTakeFirst();
      if (!owner) return "user-gone" as const;
      // A disabled user's device would be one more credential for them, auto-approved too.
      if (Number(owner.disabled) !== 0) return "user-disabled" as const;
      const groups = (
        await db
          .selectFrom("user_groups")
          .select("group_name")
          .where("user_id", "=", user.id)
          .execute()
      ).map((g) => g.group_name);
      const autoApproved = groups.some((g) => this.config.autoApproveGroups.includes(g));
      const now = this.#ctx.clock.now();
      const row: DevicesTable = {
        id: newId("dev"),
        user_id: user.id,
        name: options.name,
        public_key: options.publicKeyPem,
        status: autoApproved ? "approved" : "pending",
        created_at: now,
        approved_at: autoApproved ? now : null,
        approved_by: autoApproved ? "auto" : null,
        last_report_at: null,
        compliant: 0,
        score: 0,
        os: null,
        checks: "{}",
      };
      await db.insertInto("devices").values(row).execute();
      return { row, autoApproved };
    });
    // Audited outside the lock: a record buffered inside it could be flushed in it.
    if (written === "user-gone")
      throw new ZtError("ZT_USER_NOT_FOUND", `no user named ${user.name}`);
    if (written === "user-disabled") {
      this.#ctx.audit.record({
        kind: "device.enroll",
        outcome: "failure",
        subject: user.name,
        reason: "user-disabled",
        data: { name: options.name },
      });
      throw new ZtError("ZT_USER_DISABLED", `${user.name} is disabled: no device is enrolled`, {
        user: user.name,
      });
    }
    const { row, autoApproved } = written;
    this.#ctx.audit.record({
      kind: "device.enroll",
      outcome: "success",
      subject: user.name,
      data: { device_id: row.id, name: row.name, status: row.status },
    });
    await this.#publish(row.id, user.id, { status: row.status });
    return { device: this.#toInfo(row, user.name), autoApproved };
  }

  /**
   * Admin approval of a pending device. Only a device still pending when the update lands
   * is approved: a revocation committed meanwhile (by another admin or process) stands.
   * As at enrolment, the owner must still exist and be enabled: their row is read in the
   * same transaction as the update (locked for share on PostgreSQL), so a disable or a
   * deletion committed while the approval was under way refuses it.
   */
  async approve(deviceId: string, by: string): Promise<DeviceInfo> {
    const row = await this.#row(deviceId);
    if (row.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `device ${deviceId} is ${row.status}, not pending`);
    const store = this.#ctx.store;
    const pg = store.dialect === "postgres";
    const now = this.#ctx.clock.now();
    const outcome = await withStoreLock(store, ownerLockKey(row.user_id), async (db) => {
      const owner = await db
        .selectFrom("users")
        .select(["id", "name", "disabled"])
        .where("id", "=", row.user_id)
        .$if(pg, (q) => q.forShare())
        .executeTakeFirst();
      if (!owner) return { refused: "user-deleted" as const };
      if (Number(owner.disabled) !== 0)
        return { refused: "user-disabled" as const, name: owner.name };
      const res = await db
        .updateTable("devices")
        .set({ status: "approved", approved_at: now, approved_by: by })
        .where("id", "=", deviceId)
        .where("status", "=", "pending")
        .executeTakeFirst();
      return { updated: Number(res.numUpdatedRows ?? 0) === 1 };
    });
    // Audited outside the lock: a record buffered inside it could be flushed in it.
    if ("refused" in outcome) {
      this.#ctx.audit.record({
        kind: "device.approve",
        outcome: "failure",
        subject: by,
        reason: outcome.refused,
        data: { device_id: deviceId },
      });
      if (outcome.refused === "user-deleted")
        throw new ZtError(
          "ZT_USER_NOT_FOUND",
          `device ${deviceId}: its owner was deleted; it cannot be approved`,
          { device_id: deviceId },
        );
      throw new ZtError(
        "ZT_USER_DISABLED",
        `device ${deviceId}: its owner ${outcome.name} is disabled; it cannot be approved`,
        { device_id: deviceId, user: outcome.name },
      );
    }
    if (!outcome.updated) {
      const status = (await this.#row(deviceId)).status;
      throw new ZtError(
        "ZT_ACCESS_STATE",
        `device ${deviceId} is ${status}, not pending (it changed while being approved)`,
        { device_id: deviceId, status },
      );
    }
    this.#ctx.audit.record({
      kind: "device.approve",
      outcome: "success",
      subject: by,
      data: { device_id: deviceId },
    });
    await this.#publish(deviceId, row.user_id, { status: "approved" });
    return this.get(deviceId);
  }

  /** Revokes a device: it stops counting as managed at once. */
  async revoke(deviceId: string, by: string): Promise<DeviceInfo> {
    const row = await this.#row(deviceId);
    await this.#ctx.store.db
      .updateTable("devices")
      .set({ status: "revoked", compliant: 0 })
      .where("id", "=", deviceId)
      .execute();
    this.#ctx.audit.record({
      kind: "device.revoke",
      outcome: "info",
      subject: by,
      data: { device_id: deviceId },
    });
    await this.#publish(deviceId, row.user_id, {
      status: "revoked",
      compliant: false,
      reason: "device-revoked",
    });
    return this.get(deviceId);
  }

  async get(deviceId: string): Promise<DeviceInfo> {
    const row = await this.#row(deviceId);
    const u = await this.#ctx.store.db
      .selectFrom("users")
      .select("name")
      .where("id", "=", row.user_id)
      .executeTakeFirst();
    return this.#toInfo(row, u?.name ?? row.user_id);
  }

  async list(options: { userName?: string } = {}): Promise<DeviceInfo[]> {
    let q = this.#ctx.store.db
      .selectFrom("devices")
      .innerJoin("users", "users.id", "devices.user_id")
      .selectAll("devices")
      .select("users.name as user_name");
    if (options.userName) q = q.where("users.name", "=", options.userName);
    const rows = await q.orderBy("devices.created_at", "asc").execute();
    return rows.map((r) => this.#toInfo(r, r.user_name));
  }

  /**
   * Accepts a signed posture report: verifies the Ed25519 signature against the
   * registered key, refuses stale or replayed reports, scores it and stores the result.
   */
  async submitReport(
    deviceId: string,
    payload: string,
    signature: string,
    sourceIp?: string,
  ): Promise<PostureScore & { device: DeviceInfo }> {
    const refuse = (err: ZtError, reason: string, status?: DevicesTable["status"]): never => {
      this.#ctx.audit.record({
        kind: "device.report",
        outcome: "failure",
        reason,
        ...(sourceIp !== undefined ? { sourceIp } : {}),
        data: { device_id: deviceId, ...(status !== undefined ? { device_status: status } : {}) },
      });
      throw err;
    };
    // Until the signature verifies, the caller has proven nothing: one answer whether the
    // device is unknown, pending, approved or revoked (the audit record says which).
    const row = await this.#rowIfAny(deviceId);
    if (!row) {
      verifyDeviceSignature(placeholderKey(), payload, signature); // the same work either way
      return refuse(deviceNotProven("posture report"), "device-unknown");
    }
    if (!verifyDeviceSignature(row.public_key, payload, signature))
      refuse(deviceNotProven("posture report"), "device-signature-invalid", row.status);
    if (row.status === "revoked")
      refuse(
        new ZtError("ZT_ACCESS_STATE", `device ${deviceId} is revoked`, {
          reason: "device-revoked",
        }),
        "device-revoked",
        row.status,
      );
    // Signed by the device from here on: every refusal is recorded with what was wrong (a
    // replayed or stale report is someone's captured one as often as a device's mistake).
    let report: PostureReport;
    try {
      report = parsePostureReport(payload);
    } catch (e) {
      return refuse(e as ZtError, "report-invalid", row.status);
    }
    if (report.device_id !== deviceId)
      refuse(
        new ZtError("ZT_DEVICE_INVALID", "report.device_id: does not match the device"),
        "report-device-mismatch",
        row.status,
      );
    const now = this.#ctx.clock.now();
    if (Math.abs(now - report.collected_at) > this.config.maxReportSkewMs)
      refuse(
        new ZtError(
          "ZT_DEVICE_INVALID",
          "report.collected_at: too far from the server's clock (stale or replayed report)",
        ),
        "report-stale",
        row.status,
      );
    const s = scorePosture(report.checks, this.config);
    // The replay check and the write are one step per device: two reports racing cannot
    // both pass the check, so an older one never lands after (and over) a newer one.
    const stored = await withStoreLock(
      this.#ctx.store,
      deviceReportLockKey(deviceId),
      async (db) => {
        const last = await db
          .selectFrom("device_reports")
          .select(["report", "received_at"])
          .where("device_id", "=", deviceId)
          .orderBy("received_at", "desc")
          .limit(1)
          .executeTakeFirst();
        if (last && collectedAtOf(deviceId, last.report) >= report.collected_at)
          return "replayed" as const;
        // The device first, and only while it is not revoked: a revocation committed since
        // its row was read refuses the report, and nothing of it is stored.
        const updated = await db
          .updateTable("devices")
          .set({
            last_report_at: now,
            compliant: s.compliant ? 1 : 0,
            score: s.score,
            os: report.os,
            checks: JSON.stringify(report.checks),
          })
          .where("id", "=", deviceId)
          .where("status", "!=", "revoked")
          .executeTakeFirst();
        if (Number(updated.numUpdatedRows ?? 0) !== 1) return "revoked" as const;
        await db
          .insertInto("device_reports")
          .values({
            id: newId("rep"),
            device_id: deviceId,
            // Always after the last one, whatever this process's clock says: the replay check
            // above takes "the last report" by this order, and replicas' clocks differ (one
            // behind would otherwise file a newer report before an older one, and let a
            // held-back report collected in between pass as newer than that older one).
            received_at: last ? Math.max(now, Number(last.received_at) + 1) : now,
            report: JSON.stringify({ payload, signature }),
            score: s.score,
            compliant: s.compliant ? 1 : 0,
          })
          .execute();
        // A bounded history: a device reporting in a loop cannot fill the store.
        const oldestKept = await db
          .selectFrom("device_reports")
          .select("received_at")
          .where("device_id", "=", deviceId)
          .orderBy("received_at", "desc")
          .offset(DEVICE_REPORTS_KEPT - 1)
          .limit(1)
          .executeTakeFirst();
        if (oldestKept)
          await db
            .deleteFrom("device_reports")
            .where("device_id", "=", deviceId)
            .where("received_at", "<", oldestKept.received_at)
            .execute();
        return "stored" as const;
      },
    );
    if (stored === "replayed")
      refuse(
        new ZtError(
          "ZT_DEVICE_INVALID",
          "report.collected_at: not newer than the last report (replay)",
        ),
        "report-replayed",
        row.status,
      );
    if (stored === "revoked")
      refuse(
        new ZtError("ZT_ACCESS_STATE", `device ${deviceId} is revoked`, {
          reason: "device-revoked",
        }),
        "device-revoked",
        "revoked",
      );
    this.#ctx.audit.record({
      kind: "device.report",
      outcome: s.compliant ? "success" : "failure",
      reason: s.compliant ? "device-compliant" : "device-noncompliant",
      data: { device_id: deviceId, score: s.score, failures: s.failures },
    });
    await this.#publish(deviceId, row.user_id, {
      compliant: s.compliant,
      score: s.score,
      ...(s.compliant ? {} : { reason: "device-noncompliant" }),
    });
    return { ...s, device: await this.get(deviceId) };
  }

  /**
   * Binds a session to a device. Both halves must be proven by the caller:
   * - the device: its registered key signed `bindPayload({ deviceId, sessionToken, at })`
   *   within `max_report_skew` of the server's clock;
   * - the session: the request carries the session's own token (the cookie or Bearer
   *   credential, i.e. the client holding the session binds it). A session id alone is
   *   never enough, and since the signed text covers the token's hash, a signature
   *   cannot be replayed for another session.
   * The session must be live (not expired, idle or revoked) and belong to the device's
   * owner. `sessionId`, when given, must be the token's session. Policies then see
   * `context.device` for that session.
   */
  async bindSession(o: {
    deviceId: string;
    /** The session's own token (cookie / Bearer); undefined when none was presented. */
    sessionToken: string | undefined;
    at: number;
    signature: string;
    /** Optional: the session the caller means; refused when it is not the token's. */
    sessionId?: string | undefined;
    sourceIp?: string | undefined;
  }): Promise<{ sessionId: string }> {
    const { deviceId } = o;
    const refuse = (
      err: ZtError,
      reason: string,
      sessionId?: string,
      status?: DevicesTable["status"],
    ): never => {
      this.#ctx.audit.record({
        kind: "device.bind",
        outcome: "failure",
        reason,
        ...(o.sourceIp !== undefined ? { sourceIp: o.sourceIp } : {}),
        data: {
          device_id: deviceId,
          ...(sessionId !== undefined ? { session_id: sessionId } : {}),
          ...(status !== undefined ? { device_status: status } : {}),
        },
      });
      throw err;
    };
    // Until the signature verifies, the caller has proven nothing: one answer whether the
    // device is unknown, pending, approved or revoked (the audit record says which).
    const row = await this.#rowIfAny(deviceId);
    const token = o.sessionToken;
    if (!token)
      return refuse(
        new ZtError(
          "ZT_AUTH_REQUIRED",
          "binding needs the session's own token (session cookie or Authorization: Bearer); a session id is not enough",
          { reason: "no-session-token" },
        ),
        "no-session-token",
        undefined,
        row?.status,
      );
    const signed = bindPayload({ deviceId, sessionToken: token, at: o.at });
    if (!row) {
      verifyDeviceSignature(placeholderKey(), signed, o.signature); // the same work either way
      return refuse(deviceNotProven("binding"), "device-unknown");
    }
    if (!verifyDeviceSignature(row.public_key, signed, o.signature))
      refuse(deviceNotProven("binding"), "device-signature-invalid", undefined, row.status);
    if (row.status !== "approved")
      refuse(
        new ZtError("ZT_ACCESS_STATE", `device ${deviceId} is ${row.status}, not approved`),
        "device-not-approved",
        undefined,
        row.status,
      );
    if (Math.abs(this.#ctx.clock.now() - o.at) > this.config.maxReportSkewMs)
      refuse(
        new ZtError("ZT_DEVICE_INVALID", "binding: timestamp too far from the server's clock"),
        "bind-time-skew",
      );
    // The token is checked as every request's is: unknown, expired, idle, revoked refused.
    // A fresh SessionService reads the store, so a revocation by any process counts.
    const sessions = new SessionService(this.#ctx);
    let check: SessionCheck;
    try {
      check = await sessions.check(token);
    } finally {
      sessions.close();
    }
    if (!check.ok)
      return refuse(
        new ZtError(check.code, "binding: the session is not live", { reason: check.reason }),
        check.reason,
      );
    const s = check.session;
    if (o.sessionId !== undefined && o.sessionId !== s.id)
      refuse(
        new ZtError(
          "ZT_DEVICE_INVALID",
          `binding: the token presented is not session ${o.sessionId}'s`,
        ),
        "session-mismatch",
        s.id,
      );
    if (s.userId !== row.user_id)
      refuse(
        new ZtError(
          "ZT_DEVICE_INVALID",
          "the session belongs to another user than the device's owner",
        ),
        "session-other-user",
        s.id,
      );
    const owner = await this.#ctx.store.db
      .selectFrom("users")
      .select("disabled")
      .where("id", "=", row.user_id)
      .executeTakeFirst();
    if (!owner || owner.disabled)
      refuse(
        new ZtError("ZT_SESSION_REVOKED", "binding: the device's owner is disabled or gone", {
          reason: "user-disabled",
        }),
        "user-disabled",
        s.id,
      );
    // Only a session still live in the store (a revocation may have landed meanwhile).
    const res = await this.#ctx.store.db
      .updateTable("sessions")
      .set({ device_id: deviceId })
      .where("id", "=", s.id)
      .where("revoked_at", "is", null)
      .where("expires_at", ">", this.#ctx.clock.now())
      .executeTakeFirst();
    if (Number(res.numUpdatedRows ?? 0) !== 1)
      refuse(
        new ZtError("ZT_SESSION_REVOKED", "binding: the session is revoked", {
          reason: "session-revoked",
        }),
        "session-revoked",
        s.id,
      );
    this.#ctx.audit.record({
      kind: "device.bind",
      outcome: "success",
      ...(o.sourceIp !== undefined ? { sourceIp: o.sourceIp } : {}),
      data: { device_id: deviceId, session_id: s.id },
    });
    await this.#publish(deviceId, row.user_id, { sessionId: s.id });
    return { sessionId: s.id };
  }

  async #publish(deviceId: string, userId: string, data: Record<string, unknown>): Promise<void> {
    await this.#ctx.events.publish("device.changed", { deviceId, userId, ...data });
  }

  /** The device's row; undefined for an id no device has (or that is not of their form). */
  async #rowIfAny(deviceId: string): Promise<DevicesTable | undefined> {
    // Not of the form of a device id (`dev_` + base64url, see newId): no device, without a
    // query (PostgreSQL would refuse a NUL in the text as an internal error).
    if (!DEVICE_ID_RE.test(deviceId)) return undefined;
    return this.#ctx.store.db
      .selectFrom("devices")
      .selectAll()
      .where("id", "=", deviceId)
      .executeTakeFirst();
  }

  async #row(deviceId: string): Promise<DevicesTable> {
    const row = await this.#rowIfAny(deviceId);
    if (!row) throw new ZtError("ZT_NOT_FOUND", `no device ${deviceId}`, { device_id: deviceId });
    return row;
  }

  async #userByName(name: string): Promise<{ id: string; name: string; disabled: boolean }> {
    const u = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "name", "disabled"])
      .where("name", "=", name)
      .executeTakeFirst();
    if (!u) throw new ZtError("ZT_USER_NOT_FOUND", `no user named ${name}`);
    return { id: u.id, name: u.name, disabled: Number(u.disabled) !== 0 };
  }

  #toInfo(r: DevicesTable, userName: string): DeviceInfo {
    return deviceInfoFromRow(r, userName, this.#ctx.clock.now(), this.config);
  }
}

/**
 * The `collected_at` of a stored report (verified when it was accepted), read on its own:
 * the rest of it is not judged again by today's report rules, or a rule added since (no
 * control characters in `os`, say) would refuse every later report of that device.
 */
function collectedAtOf(deviceId: string, stored: string): number {
  let at: unknown;
  try {
    const payload = (JSON.parse(stored) as { payload?: unknown }).payload;
    at = (JSON.parse(String(payload)) as { collected_at?: unknown }).collected_at;
  } catch {
    at = undefined;
  }
  if (typeof at !== "number" || !Number.isSafeInteger(at) || at < 0)
    throw new ZtError(
      "ZT_STORE",
      `device_reports: the last report of ${deviceId} has no readable collected_at`,
    );
  return at;
}

/** PostgreSQL advisory lock key for one user's device enrolments and approvals (63 bits). */
function ownerLockKey(userId: string): bigint {
  return createHash("sha256").update(`zt-device-enrol\0${userId}`).digest().readBigInt64BE(0);
}

/** PostgreSQL advisory lock key for one device's report writes (63 bits). */
function deviceReportLockKey(deviceId: string): bigint {
  return createHash("sha256").update(`zt-device-report\0${deviceId}`).digest().readBigInt64BE(0);
}

/**
 * How many of a device's reports `device_reports` keeps (the newest): the replay check
 * needs only the last, and the rest is recent history. The audit log keeps every one.
 */
export const DEVICE_REPORTS_KEPT = 100;

/**
 * A device row as DeviceInfo. Its score and verdict are its last reported checks scored
 * under the `devices:` rules in force (`rules`), not the ones stored when the report
 * arrived: a required check or a minimum score the operator added applies to every
 * device at once, not at each device's next report.
 */
export function deviceInfoFromRow(
  r: DevicesTable,
  userName: string,
  now: number,
  rules: Pick<DevicesConfig, "reportIntervalMs" | "weights" | "required" | "minScore">,
): DeviceInfo {
  const lastReportAt = r.last_report_at === null ? null : Number(r.last_report_at);
  const status = (
    r.status === "approved" || r.status === "revoked" ? r.status : "pending"
  ) as DeviceInfo["status"];
  let checks: PostureChecks = {};
  try {
    const parsed = JSON.parse(r.checks) as unknown;
    if (typeof parsed === "object" && parsed !== null) checks = parsed as PostureChecks;
  } catch {
    checks = {};
  }
  // No report yet: nothing to score (and nothing compliant).
  const scored = lastReportAt === null ? undefined : scorePosture(checks, rules);
  const compliant = scored?.compliant === true;
  return {
    id: r.id,
    userId: r.user_id,
    userName,
    name: r.name,
    status,
    createdAt: Number(r.created_at),
    approvedAt: r.approved_at === null ? null : Number(r.approved_at),
    approvedBy: r.approved_by,
    lastReportAt,
    compliant,
    compliantNow: isCompliantAt({ status, compliant, lastReportAt }, now, rules.reportIntervalMs),
    score: scored?.score ?? Number(r.score),
    os: r.os,
    checks,
  };
}

/**
 * The one answer to a device request whose signature does not verify — or whose device
 * does not exist: before the key is proven, nothing about the device (its existence, its
 * status) is told. The audit record keeps the real reason.
 */
function deviceNotProven(what: "posture report" | "binding"): ZtError {
  return new ZtError(
    "ZT_DEVICE_SIGNATURE",
    `${what} signature does not verify with a registered key of this device id`,
    { reason: "device-signature-invalid" },
  );
}

let placeholder: string | undefined;
/** A key no device has, to verify against for an unknown device (no shortcut to time). */
function placeholderKey(): string {
  return (placeholder ??= generateDeviceKey().publicPem);
}
