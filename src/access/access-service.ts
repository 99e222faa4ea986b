import type { Kysely, Transaction } from "kysely";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { AccessRequestsTable, Tables } from "../store/index.js";
import { parseAccessConfig, parseNotificationsConfig, type AccessConfig } from "./access-config.js";
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
  approvals: { by: string; at: number }[];
  createdAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  startsAt: number | null;
  expiresAt: number | null;
}

const RESOURCE_RE = /^(?:App::"([a-z0-9][a-z0-9_-]{0,62})"|([a-z0-9][a-z0-9_-]{0,62}))$/;

/** Parses `App::"db-admin"` or `db-admin` into the app name. */
export function parseResource(text: string): string {
  const m = RESOURCE_RE.exec(text.trim());
  if (!m)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `--resource: expected App::"name" or an app name, got ${JSON.stringify(text)}`,
    );
  return (m[1] ?? m[2])!;
}

/**
 * Just-in-time access and break-glass. A request names an App, a reason and a TTL;
 * members of the resource's approver group approve it (never the requester; one or
 * two approvals); approved, it is a grant until `expires_at`. Every step is audited,
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
    const reason = options.reason.trim();
    if (reason.length < 3 || reason.length > 500)
      throw new ZtError("ZT_BAD_REQUEST", "--reason: expected 3–500 characters");
    if (!(options.ttlMs > 0) || options.ttlMs > rc.maxTtlMs)
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `--ttl: expected more than 0 and at most ${rc.maxTtlMs / 60000} minutes for ${resource}`,
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
      `${user.name} requests ${resource} for ${Math.round(r.ttlMs / 60000)} min: ${reason}`,
    );
    return r;
  }

  /** One approval by `approver`; the request becomes a grant once it has enough. */
  async approve(id: string, approver: string): Promise<AccessRequest> {
    const row = await this.#row(id);
    const r = toRequest(row);
    if (r.kind !== "jit" || r.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} is ${r.status}, not pending`, {
        status: r.status,
      });
    const a = await this.#user(approver);
    if (a.id === r.userId) {
      this.#ctx.audit.record({
        kind: "access.approve",
        outcome: "failure",
        subject: a.name,
        reason: "self-approval",
        data: { request_id: id },
      });
      throw new ZtError("ZT_ACCESS_SELF_APPROVAL", "you cannot approve your own access request", {
        request_id: id,
      });
    }
    await this.#requireApprover(a, r.resource, id);
    if (r.approvals.some((x) => x.by === a.name))
      throw new ZtError("ZT_ACCESS_STATE", `${a.name} already approved ${id}`);
    await this.#requireRequester(r, a.name);
    const now = this.#ctx.clock.now();
    const approvals = [...r.approvals, { by: a.name, at: now }];
    const done = approvals.length >= r.requiredApprovals;
    const set = done
      ? {
          approvals: JSON.stringify(approvals),
          status: "approved",
          decided_at: now,
          decided_by: a.name,
          starts_at: now,
          expires_at: now + r.ttlMs,
        }
      : { approvals: JSON.stringify(approvals) };
    const res = await this.#ctx.store.db
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
    const updated = toRequest(await this.#row(id));
    if (done)
      await this.#announce(
        updated,
        "access.approved",
        "info",
        a.name,
        `${a.name} approved ${r.user}'s access to ${r.resource} until ${new Date(updated.expiresAt!).toISOString()}`,
      );
    else
      await this.#announce(
        updated,
        "access.approval",
        "info",
        a.name,
        `${a.name} approved ${r.user}'s access to ${r.resource} (${approvals.length}/${r.requiredApprovals})`,
      );
    return updated;
  }

  async deny(id: string, approver: string): Promise<AccessRequest> {
    const r = toRequest(await this.#row(id));
    if (r.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} is ${r.status}, not pending`);
    const a = await this.#user(approver);
    if (a.id !== r.userId) await this.#requireApprover(a, r.resource, id);
    return this.#transition(
      id,
      "pending",
      "denied",
      a.name,
      "access.denied",
      `${a.name} denied ${r.user}'s access to ${r.resource}`,
    );
  }

  /** Ends an active grant (or withdraws a pending request) at once. */
  async revoke(id: string, by: string): Promise<AccessRequest> {
    const r = toRequest(await this.#row(id));
    if (r.status !== "approved" && r.status !== "pending")
      throw new ZtError("ZT_ACCESS_STATE", `request ${id} is ${r.status}`);
    const a = await this.#user(by);
    if (a.id !== r.userId && r.kind === "jit") await this.#requireApprover(a, r.resource, id);
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
   * approval. Non-renewable: refused while one is active for the same account and
   * resource. Always a critical alert (audit + webhook).
   */
  async breakglass(options: {
    user: string;
    resource: string;
    reason: string;
  }): Promise<AccessRequest> {
    const user = await this.#user(options.user);
    const resource = parseResource(options.resource);
    const bg = this.config.breakglass;
    if (!bg.accounts.includes(user.name)) {
      this.#ctx.audit.record({
        kind: "breakglass",
        outcome: "failure",
        subject: user.name,
        route: resource,
        reason: "not-a-breakglass-account",
        data: { severity: "critical" },
      });
      throw new ZtError(
        "ZT_ACCESS_NOT_APPROVER",
        `${user.name} is not a break-glass account (access.breakglass.accounts)`,
      );
    }
    if (!bg.resources.includes(resource))
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `--resource: ${resource} is not in access.breakglass.resources`,
      );
    const reason = options.reason.trim();
    if (reason.length < 3)
      throw new ZtError("ZT_BAD_REQUEST", "--reason: say why (at least 3 characters)");
    const now = this.#ctx.clock.now();
    const active = await this.#ctx.store.db
      .selectFrom("access_requests")
      .select("id")
      .where("kind", "=", "breakglass")
      .where("user_id", "=", user.id)
      .where("resource", "=", resource)
      .where("status", "=", "approved")
      .where("expires_at", ">", now)
      .executeTakeFirst();
    if (active)
      throw new ZtError(
        "ZT_ACCESS_STATE",
        `break-glass ${active.id} is still active; it cannot be renewed or stacked`,
      );
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
    await this.#ctx.store.db.insertInto("access_requests").values(row).execute();
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

  /** Marks grants past their expiry as expired (audited, published); returns them. */
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
  ): Promise<void> {
    await announce(this.#ctx, this.#notifier, r, { event, severity, actor, summary });
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
    this.#ctx.audit.record({
      kind: "access.approve",
      outcome: "failure",
      subject: approver,
      route: r.resource,
      reason,
      data: { request_id: r.id, user: r.user },
    });
    throw new ZtError(
      "ZT_ACCESS_STATE",
      `request ${r.id} cannot be approved: ${r.user} ${u ? "is disabled" : "no longer exists"}`,
      { request_id: r.id, reason },
    );
  }

  async #requireApprover(
    a: { id: string; name: string },
    resource: string,
    id: string,
  ): Promise<void> {
    const rc = this.config.resources[resource];
    const member = rc
      ? await this.#ctx.store.db
          .selectFrom("user_groups")
          .select("user_id")
          .where("user_id", "=", a.id)
          .where("group_name", "=", rc.approvers)
          .executeTakeFirst()
      : undefined;
    if (!member) {
      this.#ctx.audit.record({
        kind: "access.approve",
        outcome: "failure",
        subject: a.name,
        reason: "not-an-approver",
        data: { request_id: id },
      });
      throw new ZtError(
        "ZT_ACCESS_NOT_APPROVER",
        `${a.name} is not in the approver group for ${resource}${rc ? ` (${rc.approvers})` : ""}`,
      );
    }
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
  };
  ctx.audit.record({
    kind: o.event,
    outcome: "info",
    subject: o.actor,
    route: r.resource,
    reason: o.reason ?? (o.severity === "critical" ? "breakglass" : r.status),
    data: { ...data, severity: o.severity },
  });
  await ctx.events.publish("grant.changed", {
    requestId: r.id,
    userId: r.userId,
    user: r.user,
    resource: r.resource,
    status: r.status,
    kind: r.kind,
  });
  await notifier?.notify({ event: o.event, severity: o.severity, summary: o.summary, data });
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

export function toRequest(r: AccessRequestsTable): AccessRequest {
  let approvals: { by: string; at: number }[] = [];
  try {
    approvals = JSON.parse(r.approvals) as { by: string; at: number }[];
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
