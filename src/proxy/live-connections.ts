import type { AuditSink } from "../audit/index.js";
import type { RevocationOrigin } from "../session/index.js";
import type { DecisionFacts } from "./decision-point.js";

/** One long-lived exchange (WebSocket, streaming response) and what it was allowed on. */
export interface LiveConnection {
  /** The session id, or `svc:<spiffeId>` for a service authenticated by mTLS. */
  sessionId: string;
  /** Serial (hex) of the client SVID the connection was authenticated with (mTLS). */
  certSerial?: string;
  facts: DecisionFacts;
  /**
   * Clock time of the last frame either way (WebSocket on a session): the re-evaluator
   * cuts the connection once it is older than `session.idle_timeout`. Undefined: no
   * idle cut (streaming responses, mTLS services).
   */
  lastActiveAt?: number;
  /**
   * Clock time the credential it runs on expires: the session's expiry (`session.ttl`
   * after sign-in), or the client certificate's notAfter (mTLS). The re-evaluator cuts
   * the connection then (`session-expired`, `cert-expired`).
   */
  expiresAt?: number;
  /**
   * Id of the allow decision that opened it (its `decision` record, and the
   * `X-Zt-Decision-Id` the upstream got): names the connection in its `session.cut` record.
   */
  decisionId?: string;
  close(reason: string): void;
}

/** Why a live connection is cut: what its `session.cut` record says. */
export interface LiveCut {
  /**
   * Stable kebab-case reason, the one a new request on the same credential would be
   * refused with: `session-revoked`, `cert-revoked`, `session-idle`, a policy's …
   */
  reason: string;
  /**
   * What triggered the cut: `session-revoked`, `svid-revoked`, `config-reload`, or the
   * re-evaluator's cause (`user`, `device`, `grant`, `policy`, `cert`, `ban`, `periodic`,
   * `deadline`).
   */
  cause: string;
  /** The re-evaluator's decision that refused the connection, when one did. */
  decisionId?: string | undefined;
  /** Links to what triggered it (`revoke_id`, `revoke_reason`, `event_seq`), as data. */
  link?: Record<string, string | number> | undefined;
}

/** Told of connections as they are registered, cut and removed (the re-evaluator's deadlines). */
export interface LiveConnectionWatcher {
  added(conn: LiveConnection): void;
  /** `conn` was cut (before `removed` is called for it). */
  cut?(conn: LiveConnection, why: LiveCut): void;
  removed(conn: LiveConnection): void;
}

/**
 * Writes the one `session.cut` audit record of a cut: who (subject, peer address), where
 * (route), which connection (the decision that opened it; the SVID serial for mTLS),
 * why (reason) and what triggered it (cause, and the revocation or decision it links to).
 */
export function auditCut(audit: AuditSink): (conn: LiveConnection, why: LiveCut) => void {
  return (c, why) => {
    audit.record({
      kind: "session.cut",
      outcome: "deny",
      subject: c.facts.subject,
      sourceIp: c.facts.sourceIp,
      route: c.facts.route,
      decisionId: why.decisionId,
      reason: why.reason,
      data: {
        session_id: c.sessionId,
        cause: why.cause,
        ...(c.decisionId !== undefined ? { connection_id: c.decisionId } : {}),
        ...(c.certSerial !== undefined ? { cert_serial: c.certSerial } : {}),
        ...why.link,
      },
    });
  };
}

/** A revocation's origin as a cut's link data: `revoke_id`, `event_seq`. */
export function revocationLink(
  origin: RevocationOrigin | undefined,
): Record<string, string | number> {
  return {
    ...(origin?.revokeId !== undefined ? { revoke_id: origin.revokeId } : {}),
    ...(origin?.eventSeq !== undefined ? { event_seq: origin.eventSeq } : {}),
  };
}

/**
 * Every live connection the PEP holds, by session, so the Policy Administrator can
 * re-decide them when trust changes and cut the ones that no longer pass. Every cut goes
 * through `cut` (`cutSession`, `cutWhere`): it takes the connection out of the registry
 * and hands it to the recorder given here (`auditCut`: one `session.cut` record), so a
 * connection cut by several paths at once (a revocation heard locally and from the store,
 * a re-check racing it) is recorded once, by whichever got there first.
 */
export class LiveConnections {
  readonly #bySession = new Map<string, Set<LiveConnection>>();
  readonly #watchers = new Set<LiveConnectionWatcher>();
  readonly #record: (conn: LiveConnection, why: LiveCut) => void;

  constructor(record: (conn: LiveConnection, why: LiveCut) => void) {
    this.#record = record;
  }

  /** Registers a connection; the function returned removes it (call it once it closed). */
  add(conn: LiveConnection): () => void {
    let set = this.#bySession.get(conn.sessionId);
    if (!set) this.#bySession.set(conn.sessionId, (set = new Set()));
    set.add(conn);
    for (const w of this.#watchers) w.added(conn);
    return () => {
      const cur = this.#bySession.get(conn.sessionId);
      if (!cur?.delete(conn)) return;
      if (cur.size === 0) this.#bySession.delete(conn.sessionId);
      this.#removed(conn);
    };
  }

  /** Whether `conn` is still registered (not removed, closed or cut). */
  has(conn: LiveConnection): boolean {
    return this.#bySession.get(conn.sessionId)?.has(conn) ?? false;
  }

  /**
   * Tells `watcher` about every connection added, cut and removed from now on (each
   * removal once, however it happens). Returns the function that stops it.
   */
  watch(watcher: LiveConnectionWatcher): () => void {
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  /**
   * Cuts each of `conns` still registered: out of the registry, closed, recorded (once:
   * one already cut or closed is skipped). Returns how many were cut.
   */
  cut(conns: Iterable<LiveConnection>, why: LiveCut): number {
    let n = 0;
    for (const c of conns) {
      const set = this.#bySession.get(c.sessionId);
      if (!set?.delete(c)) continue;
      if (set.size === 0) this.#bySession.delete(c.sessionId);
      n++;
      c.close(why.reason);
      try {
        this.#record(c, why);
      } catch {
        /* the audit log never blocks a cut */
      }
      for (const w of this.#watchers) w.cut?.(c, why);
      this.#removed(c);
    }
    return n;
  }

  /** Cuts every live connection of a session. Returns how many were cut. */
  cutSession(sessionId: string, why: LiveCut): number {
    const set = this.#bySession.get(sessionId);
    return set ? this.cut([...set], why) : 0;
  }

  /** Cuts every live connection matching `which`. Returns how many were cut. */
  cutWhere(which: (c: LiveConnection) => boolean, why: LiveCut): number {
    const hit: LiveConnection[] = [];
    for (const c of this.all()) if (which(c)) hit.push(c);
    return this.cut(hit, why);
  }

  count(sessionId?: string): number {
    if (sessionId !== undefined) return this.#bySession.get(sessionId)?.size ?? 0;
    let n = 0;
    for (const s of this.#bySession.values()) n += s.size;
    return n;
  }

  sessions(): string[] {
    return [...this.#bySession.keys()];
  }

  *all(): Iterable<LiveConnection> {
    for (const s of this.#bySession.values()) yield* s;
  }

  /**
   * Closes every live connection, unrecorded: the process is stopping (not a cut; no
   * trust changed).
   */
  closeAll(reason: string): void {
    const all = [...this.all()];
    this.#bySession.clear();
    for (const c of all) {
      this.#removed(c);
      c.close(reason);
    }
  }

  #removed(conn: LiveConnection): void {
    for (const w of this.#watchers) w.removed(conn);
  }
}
