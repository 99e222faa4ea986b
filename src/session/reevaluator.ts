import type { AppContext } from "../app/index.js";
import type { Services } from "../app/services.js";
import type { ZtEvent } from "../events/index.js";
import type { DecisionPoint, LiveConnection, LiveConnections } from "../proxy/index.js";
import { DeviceTrust, parseDevicesConfig } from "../device/index.js";
import { AccessService, GrantCache, RiskSignals } from "../access/index.js";
import type { SessionInfo, SessionService } from "./session-service.js";
import type { EntitySnapshot } from "./entity-snapshot.js";

/**
 * Why a re-check happened; user/device causes also revoke sessions that fail. `deadline`:
 * a connection's own timer, at its session's idle deadline or absolute expiry, or at its
 * client certificate's notAfter (mTLS).
 */
export type RecheckCause =
  "user" | "device" | "grant" | "policy" | "cert" | "ban" | "periodic" | "deadline";

export interface ReevaluatorDeps {
  ctx: AppContext;
  sessions: SessionService;
  snapshot: EntitySnapshot;
  decisions: DecisionPoint;
  live: LiveConnections;
  devices: DeviceTrust;
  grants: GrantCache;
  access: AccessService;
  risk: RiskSignals;
}

export interface RecheckResult {
  checked: number;
  closed: number;
  revokedSessions: string[];
}

const MAX_TIMER_MS = 2_147_483_647;

/**
 * The Policy Administrator at work: hears every event that can change a decision,
 * re-decides the live connections it touches with fresh context, closes those that no
 * longer pass, and revokes their sessions when the cause is about the user or device.
 * A periodic tick (session.recheck_interval) applies time-based conditions, expires
 * grants and device reports, reconciles the grant cache and the session table with the
 * store, and refreshes risk signals; grant expiry also has its own timer armed on the clock.
 * So does each live connection's deadline (its session's idle deadline or expiry, or its
 * client certificate's notAfter for mTLS) once it falls within two re-check intervals:
 * the cut happens then, not at the next periodic pass; the pass itself checks them too.
 */
export class Reevaluator {
  readonly #d: ReevaluatorDeps;
  #unsubscribe: (() => void) | undefined;
  #unsubscribeResync: (() => void) | undefined;
  #interval: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  /** Each live connection's timer for its session deadline, while one is armed. */
  readonly #deadlines = new Map<LiveConnection, NodeJS.Timeout>();
  /** How far ahead a deadline gets its timer; farther ones are armed by a later pass. */
  readonly #horizonMs: number;
  #unwatch: (() => void) | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #lastTick: number;
  #closed = false;
  /**
   * Listeners told about every cut of a live connection, this pass's or another's (a
   * revocation's): for metrics, tests and the revoke benchmark.
   */
  readonly #onCut = new Set<(sessionId: string, reason: string) => void>();

  constructor(deps: ReevaluatorDeps) {
    this.#d = deps;
    this.#lastTick = deps.ctx.clock.now();
    this.#horizonMs = 2 * recheckEveryMs(deps.ctx.config.sessionRecheckMs);
  }

  start(): void {
    this.#unsubscribe = this.#d.ctx.events.subscribe((e) => {
      this.#enqueue(() => this.handle(e));
    });
    this.#unsubscribeResync = this.#d.ctx.events.onResync(() => this.#resyncQueued());
    const every = recheckEveryMs(this.#d.ctx.config.sessionRecheckMs);
    this.#interval = setInterval(() => this.#enqueue(() => this.tick()), every);
    this.#interval.unref();
    this.#armExpiry();
    this.#unwatch = this.#d.live.watch({
      added: (c) => this.#armDeadline(c),
      cut: (c, why) => {
        for (const l of this.#onCut) l(c.sessionId, why.reason);
      },
      removed: (c) => this.#disarmDeadline(c),
    });
    this.#armDeadlines();
  }

  close(): void {
    this.#closed = true;
    this.#unsubscribe?.();
    this.#unsubscribeResync?.();
    if (this.#interval) clearInterval(this.#interval);
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer);
    this.#unwatch?.();
    for (const t of this.#deadlines.values()) clearTimeout(t);
    this.#deadlines.clear();
  }

  /** How many live connections have a deadline timer armed (metrics, tests). */
  armedDeadlines(): number {
    return this.#deadlines.size;
  }

  onCut(listener: (sessionId: string, reason: string) => void): () => void {
    this.#onCut.add(listener);
    return () => this.#onCut.delete(listener);
  }

  /** Waits until every queued event and tick has been handled. */
  async idle(): Promise<void> {
    let q: Promise<unknown>;
    do {
      q = this.#queue;
      await q;
    } while (q !== this.#queue);
  }

  /** Runs the periodic pass now, in order with queued events (tests, after moving the clock). */
  runTick(): Promise<RecheckResult> {
    return new Promise((resolve, reject) => {
      this.#enqueue(() => this.tick().then(resolve, reject));
    });
  }

  /**
   * The full resync after events were pruned past this process's position: device
   * posture, users and grants are re-read from the store (rejecting, so the bus retries
   * and stays stale, when it cannot be read), then the periodic pass re-decides every
   * live connection against them and reconciles the sessions.
   */
  #resyncQueued(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#enqueue(async () => {
        try {
          const d = this.#d;
          await d.devices.load();
          await d.snapshot.resync();
          await d.grants.reload();
          await d.sessions.reconcile();
          await this.tick();
          resolve();
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
      // Closed before the job ran: nothing left to resync here.
      if (this.#closed) resolve();
    });
  }

  /** Handles one event (exposed for tests; normally called from the subscription). */
  async handle(e: ZtEvent): Promise<RecheckResult | undefined> {
    const d = this.#d;
    const userId = typeof e.data["userId"] === "string" ? e.data["userId"] : undefined;
    switch (e.kind) {
      case "user.disabled":
      case "user.enabled":
      case "user.deleted":
      case "user.groups-changed":
      case "mfa.reset": {
        if (!userId) return this.recheck(() => true, "user", e.kind);
        // A deleted user's grants end with them (by id: a later user of that name gets none).
        if (e.kind === "user.deleted") d.grants.forgetUser(userId);
        const before = d.snapshot.user(userId)?.name;
        await d.snapshot.refreshUser(userId);
        const name =
          d.snapshot.user(userId)?.name ??
          before ??
          (typeof e.data["name"] === "string" ? e.data["name"] : undefined);
        return this.recheck(
          (c) => c.facts.principal.type === "User" && c.facts.principal.id === name,
          "user",
          reasonFor(e.kind),
        );
      }
      case "device.changed": {
        const deviceId = typeof e.data["deviceId"] === "string" ? e.data["deviceId"] : undefined;
        if (!deviceId) return undefined;
        const prev = d.devices.device(deviceId);
        const wasCompliant = prev ? d.devices.compliantNow(prev) : false;
        const sessionId = typeof e.data["sessionId"] === "string" ? e.data["sessionId"] : undefined;
        if (sessionId) d.devices.bindSession(sessionId, deviceId);
        const now = await d.devices.refresh(deviceId);
        const isCompliant = now ? d.devices.compliantNow(now) : false;
        const bound = new Set(d.devices.sessionsOfDevice(deviceId));
        const result = await this.recheck(
          (c) => bound.has(c.sessionId),
          "device",
          "device-noncompliant",
        );
        if (wasCompliant && !isCompliant) {
          // The device fell out of compliance: its sessions end, not just its connections.
          const ids = [...bound].filter((id) => !result.revokedSessions.includes(id));
          if (ids.length) {
            await d.sessions.revoke(ids, "device-noncompliant");
            result.revokedSessions.push(...ids);
          }
        }
        return result;
      }
      case "grant.changed": {
        const requestId = typeof e.data["requestId"] === "string" ? e.data["requestId"] : undefined;
        // An ended grant leaves memory before any store read: the cut must not wait on I/O.
        const ended =
          e.data["status"] !== "approved" && requestId ? d.grants.forget(requestId) : undefined;
        const user = ended ?? (requestId ? await d.grants.refresh(requestId) : undefined);
        this.#armExpiry();
        const name = user ?? (typeof e.data["user"] === "string" ? e.data["user"] : undefined);
        return this.recheck(
          (c) => c.facts.principal.type === "User" && c.facts.principal.id === name,
          "grant",
          "grant-ended",
        );
      }
      case "session.revoked": {
        const ids = Array.isArray(e.data["sessionIds"]) ? (e.data["sessionIds"] as unknown[]) : [];
        for (const id of ids) if (typeof id === "string") d.devices.forgetSession(id);
        return undefined;
      }
      case "policy.changed":
        return this.recheck(() => true, "policy", "policy-changed");
      case "cert.revoked":
        return this.recheck(() => true, "cert", "cert-revoked");
      case "ban.changed":
        // A new ban (an operator's on a user, or any on a source address) refuses the
        // next request at once; the connections already open end now too, not at the
        // next periodic pass. The ban cache heard this event first (it applies it in its
        // own listener, synchronously). A ban ends no session: lifting it restores access.
        if (e.data["action"] !== "add") return undefined;
        return this.recheck(() => true, "ban", "banned");
      default:
        return undefined;
    }
  }

  /**
   * The periodic pass: expire grants and device reports that ran out, reconcile the
   * grant cache and the session table with the store (a lost `grant.changed` or
   * `session.revoked` heals here), refresh risk
   * signals, then re-decide every live connection (time-based conditions).
   */
  async tick(): Promise<RecheckResult> {
    const d = this.#d;
    const now = d.ctx.clock.now();
    const since = this.#lastTick;
    this.#lastTick = now;
    d.grants.dropExpired(now);
    await d.access.expireDue(now).catch(() => []);
    await this.#reconcileGrants();
    await this.#reconcileSessions();
    for (const dev of d.devices.expiredSince(since, now)) {
      const ids = d.devices.sessionsOfDevice(dev.id);
      d.ctx.audit.record({
        kind: "device.expired",
        outcome: "info",
        reason: "device-report-missing",
        data: { device_id: dev.id, sessions: ids.length },
      });
      if (ids.length) await d.sessions.revoke(ids, "device-report-missing");
    }
    await d.risk.refresh().catch(() => undefined);
    this.#armExpiry();
    const result = await this.recheck(() => true, "periodic", "recheck-failed");
    this.#armDeadlines();
    return result;
  }

  /**
   * Re-reads the active grants from the store, so a grant whose `grant.changed` event was
   * never heard (published before this process started reading, or not published at all
   * after its change committed) is dropped, or picked up, within one tick. A difference
   * is audited (`grant.reconciled`); the tick's re-check then applies it to live
   * connections. Store unreachable: the cache is kept as it was.
   */
  async #reconcileGrants(): Promise<void> {
    const d = this.#d;
    let drift: { dropped: string[]; added: string[] };
    try {
      drift = await d.grants.reload();
    } catch {
      return;
    }
    if (drift.dropped.length === 0 && drift.added.length === 0) return;
    d.ctx.audit.record({
      kind: "grant.reconciled",
      outcome: "info",
      reason: "grant-cache-drift",
      data: { dropped: drift.dropped, added: drift.added },
    });
  }

  /**
   * Re-reads the remembered live sessions, so a revocation committed without its
   * `session.revoked` being heard is enforced (and its live connections cut) within one
   * tick. A difference is audited (`session.reconciled`). Store unreachable: memory is
   * kept as it was (staleness fails the PEP closed if that lasts).
   */
  async #reconcileSessions(): Promise<void> {
    const d = this.#d;
    let refused: string[];
    try {
      refused = await d.sessions.reconcile();
    } catch {
      return;
    }
    if (refused.length === 0) return;
    d.ctx.audit.record({
      kind: "session.reconciled",
      outcome: "info",
      reason: "session-cache-drift",
      data: { session_ids: refused },
    });
  }

  /**
   * Re-decides the live connections matching `which` with fresh context; closes the
   * ones that no longer pass (and, for user/device causes, revokes their sessions).
   */
  async recheck(
    which: (c: LiveConnection) => boolean,
    cause: RecheckCause,
    reason: string,
  ): Promise<RecheckResult> {
    return this.#recheckConnections([...this.#d.live.all()].filter(which), cause, reason);
  }

  async #recheckConnections(
    conns: LiveConnection[],
    cause: RecheckCause,
    reason: string,
  ): Promise<RecheckResult> {
    const d = this.#d;
    // The sessions these connections run on, as held in memory now (looked up by id: a
    // deadline's re-check of one connection costs one lookup, not a pass over them all).
    const sessionsById = new Map<string, SessionInfo>();
    for (const c of conns) {
      const s = c.sessionId.startsWith("svc:") ? undefined : d.sessions.cachedById(c.sessionId);
      if (s !== undefined) sessionsById.set(c.sessionId, s);
    }
    // A session this process forgot (pruned as idle: only a WebSocket used it since) is
    // read from the store: judged on the facts of its upgrade, it would outlive its
    // expiry, its MFA would never age, and a revocation whose event was lost would never
    // apply to it. A store that cannot be read leaves those facts (staleness fails the
    // PEP closed if that lasts).
    const forgotten = new Set(
      conns.map((c) => c.sessionId).filter((id) => !id.startsWith("svc:") && !sessionsById.has(id)),
    );
    let stored: Map<string, SessionInfo> | undefined;
    if (forgotten.size > 0) stored = await d.sessions.read([...forgotten]).catch(() => undefined);
    const now = d.ctx.clock.now();
    const toClose: { c: LiveConnection; why: string; decisionId?: string }[] = [];
    const revoke = new Set<string>();
    let checked = 0;
    const idleMs = d.ctx.config.sessionIdleMs;
    for (const c of conns) {
      checked++;
      // mTLS: the client certificate it was opened with has expired. New requests with it
      // are refused (cert-expired); a connection must not outlive a short-lived SVID either.
      if (c.certSerial !== undefined && c.expiresAt !== undefined && now >= c.expiresAt) {
        toClose.push({ c, why: "cert-expired" });
        continue;
      }
      // A WebSocket with no frames either way for the idle timeout: cut, as the session
      // it runs on would be refused as idle (the session is not revoked).
      if (c.lastActiveAt !== undefined && now - c.lastActiveAt >= idleMs) {
        toClose.push({ c, why: "session-idle" });
        continue;
      }
      const s = sessionsById.get(c.sessionId) ?? stored?.get(c.sessionId);
      if (s === undefined && stored !== undefined && forgotten.has(c.sessionId)) {
        // Gone from the store: its user was deleted (the rows cascade).
        toClose.push({ c, why: "session-invalid" });
        continue;
      }
      if (s && (s.revokedAt !== null || now >= s.expiresAt)) {
        toClose.push({ c, why: s.revokedAt !== null ? "session-revoked" : "session-expired" });
        continue;
      }
      const mfaAgeSeconds = s ? (now - s.mfaAt) / 1000 : c.facts.mfaAgeSeconds;
      const decision = d.decisions.decide({ ...c.facts, mfaAgeSeconds, pep: "reevaluator" });
      if (decision.result.verdict === "allow") continue;
      const why = decision.result.reason || reason;
      toClose.push({ c, why, decisionId: decision.decisionId });
      if (cause === "user" || cause === "device") revoke.add(c.sessionId);
    }
    // Through the PEP's registry, which records each cut (`session.cut`) once: a
    // connection a revocation cut while this pass awaited the store is skipped.
    let closed = 0;
    for (const { c, why, decisionId } of toClose)
      closed += d.live.cut([c], { reason: why, cause, decisionId });
    const revokedSessions = [...revoke];
    if (revokedSessions.length) await d.sessions.revoke(revokedSessions, reason);
    return { checked, closed, revokedSessions };
  }

  #enqueue(job: () => Promise<unknown>): void {
    if (this.#closed) return;
    this.#queue = this.#queue.then(job).catch((e: unknown) => {
      this.#d.ctx.audit.record({
        kind: "reevaluate.error",
        outcome: "failure",
        reason: "reevaluate-failed",
        data: { error: (e as Error)?.message ?? String(e) },
      });
    });
  }

  /** Arms the deadline timers of live connections that have none and are due soon. */
  #armDeadlines(): void {
    for (const c of this.#d.live.all()) this.#armDeadline(c);
  }

  /**
   * Arms `c`'s timer for its next deadline — the idle one (last frame +
   * `session.idle_timeout`) or the absolute expiry (the session's, or the client
   * certificate's notAfter for mTLS), whichever comes first — if it has
   * none yet and that deadline falls within the horizon (two re-check intervals, so a
   * request's live entry rarely costs a timer; a later pass arms the farther ones).
   */
  #armDeadline(c: LiveConnection): void {
    if (this.#closed || this.#deadlines.has(c)) return;
    const at = deadlineOf(c, this.#d.ctx.config.sessionIdleMs);
    if (at === undefined) return;
    const left = at - this.#d.ctx.clock.now();
    if (left >= this.#horizonMs) return;
    const timer = setTimeout(() => this.#deadlineDue(c), Math.min(MAX_TIMER_MS, Math.max(0, left)));
    timer.unref();
    this.#deadlines.set(c, timer);
  }

  #disarmDeadline(c: LiveConnection): void {
    const timer = this.#deadlines.get(c);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#deadlines.delete(c);
  }

  /**
   * `c`'s timer fired. Frames since it was armed moved the idle deadline: arm again.
   * Else `c` is re-checked as the periodic pass would (same checks, same cut through
   * the registry and so the same `session.cut` record), in order with the queued events. A connection the check
   * leaves open past its deadline (its session could not be read) is left to the
   * periodic pass.
   */
  #deadlineDue(c: LiveConnection): void {
    this.#deadlines.delete(c);
    const d = this.#d;
    if (this.#closed || !d.live.has(c)) return;
    const at = deadlineOf(c, d.ctx.config.sessionIdleMs);
    if (at !== undefined && at > d.ctx.clock.now()) return this.#armDeadline(c);
    this.#enqueue(async () => {
      if (d.live.has(c)) await this.#recheckConnections([c], "deadline", "recheck-failed");
    });
  }

  #armExpiry(): void {
    if (this.#closed) return;
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    const next = this.#d.grants.nextExpiry();
    if (next === undefined) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, next - this.#d.ctx.clock.now()));
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = undefined;
      this.#enqueue(() => this.#expireGrants());
    }, delay);
    this.#expiryTimer.unref();
  }

  async #expireGrants(): Promise<void> {
    const d = this.#d;
    const now = d.ctx.clock.now();
    const users = new Set(d.grants.dropExpired(now));
    await d.access.expireDue(now).catch(() => []);
    if (users.size)
      await this.recheck(
        (c) => c.facts.principal.type === "User" && users.has(c.facts.principal.id),
        "grant",
        "grant-expired",
      );
    this.#armExpiry();
  }
}

/** The periodic pass's period: `session.recheck_interval`, at least 50 ms. */
function recheckEveryMs(recheckMs: number): number {
  return Math.max(50, recheckMs);
}

/** When `c` is next due a cut by time: its idle deadline or its credential's expiry. */
function deadlineOf(c: LiveConnection, idleMs: number): number | undefined {
  const idleAt = c.lastActiveAt === undefined ? undefined : c.lastActiveAt + idleMs;
  if (idleAt === undefined) return c.expiresAt;
  return c.expiresAt === undefined ? idleAt : Math.min(idleAt, c.expiresAt);
}

function reasonFor(kind: string): string {
  if (kind === "user.disabled") return "user-disabled";
  if (kind === "user.deleted") return "user-deleted";
  if (kind === "mfa.reset") return "mfa-reset";
  return "user-changed";
}

/** Everything continuous verification adds to a running zt. */
export interface ContinuousVerification {
  devices: DeviceTrust;
  grants: GrantCache;
  risk: RiskSignals;
  access: AccessService;
  reevaluator: Reevaluator;
  /** Runs one periodic pass now (tests with a manual clock call this after advancing it). */
  tick(): Promise<RecheckResult>;
  close(): void;
}

/**
 * Wires device posture, grants, break-glass and risk signals into the decision point
 * (as in-memory context contributors) and starts the re-evaluator over the PEP's live
 * connections. Refuses to start on an invalid `devices:` / `access:` section.
 */
export async function startContinuousVerification(
  s: Pick<Services, "ctx" | "sessions" | "snapshot" | "decisions">,
  live: LiveConnections,
): Promise<ContinuousVerification> {
  const { ctx } = s;
  const devices = new DeviceTrust(ctx, parseDevicesConfig(ctx.config.devices), s.snapshot.entities);
  const access = new AccessService(ctx);
  const grants = new GrantCache(ctx);
  const risk = new RiskSignals(ctx, (ip) => s.decisions.networkLabel(ip));
  // Take the event position before loading: whatever is committed after the loads (a
  // revocation, say) has a later seq and is delivered once the bus starts.
  await ctx.events.mark();
  await devices.load();
  await grants.load();
  await risk.refresh();
  s.decisions.addContextContributor((f) => risk.contribute(f));
  s.decisions.addContextContributor((f) => grants.contribute(f));
  s.decisions.addContextContributor((f) => devices.contribute(f));
  const reevaluator = new Reevaluator({
    ctx,
    sessions: s.sessions,
    snapshot: s.snapshot,
    decisions: s.decisions,
    live,
    devices,
    grants,
    access,
    risk,
  });
  reevaluator.start();
  return {
    devices,
    grants,
    risk,
    access,
    reevaluator,
    tick: () => reevaluator.runTick(),
    close: () => reevaluator.close(),
  };
}
