import { hash as oneShotHash } from "node:crypto";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { newId, newToken, sha256Hex } from "../core/ids.js";
import type { ZtEvent } from "../events/index.js";

/** A live session as the PEP sees it. The token itself is never stored, only its hash. */
export interface SessionInfo {
  id: string;
  userId: string;
  createdAt: number;
  expiresAt: number;
  lastSeenAt: number;
  /** When MFA was last verified for this session (login or step-up). */
  mfaAt: number;
  sourceIp: string;
  userAgent: string;
  deviceId: string | null;
  revokedAt: number | null;
  revokeReason: string | null;
}

export interface CreateSessionOptions {
  userId: string;
  sourceIp: string;
  userAgent: string;
  deviceId?: string | null;
}

export type SessionCheck =
  | { ok: true; session: SessionInfo }
  | {
      ok: false;
      code: "ZT_SESSION_INVALID" | "ZT_SESSION_EXPIRED" | "ZT_SESSION_REVOKED";
      reason: string;
    };

/** Where a revocation came from: its audit record, the event that carried it. */
export interface RevocationOrigin {
  /** Id of the revocation's audit record (`session.revoke`, `svid.revoke`), when known. */
  revokeId?: string | undefined;
  /** Seq of the event this process heard it from (absent: revoked here, or found in the store). */
  eventSeq?: number | undefined;
}

type RevokedListener = (sessionId: string, reason: string, origin: RevocationOrigin) => void;

/**
 * The token's SHA-256 (hex), as `sha256Hex` gives: the one-shot `crypto.hash` skips
 * the Hash object a `createHash` chain allocates (this runs on every request).
 */
function hashToken(token: string): string {
  return oneShotHash("sha256", token, "hex");
}

/** What a session token looks like (32 random bytes, base64url): anything else is refused unread. */
export const SESSION_TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/** The session table is pruned no earlier than at this many remembered sessions. */
const PRUNE_AT_LEAST = 1024;
/**
 * How far ahead of the disabling process's clock another process's clock may run while
 * its sessions still count as existing when the user was disabled.
 */
const DISABLE_CLOCK_SKEW_MS = 60_000;
/** Session ids per UPDATE when revoking many at once. */
const REVOKE_CHUNK = 1000;
/** Session ids per store read when reconciling memory with the store. */
const RECONCILE_CHUNK = 500;

/**
 * The Policy Administrator's session table: creates, checks and revokes sessions.
 * Checks are served from memory; revocations from any process arrive as events and
 * take effect on the next request, and listeners (the PEP) close live connections.
 */
export class SessionService {
  readonly #ctx: AppContext;
  readonly #byHash = new Map<string, SessionInfo>();
  readonly #byId = new Map<string, SessionInfo>();
  readonly #listeners = new Set<RevokedListener>();
  /**
   * How stale `last_seen_at` may get before a check writes it: at most a minute, and a
   * tenth of the idle timeout, so a session in use is never refused as idle.
   */
  readonly #touchEveryMs: number;
  /** Remembered sessions at which ended ones are next pruned (amortised: see #remember). */
  #pruneAt = PRUNE_AT_LEAST;
  /**
   * One entry per store read of a session in flight: the revocations heard while it runs
   * (by session id, and `user:<id>` for a disabled or deleted user). A row read before a
   * revocation committed, but returned after its event was heard, would otherwise be
   * remembered live for good.
   */
  readonly #loading = new Set<Map<string, { reason: string; at: number }>>();
  #unsubscribe: (() => void) | undefined;
  #unsubscribeResync: (() => void) | undefined;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
    this.#touchEveryMs = Math.min(60_000, Math.floor(ctx.config.sessionIdleMs / 10));
    this.#unsubscribe = ctx.events.subscribe((e) => this.#onEvent(e));
    // Events pruned past this process's position: a `session.revoked` it never heard is
    // applied from the store (as the periodic pass does) before the bus reports fresh.
    this.#unsubscribeResync = ctx.events.onResync(async () => {
      await this.reconcile();
    });
  }

  /** Creates a session after a successful login; returns it with the cookie token. */
  async create(options: CreateSessionOptions): Promise<{ session: SessionInfo; token: string }> {
    const now = this.#ctx.clock.now();
    const token = newToken();
    const session: SessionInfo = {
      id: newId("ses"),
      userId: options.userId,
      createdAt: now,
      expiresAt: now + this.#ctx.config.sessionTtlMs,
      lastSeenAt: now,
      mfaAt: now,
      sourceIp: options.sourceIp,
      userAgent: options.userAgent.slice(0, 256),
      deviceId: options.deviceId ?? null,
      revokedAt: null,
      revokeReason: null,
    };
    const tokenHash = sha256Hex(token);
    await this.#ctx.store.db
      .insertInto("sessions")
      .values({
        id: session.id,
        token_hash: tokenHash,
        user_id: session.userId,
        created_at: session.createdAt,
        expires_at: session.expiresAt,
        last_seen_at: session.lastSeenAt,
        mfa_at: session.mfaAt,
        source_ip: session.sourceIp,
        user_agent: session.userAgent,
        device_id: session.deviceId,
        revoked_at: null,
        revoke_reason: null,
      })
      .execute();
    this.#remember(tokenHash, session);
    return { session, token };
  }

  /**
   * Checks a cookie/bearer token. Malformed, unknown, expired, idle and revoked tokens
   * are all refused with a stable code. Never throws for bad input.
   */
  async check(token: string | undefined): Promise<SessionCheck> {
    const known = this.checkInMemory(token);
    if (known !== undefined) return known;
    // Not answered in memory: a well-formed token, unknown here or looking idle.
    const hash = hashToken(token!);
    const cached = this.#byHash.get(hash);
    if (cached !== undefined) return this.#recheckIdle(hash, cached);
    const s = await this.#load(hash);
    if (!s) return { ok: false, code: "ZT_SESSION_INVALID", reason: "session-invalid" };
    return this.#validate(s);
  }

  /** Live, unexpired, unrevoked, but not seen by this process for the idle timeout. */
  #looksIdle(s: SessionInfo): boolean {
    const now = this.#ctx.clock.now();
    return (
      s.revokedAt === null &&
      now < s.expiresAt &&
      now - s.lastSeenAt >= this.#ctx.config.sessionIdleMs
    );
  }

  /**
   * Before refusing a remembered session as idle, re-read its `last_seen_at` (and
   * revocation) from the store: with several PEP processes, the user may have been active
   * through another one, which wrote the store but not this process's memory. Only a
   * session that looks idle here takes this path; the hot path stays in memory. A store
   * that cannot be read leaves the answer idle (fail closed).
   */
  async #recheckIdle(hash: string, s: SessionInfo): Promise<SessionCheck> {
    try {
      const row = await this.#ctx.store.db
        .selectFrom("sessions")
        .select(["last_seen_at", "mfa_at", "revoked_at", "revoke_reason"])
        .where("token_hash", "=", hash)
        .executeTakeFirst();
      if (!row) {
        // Gone from the store (its user was deleted): forget it.
        this.#byHash.delete(hash);
        this.#byId.delete(s.id);
        return { ok: false, code: "ZT_SESSION_INVALID", reason: "session-invalid" };
      }
      s.lastSeenAt = Math.max(s.lastSeenAt, Number(row.last_seen_at));
      s.mfaAt = Math.max(s.mfaAt, Number(row.mfa_at));
      if (row.revoked_at !== null && s.revokedAt === null) {
        s.revokedAt = Number(row.revoked_at);
        s.revokeReason = row.revoke_reason;
      }
    } catch {
      // fall through: judged on what this process knows
    }
    return this.#validate(s);
  }

  /**
   * `check` without a promise when the answer is known in memory (the hot path: no
   * microtask hops); `undefined` when the session must be read from the store (then
   * call `check`). Gives exactly what `check` would.
   *
   * A remembered session that looks idle also needs the store: another process may
   * have served the user since this one last did (see `#recheckIdle`).
   */
  checkInMemory(token: string | undefined): SessionCheck | undefined {
    if (!token || !SESSION_TOKEN_RE.test(token)) {
      return { ok: false, code: "ZT_SESSION_INVALID", reason: "session-invalid" };
    }
    const s = this.#byHash.get(hashToken(token));
    if (s === undefined || this.#looksIdle(s)) return undefined;
    return this.#validate(s);
  }

  /** A session not in memory, from the store (remembered when found). */
  async #load(hash: string): Promise<SessionInfo | undefined> {
    const heard = new Map<string, { reason: string; at: number }>();
    this.#loading.add(heard);
    let row;
    try {
      row = await this.#ctx.store.db
        .selectFrom("sessions")
        .selectAll()
        .where("token_hash", "=", hash)
        .executeTakeFirst();
    } finally {
      this.#loading.delete(heard);
    }
    if (!row) return undefined;
    const s = fromRow(row);
    const byUser = heard.get(`user:${s.userId}`);
    // A user's disable ends the sessions it found, not one created after a re-enable.
    const revoked =
      heard.get(s.id) ??
      (byUser && s.createdAt <= byUser.at + DISABLE_CLOCK_SKEW_MS ? byUser : undefined);
    if (revoked && s.revokedAt === null) {
      s.revokedAt = revoked.at;
      s.revokeReason = revoked.reason;
    }
    this.#remember(hash, s);
    return s;
  }

  #validate(s: SessionInfo): SessionCheck {
    const now = this.#ctx.clock.now();
    if (s.revokedAt !== null)
      return { ok: false, code: "ZT_SESSION_REVOKED", reason: "session-revoked" };
    if (now >= s.expiresAt)
      return { ok: false, code: "ZT_SESSION_EXPIRED", reason: "session-expired" };
    if (now - s.lastSeenAt >= this.#ctx.config.sessionIdleMs) {
      return { ok: false, code: "ZT_SESSION_EXPIRED", reason: "session-idle" };
    }
    if (now - s.lastSeenAt >= this.#touchEveryMs) {
      s.lastSeenAt = now;
      void this.#ctx.store.db
        .updateTable("sessions")
        .set({ last_seen_at: now })
        .where("id", "=", s.id)
        .execute()
        .catch(() => undefined);
    }
    return { ok: true, session: s };
  }

  /**
   * Activity on a session outside a check (frames on a WebSocket it opened): moves its
   * `last_seen_at` as a request would, written at most once per touch interval (a tenth
   * of the idle timeout, at most a minute), never per frame. A revoked, expired or
   * forgotten session is left as it is: touching never brings one back.
   */
  touch(sessionId: string): void {
    const s = this.#byId.get(sessionId);
    if (s === undefined || s.revokedAt !== null) return;
    const now = this.#ctx.clock.now();
    if (now >= s.expiresAt || now - s.lastSeenAt < this.#touchEveryMs) return;
    s.lastSeenAt = now;
    void this.#ctx.store.db
      .updateTable("sessions")
      .set({ last_seen_at: now })
      .where("id", "=", s.id)
      .where("revoked_at", "is", null)
      .execute()
      .catch(() => undefined);
  }

  /** Records a fresh MFA verification (step-up) on a session. */
  async markMfa(sessionId: string): Promise<void> {
    const now = this.#ctx.clock.now();
    await this.#ctx.store.db
      .updateTable("sessions")
      .set({ mfa_at: now })
      .where("id", "=", sessionId)
      .execute();
    const s = this.#byId.get(sessionId);
    if (s) s.mfaAt = now;
  }

  async get(sessionId: string): Promise<SessionInfo | undefined> {
    const row = await this.#ctx.store.db
      .selectFrom("sessions")
      .selectAll()
      .where("id", "=", sessionId)
      .executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }

  /**
   * Sessions by id as the store has them, without remembering them: for re-deciding the
   * live connections of sessions this process has forgotten (pruned as idle while a
   * WebSocket on them ran on). An id the store does not hold is absent from the result.
   */
  async read(sessionIds: readonly string[]): Promise<Map<string, SessionInfo>> {
    const out = new Map<string, SessionInfo>();
    for (let i = 0; i < sessionIds.length; i += RECONCILE_CHUNK) {
      const rows = await this.#ctx.store.db
        .selectFrom("sessions")
        .selectAll()
        .where("id", "in", sessionIds.slice(i, i + RECONCILE_CHUNK))
        .execute();
      for (const r of rows) out.set(r.id, fromRow(r));
    }
    return out;
  }

  /** Active (unrevoked, unexpired) sessions, optionally of one user. */
  async list(options: { userId?: string; includeInactive?: boolean } = {}): Promise<SessionInfo[]> {
    let q = this.#ctx.store.db.selectFrom("sessions").selectAll();
    if (options.userId) q = q.where("user_id", "=", options.userId);
    if (!options.includeInactive) {
      q = q.where("revoked_at", "is", null).where("expires_at", ">", this.#ctx.clock.now());
    }
    const rows = await q.orderBy("created_at", "desc").execute();
    return rows.map(fromRow);
  }

  /** Revokes sessions by id; every PEP denies their next request. Returns how many. */
  async revoke(sessionIds: string[], reason: string): Promise<number> {
    return revokeSessions(this.#ctx, sessionIds, reason, {}, (now, revokeId) => {
      for (const id of sessionIds) this.#markRevoked(id, reason, now, { revokeId });
    });
  }

  /** Revokes every active session of a user. */
  async revokeUser(userId: string, reason: string): Promise<number> {
    const ids = (await this.list({ userId })).map((s) => s.id);
    return this.revoke(ids, reason);
  }

  /**
   * Re-reads the remembered live sessions from the store and applies any revocation (or
   * deletion) found there: a revocation whose `session.revoked` was never heard — its
   * publish failed after the UPDATE committed, and a retry found nothing left to revoke —
   * takes effect here (listeners told, as for an event) instead of never. The periodic
   * pass calls it. Returns the ids newly refused; throws when the store cannot be read.
   */
  async reconcile(): Promise<string[]> {
    const now = this.#ctx.clock.now();
    const live = [...this.#byId.values()].filter((s) => s.revokedAt === null && now < s.expiresAt);
    const found: string[] = [];
    for (let i = 0; i < live.length; i += RECONCILE_CHUNK) {
      const chunk = live.slice(i, i + RECONCILE_CHUNK);
      const rows = await this.#ctx.store.db
        .selectFrom("sessions")
        .select(["id", "revoked_at", "revoke_reason"])
        .where(
          "id",
          "in",
          chunk.map((s) => s.id),
        )
        .execute();
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const s of chunk) {
        if (s.revokedAt !== null) continue; // an event got there meanwhile
        const r = byId.get(s.id);
        if (r && r.revoked_at === null) continue;
        found.push(s.id);
        // Gone from the store: its user was deleted (the rows cascade).
        this.#markRevoked(
          s.id,
          r ? (r.revoke_reason ?? "session-revoked") : "session-invalid",
          r ? Number(r.revoked_at) : now,
          {},
        );
      }
    }
    return found;
  }

  /**
   * Called with (sessionId, reason, origin) whenever a session is revoked, from any
   * process; possibly more than once for one revocation (heard here, then from the store).
   */
  onRevoked(listener: RevokedListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Sessions currently held in memory (for re-evaluation and metrics). */
  cached(): Iterable<SessionInfo> {
    return this.#byId.values();
  }

  /** The session held in memory under `sessionId`, if any (no store read). */
  cachedById(sessionId: string): SessionInfo | undefined {
    return this.#byId.get(sessionId);
  }

  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#unsubscribeResync?.();
    this.#unsubscribeResync = undefined;
  }

  #remember(hash: string, s: SessionInfo): void {
    this.#byHash.set(hash, s);
    this.#byId.set(s.id, s);
    // A long-running PEP meets every session of its lifetime: without this, revoked and
    // expired ones would stay in memory for good. Pruning when the table has doubled
    // keeps the cost per remembered session constant.
    if (this.#byId.size >= this.#pruneAt) {
      this.prune();
      this.#pruneAt = Math.max(PRUNE_AT_LEAST, this.#byId.size * 2);
    }
  }

  /**
   * Forgets sessions that can no longer be used here: revoked, expired, or idle for the
   * idle timeout (an idle one is read from the store again if it comes back: another
   * process may have served it). Returns how many were forgotten.
   */
  prune(): number {
    const now = this.#ctx.clock.now();
    const idleMs = this.#ctx.config.sessionIdleMs;
    let n = 0;
    for (const [hash, s] of this.#byHash) {
      if (s.revokedAt !== null || now >= s.expiresAt || now - s.lastSeenAt >= idleMs) {
        this.#byHash.delete(hash);
        this.#byId.delete(s.id);
        n++;
      }
    }
    return n;
  }

  #markRevoked(id: string, reason: string, at: number, origin: RevocationOrigin): void {
    for (const heard of this.#loading) heard.set(id, { reason, at });
    const s = this.#byId.get(id);
    if (s && s.revokedAt === null) {
      s.revokedAt = at;
      s.revokeReason = reason;
    }
    for (const l of this.#listeners) {
      try {
        l(id, reason, origin);
      } catch {
        /* listeners must not break revocation */
      }
    }
  }

  #onEvent(e: ZtEvent): void {
    if (e.kind === "session.revoked") {
      const ids = Array.isArray(e.data["sessionIds"]) ? (e.data["sessionIds"] as unknown[]) : [];
      const reason = typeof e.data["reason"] === "string" ? e.data["reason"] : "session-revoked";
      const origin = { revokeId: revokeIdOf(e), eventSeq: e.seq };
      for (const id of ids) if (typeof id === "string") this.#markRevoked(id, reason, e.ts, origin);
    } else if (e.kind === "user.disabled" || e.kind === "user.deleted") {
      const userId = e.data["userId"];
      const reason = e.kind === "user.deleted" ? "user-deleted" : "user-disabled";
      if (typeof userId === "string") {
        for (const heard of this.#loading) heard.set(`user:${userId}`, { reason, at: e.ts });
        // Only the sessions that existed when the user was disabled: a process hearing the
        // event late (catching up after a partition) must not end sessions created after
        // the user was enabled again. Sessions are stamped by other processes' clocks: one
        // up to DISABLE_CLOCK_SKEW_MS ahead still counts as existing (fail closed).
        const until = e.ts + DISABLE_CLOCK_SKEW_MS;
        for (const s of this.#byId.values()) {
          if (s.userId === userId && s.createdAt <= until)
            this.#markRevoked(s.id, reason, e.ts, { revokeId: revokeIdOf(e), eventSeq: e.seq });
        }
        // Persist it too (any process hearing the event may do so; the update is idempotent).
        void this.#ctx.store.db
          .updateTable("sessions")
          .set({ revoked_at: e.ts, revoke_reason: reason })
          .where("user_id", "=", userId)
          .where("revoked_at", "is", null)
          .where("created_at", "<=", until)
          .execute()
          .catch(() => undefined);
      }
    }
  }
}

/**
 * Revokes every active session of a user from any process, including one that holds no
 * SessionService (a CLI command): marks them in the store, publishes `session.revoked`
 * (every PEP denies them at once and cuts their live connections) and audits
 * `session.revoke`. Returns the ids revoked.
 */
/** The audit record an event names as the revocation it announces (`revoke_id`), if any. */
function revokeIdOf(e: ZtEvent): string | undefined {
  const id = e.data["revoke_id"];
  return typeof id === "string" ? id : undefined;
}

export async function revokeSessionsOfUser(
  ctx: AppContext,
  userId: string,
  reason: string,
): Promise<string[]> {
  const rows = await ctx.store.db
    .selectFrom("sessions")
    .select("id")
    .where("user_id", "=", userId)
    .where("revoked_at", "is", null)
    .where("expires_at", ">", ctx.clock.now())
    .execute();
  const ids = rows.map((r) => r.id);
  await revokeSessions(ctx, ids, reason, { user_id: userId });
  return ids;
}

/**
 * Marks sessions revoked in the store, audits `session.revoke`, then (after `local`, this
 * process's own memory) publishes `session.revoked` naming that record (`revoke_id`), so
 * every process's `session.cut` records link to it. Returns how many were live.
 */
async function revokeSessions(
  ctx: AppContext,
  ids: string[],
  reason: string,
  auditData: Record<string, string>,
  local?: (now: number, revokeId: string) => void,
): Promise<number> {
  if (ids.length === 0) return 0;
  const now = ctx.clock.now();
  let revoked = 0;
  // In chunks: one statement binds at most 32,766 values on SQLite, 65,535 on PostgreSQL.
  for (let i = 0; i < ids.length; i += REVOKE_CHUNK) {
    const res = await ctx.store.db
      .updateTable("sessions")
      .set({ revoked_at: now, revoke_reason: reason })
      .where("id", "in", ids.slice(i, i + REVOKE_CHUNK))
      .where("revoked_at", "is", null)
      .executeTakeFirst();
    revoked += Number(res.numUpdatedRows ?? 0);
  }
  // Recorded once committed, before anything cuts: the cuts' records name this one.
  const revokeId = ctx.audit.record({
    kind: "session.revoke",
    outcome: "info",
    reason,
    data: { session_ids: ids, ...auditData },
  });
  local?.(now, revokeId);
  await ctx.events.publish("session.revoked", { sessionIds: ids, reason, revoke_id: revokeId });
  return revoked;
}

function fromRow(r: {
  id: string;
  user_id: string;
  created_at: number;
  expires_at: number;
  last_seen_at: number;
  mfa_at: number;
  source_ip: string;
  user_agent: string;
  device_id: string | null;
  revoked_at: number | null;
  revoke_reason: string | null;
}): SessionInfo {
  return {
    id: r.id,
    userId: r.user_id,
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    lastSeenAt: Number(r.last_seen_at),
    mfaAt: Number(r.mfa_at),
    sourceIp: r.source_ip,
    userAgent: r.user_agent,
    deviceId: r.device_id,
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    revokeReason: r.revoke_reason,
  };
}

export function sessionNotFound(id: string): ZtError {
  return new ZtError("ZT_NOT_FOUND", `no session ${id}`, { session_id: id });
}
