/** What the denial page may show about one decision: never policy text. */
export interface DenialSummary {
  decisionId: string;
  reason: string;
  route: string;
  verdict: "deny" | "step-up";
}

/**
 * The last N denials this PEP made, by decision id, so a front proxy can show zt's
 * explained 403 page (`/.zt/denied?decision=…`) for a forward-auth denial. Bounded:
 * the oldest entries are dropped first (a Map keeps insertion order).
 */
export class RecentDenials {
  readonly #max: number;
  readonly #byId = new Map<string, DenialSummary>();

  constructor(max = 10_000) {
    this.#max = max;
  }

  add(d: DenialSummary): void {
    if (this.#byId.size >= this.#max) {
      const oldest = this.#byId.keys().next();
      if (!oldest.done) this.#byId.delete(oldest.value);
    }
    this.#byId.set(d.decisionId, d);
  }

  get(decisionId: string): DenialSummary | undefined {
    return this.#byId.get(decisionId);
  }

  get size(): number {
    return this.#byId.size;
  }
}
