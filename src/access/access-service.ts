import { createHash } from "node:crypto";
import type { Kysely, Transaction } from "kysely";
import type { AppContext } from "../app/index.js";
import { formatDuration } from "../core/duration.js";
import { ZtError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import { withStoreLock, type AccessRequestsTable, type Tables } from "../store/index.js";
import { parseAccessConfig, parseNotificationsConfig, type AccessConfig } from "./access-config.js";
import { parseAccessResource, resourceKey } from "./access-resource.js";
import { WebhookNotifier } from "./webhook-notifier.js";

export type AccessStatus = "pending" | "approved" | "denied" | "revoked" | "expired";

export interface AccessRequest {
  id: string;
  kind: "jit" | "breakglass";
  userId: string;
  user: string;
  resource: string;
  reason: string;
  ttlMs: number;
  status: AccessStatus;
  requiredApprovals: number;
  approvals: Approval[];
  createdAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  startsAt: number | null;
  expiresAt: number | null;
}

/**
 * One approval of a request: the approver's name, when, and (recorded since approvals
 * are re-checked) the approver's user id, so a later user given the same name is not them.
 */
export interface Approval {
  by: string;
  at: number;
  id?: string;
}

/** Longest reason accepted, for access requests and break-glass alike. */
export const MAX_REASON_LENGTH = 500;

/**
 * Parses `App::"db-admin"`, `db-admin` or `HostGroup::"prod"` into the key the resource is
 * configured and stored under (`db-admin`, `HostGroup::"prod"`; see resourceKey).
 */
export function parseResource(text: string): string {
  return resourceKey(parseAccessResource(text));
}

/**
 * Just-in-time access and break-glass. A request names an App or an SSH host group, a
 * reason and a TTL; members of the resource's approver group approve it (never the
 * requester; one or two approvals); approved, it is a grant until `expires_at`. Every step is audited,
 * published as `grant.changed` and sent to the notification webhook.
 */
export class AccessService {
  readonly #ctx: AppContext;
  readonly config: AccessConfig;
  readonly #notifier: WebhookNotifier;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    this.config = parseAccessConfig(ctx.config.access);
    this.#notifier = new WebhookNotifier(ctx, parseNotificationsConfig(ctx.config.notifications));
  }

  async request(options: {
    user: string;
    resource: string;
    reason: string;
    ttlMs: number;
  }): Promise<AccessRequest> {
    const user = await this.#user(options.user);
    const resource = parseResource(options.resource);
    const rc = this.config.resources[resource];
    if (!rc)
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `access.resources has no entry for ${resource}: it cannot be requested`,
        { resource },
      );
    const reason = checkReason(options.reason);
    if (!(options.ttlMs > 0) || options.ttlMs > rc.maxTtlMs)
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `--ttl: expected more than 0 and at most ${formatDuration(rc.maxTtlMs)} for ${resource}`,
      );
    const row: AccessRequestsTable = {
      id: newId("acc"),
      kind: "jit",
      user_id: user.id,
      user_name: user.name,
      resource,
      reason,
      ttl_ms: options.ttlMs,
      status: "pending",
      required_approvals: rc.approvals,
      approvals: "[]",
      created_at: this.#ctx.clock.now(),
      decided_at: null,
      decided_by: null,
      starts_at: null,
      expires_at: null,
    };
    await this.#ctx.store.db.insertInto("access_requests").values(row).execute();
    const r = toRequest(row);
    await this.#announce(
      r,
      "access.requested",
      "info",
      user.name,
      `${user.name} requests ${resource} for ${formatDuration(r.ttlMs)}: ${reason}`,
    );
    return r;
  }

  /**
   * One approval by `approver`; the request becomes a grant once it has enough. The
   * request is judged against the configuration of now, not of when it was made: the
   * resource must still be in `access.resources`, the approvals needed are its current
   * `approvals`, the grant is shortened to its current `max_ttl`, and a request older
   * than `access.pending_ttl` is refused (it has expired). Earlier approvals count only
   * while their approvers are still enabled members of the approver group (the same user,
   * by id): one whose approver left the group, was disabled or deleted is dropped from the
   * request (audited as `approvals_dropped`), so two approvals always mean two current
   * approvers.
   */
  async approve(id: string, approver: string): Promise<AccessRequest> {
    const row = await this.#row(id);
    const r = toRequest(row);
    if (r.kind !== "jit" || r.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} is ${r.status}, not pending`, {
        status: r.status,
      });
    const a = await this.#user(approver);
    if (a.id === r.userId) {
      this.#refuseApproval(a.name, r, "self-approval");
      throw new ZtError("ZT_ACCESS_SELF_APPROVAL", "you cannot approve your own access request", {
        request_id: id,
      });
    }
    const rc = this.config.resources[r.resource];
    if (!rc) {
      this.#refuseApproval(a.name, r, "resource-not-requestable");
      throw new ZtError(
        "ZT_ACCESS_STATE",
        `request ${id} cannot be approved: access.resources no longer has an entry for ${r.resource}`,
        { request_id: id, reason: "resource-not-requestable" },
      );
    }
    await this.#requireApprover(a, r);
    const now = this.#ctx.clock.now();
    if (now >= r.createdAt + this.config.pendingTtlMs) {
      this.#refuseApproval(a.name, r, "request-expired");
      throw new ZtError(
        "ZT_ACCESS_STATE",
        `request ${id} has expired: it waited longer than access.pending_ttl (${formatDuration(this.config.pendingTtlMs)}) for approval; ask again`,
        { request_id: id, reason: "request-expired" },
      );
    }
    await this.#requireRequester(r, a.name);
    const store = this.#ctx.store;
    const pg = store.dialect === "postgres";
    // The approver's membership, the earlier approvals and the write are one step: the
    // request's row is locked first, and (PostgreSQL) the membership rows read are locked
    // for share, so a removal from the group (or a disabling) committed before this point
    // refuses the approval, and one not yet committed waits until it is written.
    const written = await withStoreLock(store, approvalLockKey(id), async (db) => {
      const current = await db
        .selectFrom("access_requests")
        .select(["status", "approvals"])
        .where("id", "=", id)
        .$if(pg, (q) => q.forUpdate())
        .executeTakeFirst();
      if (current?.status !== "pending" || current.approvals !== row.approvals)
        throw new ZtError("ZT_ACCESS_STATE", `request ${id} changed meanwhile; try again`);
      // Audited outside the lock: a record buffered inside it could be flushed in it.
      if (!(await this.#isApprover(a, r.resource, db))) return undefined;
      const { kept, dropped } = await this.#currentApprovals(r.approvals, rc.approvers, db);
      if (kept.some((x) => x.by === a.name))
        throw new ZtError("ZT_ACCESS_STATE", `${a.name} already approved ${id}`);
      const approvals: Approval[] = [...kept, { by: a.name, at: now, id: a.id }];
      const required = rc.approvals;
      const ttlMs = Math.min(r.ttlMs, rc.maxTtlMs);
      const done = approvals.length >= required;
      const set = done
        ? {
            approvals: JSON.stringify(approvals),
            required_approvals: required,
            ttl_ms: ttlMs,
            status: "approved",
            decided_at: now,
            decided_by: a.name,
            starts_at: now,
            expires_at: now + ttlMs,
          }
        : { approvals: JSON.stringify(approvals), required_approvals: required };
      const res = await db
        .updateTable("access_requests")
        .set(set)
        .where("id", "=", id)
        .where("status", "=", "pending")
        .where("approvals", "=", row.approvals)
        // The requester (by id, not name) still exists and is enabled at the moment of approval.
        .where(({ exists, selectFrom }) =>
          exists(
            selectFrom("users")
              .select("users.id")
              .where("users.id", "=", r.userId)
              .where("users.disabled", "=", 0),
          ),
        )
        .executeTakeFirst();
      if (Number(res.numUpdatedRows ?? 0) !== 1)
        throw new ZtError("ZT_ACCESS_STATE", `request ${id} changed meanwhile; try again`);
      return { approvals, required, ttlMs, done, dropped };
    });
    if (!written) return this.#refuseNotApprover(a, r);
    const { approvals, required, ttlMs, done, dropped } = written;
    const updated = toRequest(await this.#row(id));
    const shortened = done && ttlMs < r.ttlMs;
    const droppedNote = dropped.length
      ? `; no longer counted, as not an approver now: ${dropped.map((x) => x.by).join(", ")}`
      : "";
    const droppedData = dropped.length ? { approvals_dropped: dropped.map((x) => x.by) } : {};
    if (done)
      await this.#announce(
        updated,
        "access.approved",
        "info",
        a.name,
        `${a.name} approved ${r.user}'s access to ${r.resource} until ${new Date(updated.expiresAt!).toISOString()}` +
          (shortened
            ? ` (shortened from the ${formatDuration(r.ttlMs)} requested to the current max_ttl of ${formatDuration(ttlMs)})`
            : "") +
          droppedNote,
        shortened || dropped.length
          ? { ...(shortened ? { ttl_requested_ms: r.ttlMs } : {}), ...droppedData }
          : undefined,
      );
    else
      await this.#announce(
        updated,
        "access.approval",
        "info",
        a.name,
        `${a.name} approved ${r.user}'s access to ${r.resource} (${approvals.length}/${required})${droppedNote}`,
        dropped.length ? droppedData : undefined,
      );
    return updated;
  }

  async deny(id: string, approver: string): Promise<AccessRequest> {
    const r = toRequest(await this.#row(id));
    if (r.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} is ${r.status}, not pending`);
    const a = await this.#user(approver);
    if (a.id !== r.userId) await this.#requireApprover(a, r);
    return this.#transition(
      id,
      "pending",
      "denied",
      a.name,
      "access.denied",
      `${a.name} denied ${r.user}'s access to ${r.resource}`,
    );
  }

  /**
   * Ends an active grant (or withdraws a pending request) at once. Only its holder, a
   * member of the resource's approver group or a member of an `access.admins` group may,
   * for JIT and break-glass grants alike.
   */
  async revoke(id: string, by: string): Promise<AccessRequest> {
    const r = toRequest(await this.#row(id));
    if (r.status !== "approved" && r.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} is ${r.status}`);
    const a = await this.#user(by);
    if (a.id !== r.userId) await this.#requireRevoker(a, r);
    return this.#transition(
      id,
      r.status,
      "revoked",
      a.name,
      "access.revoked",
      `${a.name} revoked ${r.user}'s access to ${r.resource}`,
    );
  }

  /**
   * Break-glass: a designated account opens a named resource for at most 1 h, without
   * approval. Non-renewable: refused while any break-glass of the same account for the
   * same resource started less than `access.breakglass.ttl` ago, whatever became of it
   * (revoked included), so revoking one's own grant does not buy a fresh one; past that
   * window, or through a JIT request, access needs approval. The check and the insert
   * are one step under a lock (see `#breakglassLocked`). Always a critical alert
   * (audit + webhook).
   */
  async breakglass(options: {
    user: string;
    resource: string;
    reason: string;
  }): Promise<AccessRequest> {
    // Every refused attempt is a critical audit record with its reason, like the opening.
    const refuse = (subject: string, route: string, reason: string, e: unknown): never => {
      this.#ctx.audit.record({
        kind: "breakglass",
        outcome: "failure",
        subject,
        route,
        reason,
        data: { severity: "critical" },
      });
      throw e;
    };
    let user: { id: string; name: string };
    try {
      user = await this.#user(options.user);
    } catch (e) {
      const code = e instanceof ZtError ? e.code : undefined;
      if (code !== "ZT_USER_DISABLED" && code !== "ZT_USER_NOT_FOUND") throw e;
      return refuse(
        options.user,
        options.resource,
        code === "ZT_USER_DISABLED" ? "user-disabled" : "user-not-found",
        e,
      );
    }
    let resource: string;
    try {
      resource = parseResource(options.resource);
    } catch (e) {
      return refuse(user.name, options.resource, "resource-invalid", e);
    }
    const bg = this.config.breakglass;
    if (!bg.accounts.includes(user.name))
      refuse(
        user.name,
        resource,
        "not-a-breakglass-account",
        new ZtError(
          "ZT_ACCESS_NOT_APPROVER",
          `${user.name} is not a break-glass account (access.breakglass.accounts)`,
        ),
      );
    if (!bg.resources.includes(resource))
      refuse(
        user.name,
        resource,
        "resource-not-breakglass",
        new ZtError(
          "ZT_BAD_REQUEST",
          `--resource: ${resource} is not in access.breakglass.resources`,
          { resource, reason: "resource-not-breakglass" },
        ),
      );
    let reason: string;
    try {
      reason = checkReason(options.reason);
    } catch (e) {
      return refuse(user.name, resource, "reason-invalid", e);
    }
    const now = this.#ctx.clock.now();
    const row: AccessRequestsTable = {
      id: newId("bg"),
      kind: "breakglass",
      user_id: user.id,
      user_name: user.name,
      resource,
      reason,
      ttl_ms: bg.ttlMs,
      status: "approved",
      required_approvals: 0,
      approvals: "[]",
      created_at: now,
      decided_at: now,
      decided_by: user.name,
      starts_at: now,
      expires_at: now + bg.ttlMs,
    };
    const prior = await this.#breakglassLocked(user.id, resource, async (db) => {
      const last = await db
        .selectFrom("access_requests")
        .select(["id", "status", "starts_at", "expires_at"])
        .where("kind", "=", "breakglass")
        .where("user_id", "=", user.id)
        .where("resource", "=", resource)
        .where((eb) =>
          eb.or([
            eb("starts_at", ">", now - bg.ttlMs),
            eb.and([eb("status", "=", "approved"), eb("expires_at", ">", now)]),
          ]),
        )
        .orderBy("starts_at", "desc")
        .executeTakeFirst();
      if (last) return last;
      await db.insertInto("access_requests").values(row).execute();
      return undefined;
    });
    if (prior) {
      const active = prior.status === "approved" && Number(prior.expires_at) > now;
      const until = Math.max(Number(prior.starts_at) + bg.ttlMs, Number(prior.expires_at ?? 0));
      this.#ctx.audit.record({
        kind: "breakglass",
        outcome: "failure",
        subject: user.name,
        route: resource,
        reason: active ? "breakglass-active" : "breakglass-cooldown",
        data: { severity: "critical", previous: prior.id, previous_status: prior.status },
      });
      throw new ZtError(
        "ZT_ACCESS_STATE",
        active
          ? `break-glass ${prior.id} is still active; it cannot be renewed or stacked`
          : `break-glass ${prior.id} (${prior.status}) for ${resource} started less than ${formatDuration(bg.ttlMs)} ago: ` +
              `another is refused until ${new Date(until).toISOString()}; ask for approved access instead (zt access request)`,
        { previous: prior.id, reason: active ? "breakglass-active" : "breakglass-cooldown" },
      );
    }
    const r = toRequest(row);
    await this.#announce(
      r,
      "breakglass.opened",
      "critical",
      user.name,
      `BREAK-GLASS: ${user.name} opened ${resource} until ${new Date(r.expiresAt!).toISOString()}: ${reason}`,
    );
    return r;
  }

  async get(id: string): Promise<AccessRequest> {
    return toRequest(await this.#row(id));
  }

  async list(options: { status?: AccessStatus; user?: string } = {}): Promise<AccessRequest[]> {
    let q = this.#ctx.store.db.selectFrom("access_requests").selectAll();
    if (options.status) q = q.where("status", "=", options.status);
    if (options.user) q = q.where("user_name", "=", options.user);
    return (await q.orderBy("created_at", "desc").limit(1000).execute()).map(toRequest);
  }

  /** Active grants (approved, not yet expired) at `now`. */
  async activeGrants(now = this.#ctx.clock.now()): Promise<AccessRequest[]> {
    const rows = await this.#ctx.store.db
      .selectFrom("access_requests")
      .selectAll()
      .where("status", "=", "approved")
      .where("expires_at", ">", now)
      .execute();
    return rows.map(toRequest);
  }

  /**
   * Marks grants past their expiry, and requests left pending longer than
   * `access.pending_ttl`, as expired (audited, published); returns them.
   */
  async expireDue(now = this.#ctx.clock.now()): Promise<AccessRequest[]> {
    const rows = await this.#ctx.store.db
      .selectFrom("access_requests")
      .selectAll()
      .where("status", "=", "approved")
      .where("expires_at", "<=", now)
      .execute();
    const out: AccessRequest[] = [];
    for (const row of rows) {
      const res = await this.#ctx.store.db
        .updateTable("access_requests")
        .set({ status: "expired" })
        .where("id", "=", row.id)
        .where("status", "=", "approved")
        .executeTakeFirst();
      if (Number(res.numUpdatedRows ?? 0) !== 1) continue;
      const r = toRequest({ ...row, status: "expired" });
      out.push(r);
      await this.#announce(
        r,
        r.kind === "breakglass" ? "breakglass.expired" : "access.expired",
        r.kind === "breakglass" ? "warning" : "info",
        "zt",
        `${r.user}'s ${r.kind === "breakglass" ? "break-glass" : "grant"} for ${r.resource} expired`,
      );
    }
    const stale = await this.#ctx.store.db
      .selectFrom("access_requests")
      .selectAll()
      .where("status", "=", "pending")
      .where("created_at", "<=", now - this.config.pendingTtlMs)
      .execute();
    for (const row of stale) {
      const res = await this.#ctx.store.db
        .updateTable("access_requests")
        .set({ status: "expired", decided_at: now, decided_by: "zt" })
        .where("id", "=", row.id)
        .where("status", "=", "pending")
        .executeTakeFirst();
      if (Number(res.numUpdatedRows ?? 0) !== 1) continue;
      const r = toRequest({ ...row, status: "expired", decided_at: now, decided_by: "zt" });
      out.push(r);
      await this.#announce(
        r,
        "access.expired",
        "info",
        "zt",
        `${r.user}'s request ${r.id} for ${r.resource} expired without approval (access.pending_ttl ${formatDuration(this.config.pendingTtlMs)})`,
      );
    }
    return out;
  }

  async #transition(
    id: string,
    from: string,
    to: AccessStatus,
    by: string,
    event: string,
    summary: string,
  ): Promise<AccessRequest> {
    const now = this.#ctx.clock.now();
    const res = await this.#ctx.store.db
      .updateTable("access_requests")
      .set({ status: to, decided_at: now, decided_by: by })
      .where("id", "=", id)
      .where("status", "=", from)
      .executeTakeFirst();
    if (Number(res.numUpdatedRows ?? 0) !== 1)
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} changed meanwhile; try again`);
    const r = toRequest(await this.#row(id));
    await this.#announce(r, event, r.kind === "breakglass" ? "warning" : "info", by, summary);
    return r;
  }

  async #announce(
    r: AccessRequest,
    event: string,
    severity: "info" | "warning" | "critical",
    actor: string,
    summary: string,
    extra?: Record<string, unknown>,
  ): Promise<void> {
    await announce(this.#ctx, this.#notifier, r, {
      event,
      severity,
      actor,
      summary,
      ...(extra ? { extra } : {}),
    });
  }

  /**
   * Runs `body` (a break-glass check-and-insert) in one transaction that no other process
   * runs for the same account and resource meanwhile:
   *
   * On PostgreSQL the lock is an advisory lock keyed by the user id and resource; on
   * SQLite, the database's write lock (see `withStoreLock`).
   */
  #breakglassLocked<T>(
    userId: string,
    resource: string,
    body: (db: Kysely<Tables>) => Promise<T>,
  ): Promise<T> {
    return withStoreLock(this.#ctx.store, breakglassLockKey(userId, resource), body);
  }

  /**
   * Splits a request's recorded approvals into those that still count — the approver is an
   * enabled member of `approvers` now, and the same user (by id, when recorded) — and
   * those that no longer do. Given `tx`, the rows read are locked for share on PostgreSQL.
   */
  async #currentApprovals(
    approvals: readonly Approval[],
    approvers: string,
    tx?: Kysely<Tables>,
  ): Promise<{ kept: Approval[]; dropped: Approval[] }> {
    if (approvals.length === 0) return { kept: [], dropped: [] };
    const rows = await (tx ?? this.#ctx.store.db)
      .selectFrom("users")
      .innerJoin("user_groups", "user_groups.user_id", "users.id")
      .select(["users.id", "users.name"])
      .where("users.name", "in", [...new Set(approvals.map((x) => x.by))])
      .where("users.disabled", "=", 0)
      .where("user_groups.group_name", "=", approvers)
      .$if(tx !== undefined && this.#ctx.store.dialect === "postgres", (q) => q.forShare())
      .execute();
    const current = new Map(rows.map((u) => [u.name, u.id]));
    const kept: Approval[] = [];
    const dropped: Approval[] = [];
    for (const x of approvals) {
      const uid = current.get(x.by);
      if (uid !== undefined && (x.id === undefined || x.id === uid)) kept.push(x);
      else dropped.push(x);
    }
    return { kept, dropped };
  }

  /** Audits an approval refused for `reason` (the caller throws). */
  #refuseApproval(approver: string, r: AccessRequest, reason: string): void {
    this.#ctx.audit.record({
      kind: "access.approve",
      outcome: "failure",
      subject: approver,
      route: r.resource,
      reason,
      data: { request_id: r.id, user: r.user },
    });
  }

  /**
   * Someone other than the holder may revoke a request or grant only as a member of the
   * resource's approver group (when `access.resources` has it) or of an `access.admins`
   * group. Refusals are audited as `access.revoke` / `not-an-approver`.
   */
  async #requireRevoker(a: { id: string; name: string }, r: AccessRequest): Promise<void> {
    const approvers = this.config.resources[r.resource]?.approvers;
    const groups = [...(approvers ? [approvers] : []), ...this.config.admins];
    const member =
      groups.length > 0
        ? await this.#ctx.store.db
            .selectFrom("user_groups")
            .select("user_id")
            .where("user_id", "=", a.id)
            .where("group_name", "in", groups)
            .executeTakeFirst()
        : undefined;
    if (member) return;
    this.#ctx.audit.record({
      kind: "access.revoke",
      outcome: "failure",
      subject: a.name,
      route: r.resource,
      reason: "not-an-approver",
      data: { request_id: r.id, kind: r.kind, user: r.user },
    });
    const who = [
      approvers ? `the approver group ${approvers}` : undefined,
      this.config.admins.length ? `access.admins (${this.config.admins.join(", ")})` : undefined,
    ].filter((x) => x !== undefined);
    throw new ZtError(
      "ZT_ACCESS_NOT_APPROVER",
      `${a.name} may not revoke ${r.user}'s ${r.kind === "breakglass" ? "break-glass" : "access"} ${r.id}: ` +
        `only the holder${who.length ? `, or a member of ${who.join(" or ")},` : ""} may`,
      { request_id: r.id },
    );
  }

  /**
   * An approval needs the requester — the user with the request's id, not merely one with
   * its name — to exist and be enabled: a request outliving its user is never granted.
   */
  async #requireRequester(r: AccessRequest, approver: string): Promise<void> {
    const u = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "disabled"])
      .where("id", "=", r.userId)
      .executeTakeFirst();
    if (u && Number(u.disabled) === 0) return;
    const reason = u ? "requester-disabled" : "requester-missing";
    this.#refuseApproval(approver, r, reason);
    throw new ZtError(
      "ZT_ACCESS_STATE",
      `request ${r.id} cannot be approved: ${r.user} ${u ? "is disabled" : "no longer exists"}`,
      { request_id: r.id, reason },
    );
  }

  /** `a` must be an enabled member of the resource's approver group (see `#isApprover`). */
  async #requireApprover(a: { id: string; name: string }, r: AccessRequest): Promise<void> {
    if (!(await this.#isApprover(a, r.resource))) this.#refuseNotApprover(a, r);
  }

  /**
   * Whether `a` is an enabled member of the resource's approver group. Given `tx` (a
   * transaction), the rows read are locked for share on PostgreSQL, so the membership
   * holds until it commits.
   */
  async #isApprover(
    a: { id: string; name: string },
    resource: string,
    tx?: Kysely<Tables>,
  ): Promise<boolean> {
    const rc = this.config.resources[resource];
    if (!rc) return false;
    const member = await (tx ?? this.#ctx.store.db)
      .selectFrom("user_groups")
      .innerJoin("users", "users.id", "user_groups.user_id")
      .select("user_groups.user_id")
      .where("user_groups.user_id", "=", a.id)
      .where("user_groups.group_name", "=", rc.approvers)
      .where("users.disabled", "=", 0)
      .$if(tx !== undefined && this.#ctx.store.dialect === "postgres", (q) => q.forShare())
      .executeTakeFirst();
    return member !== undefined;
  }

  /** Audits and throws the refusal of someone not in the resource's approver group. */
  #refuseNotApprover(a: { id: string; name: string }, r: AccessRequest): never {
    const rc = this.config.resources[r.resource];
    this.#refuseApproval(a.name, r, "not-an-approver");
    throw new ZtError(
      "ZT_ACCESS_NOT_APPROVER",
      `${a.name} is not in the approver group for ${r.resource}${rc ? ` (${rc.approvers})` : ""}`,
    );
  }

  async #user(name: string): Promise<{ id: string; name: string }> {
    const u = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "name", "disabled"])
      .where("name", "=", name)
      .executeTakeFirst();
    if (!u) throw new ZtError("ZT_USER_NOT_FOUND", `no user named ${name}`);
    if (u.disabled === 1) throw new ZtError("ZT_USER_DISABLED", `${name} is disabled`);
    return { id: u.id, name: u.name };
  }

  async #row(id: string): Promise<AccessRequestsTable> {
    const row = await this.#ctx.store.db
      .selectFrom("access_requests")
      .selectAll()
      .where("id", "=", id)
      .executeTakeFirst();
    if (!row) throw new ZtError("ZT_NOT_FOUND", `no access request ${id}`, { request_id: id });
    return row;
  }
}

/** Audit record, `grant.changed` event and webhook notification for one request's change. */
async function announce(
  ctx: AppContext,
  notifier: WebhookNotifier | undefined,
  r: AccessRequest,
  o: {
    event: string;
    severity: "info" | "warning" | "critical";
    actor: string;
    summary: string;
    /** The audit reason; by default the request's status ("breakglass" when critical). */
    reason?: string;
    /** More data for the audit record and the notification. */
    extra?: Record<string, unknown>;
  },
): Promise<void> {
  const data = {
    request_id: r.id,
    kind: r.kind,
    user: r.user,
    resource: r.resource,
    reason: r.reason,
    status: r.status,
    expires_at: r.expiresAt,
    approvals: r.approvals,
    ...o.extra,
  };
  ctx.audit.record({
    kind: o.event,
    outcome: "info",
    subject: o.actor,
    route: r.resource,
    reason: o.reason ?? (o.severity === "critical" ? "breakglass" : r.status),
    data: { ...data, severity: o.severity },
  });
  // The change has committed: its notification (a break-glass's critical alert) goes out
  // even when the event cannot be published; that failure is still thrown to the caller
  // (PEPs that missed the event catch up at their next reload).
  try {
    await ctx.events.publish("grant.changed", {
      requestId: r.id,
      userId: r.userId,
      user: r.user,
      resource: r.resource,
      status: r.status,
      kind: r.kind,
    });
  } finally {
    await notifier?.notify({ event: o.event, severity: o.severity, summary: o.summary, data });
  }
}

/**
 * Ends every pending request and active grant of a user, inside the caller's transaction
 * (the one deleting the user): status `revoked`, decided by `zt`. A later user given the
 * same name therefore inherits nothing. Returns the ended requests for
 * `announceEndedAccess`, to be called once the transaction has committed.
 */
export async function endAccessOfUser(
  db: Kysely<Tables> | Transaction<Tables>,
  userId: string,
  now: number,
): Promise<AccessRequest[]> {
  const rows = await db
    .selectFrom("access_requests")
    .selectAll()
    .where("user_id", "=", userId)
    .where("status", "in", ["pending", "approved"])
    .execute();
  if (rows.length === 0) return [];
  await db
    .updateTable("access_requests")
    .set({ status: "revoked", decided_at: now, decided_by: "zt" })
    .where("user_id", "=", userId)
    .where("status", "in", ["pending", "approved"])
    .execute();
  return rows.map((row) =>
    toRequest({ ...row, status: "revoked", decided_at: now, decided_by: "zt" }),
  );
}

/**
 * Announces requests ended by `endAccessOfUser`: each is audited as `access.revoked` with
 * reason `cause` (e.g. `user-deleted`), published as `grant.changed` (every PEP drops the
 * grant at once) and sent to the webhook. Needs no valid `access:` section, so a broken
 * one never blocks a user's deletion; a broken `notifications:` section skips the webhook.
 */
export async function announceEndedAccess(
  ctx: AppContext,
  ended: readonly AccessRequest[],
  cause: string,
): Promise<void> {
  if (ended.length === 0) return;
  let notifier: WebhookNotifier | undefined;
  try {
    notifier = new WebhookNotifier(ctx, parseNotificationsConfig(ctx.config.notifications));
  } catch {
    notifier = undefined;
  }
  for (const r of ended) {
    const what = r.kind === "breakglass" ? "break-glass" : "access";
    await announce(ctx, notifier, r, {
      event: "access.revoked",
      severity: r.kind === "breakglass" ? "warning" : "info",
      actor: "zt",
      summary: `${r.user}'s ${what} ${r.id} for ${r.resource} was revoked: ${cause}`,
      reason: cause,
    });
  }
}

/** A request's or break-glass's reason, trimmed: 3 to MAX_REASON_LENGTH characters. */
function checkReason(text: string): string {
  const reason = text.trim();
  if (reason.length < 3 || reason.length > MAX_REASON_LENGTH)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `--reason: expected 3–${MAX_REASON_LENGTH} characters, got ${reason.length}`,
      { length: reason.length, max: MAX_REASON_LENGTH },
    );
  return reason;
}

/** PostgreSQL advisory lock key for the approvals of one access request (63 bits). */
function approvalLockKey(requestId: string): bigint {
  return createHash("sha256").update(`zt-access-approval\0${requestId}`).digest().readBigInt64BE(0);
}

/** PostgreSQL advisory lock key for one account's break-glass on one resource (63 bits). */
function breakglassLockKey(userId: string, resource: string): bigint {
  return createHash("sha256")
    .update(`zt-breakglass\0${userId}\0${resource}`)
    .digest()
    .readBigInt64BE(0);
}

export function toRequest(r: AccessRequestsTable): AccessRequest {
  let approvals: Approval[] = [];
  try {
    approvals = JSON.parse(r.approvals) as Approval[];
  } catch {
    approvals = [];
  }
  return {
    id: r.id,
    kind: r.kind === "breakglass" ? "breakglass" : "jit",
    userId: r.user_id,
    user: r.user_name,
    resource: r.resource,
    reason: r.reason,
    ttlMs: Number(r.ttl_ms),
    status: r.status as AccessStatus,
    requiredApprovals: Number(r.required_approvals),
    approvals,
    createdAt: Number(r.created_at),
    decidedAt: r.decided_at === null ? null : Number(r.decided_at),
    decidedBy: r.decided_by,
    startsAt: r.starts_at === null ? null : Number(r.starts_at),
    expiresAt: r.expires_at === null ? null : Number(r.expires_at),
  };
}
