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
  close(reason: string): void;
}

/**
 * Every live connection the PEP holds, by session, so the Policy Administrator can
 * re-decide them when trust changes and cut the ones that no longer pass.
 */
export class LiveConnections {
  readonly #bySession = new Map<string, Set<LiveConnection>>();

  add(conn: LiveConnection): () => void {
    let set = this.#bySession.get(conn.sessionId);
    if (!set) this.#bySession.set(conn.sessionId, (set = new Set()));
    set.add(conn);
    return () => {
      const cur = this.#bySession.get(conn.sessionId);
      cur?.delete(conn);
      if (cur && cur.size === 0) this.#bySession.delete(conn.sessionId);
    };
  }

  /** Closes every live connection of a session. Returns how many were closed. */
  closeSession(sessionId: string, reason: string): number {
    const set = this.#bySession.get(sessionId);
    if (!set) return 0;
    this.#bySession.delete(sessionId);
    for (const c of set) c.close(reason);
    return set.size;
  }

  /** Closes every live connection matching `which`. Returns how many were closed. */
  closeWhere(which: (c: LiveConnection) => boolean, reason: string): number {
    const hit: LiveConnection[] = [];
    for (const c of this.all()) if (which(c)) hit.push(c);
    for (const c of hit) {
      const set = this.#bySession.get(c.sessionId);
      set?.delete(c);
      if (set && set.size === 0) this.#bySession.delete(c.sessionId);
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
}
