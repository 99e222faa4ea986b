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
  close(reason: string): void;
}

/** Told of connections as they are registered and removed (the re-evaluator's deadlines). */
export interface LiveConnectionWatcher {
  added(conn: LiveConnection): void;
  removed(conn: LiveConnection): void;
}

/**
 * Every live connection the PEP holds, by session, so the Policy Administrator can
 * re-decide them when trust changes and cut the ones that no longer pass.
 */
export class LiveConnections {
  readonly #bySession = new Map<string, Set<LiveConnection>>();
  readonly #watchers = new Set<LiveConnectionWatcher>();

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
   * Tells `watcher` about every connection added and every one removed from now on
   * (each removal once, however it happens). Returns the function that stops it.
   */
  watch(watcher: LiveConnectionWatcher): () => void {
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  /** Closes every live connection of a session. Returns how many were closed. */
  closeSession(sessionId: string, reason: string): number {
    const set = this.#bySession.get(sessionId);
    if (!set) return 0;
    this.#bySession.delete(sessionId);
    for (const c of set) {
      this.#removed(c);
      c.close(reason);
    }
    return set.size;
  }

  /** Closes every live connection matching `which`. Returns how many were closed. */
  closeWhere(which: (c: LiveConnection) => boolean, reason: string): number {
    const hit: LiveConnection[] = [];
    for (const c of this.all()) if (which(c)) hit.push(c);
    for (const c of hit) {
      const set = this.#bySession.get(c.sessionId);
      if (set?.delete(c)) {
        if (set.size === 0) this.#bySession.delete(c.sessionId);
        this.#removed(c);
      }
      c.close(reason);
    }
    return hit.length;
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

  closeAll(reason: string): void {
    for (const id of [...this.#bySession.keys()]) this.closeSession(id, reason);
  }

  #removed(conn: LiveConnection): void {
    for (const w of this.#watchers) w.removed(conn);
  }
}
