import type { AppContext } from "../app/index.js";
import type { CedarValue, EntityUid } from "../policy/index.js";

export interface RiskFacts {
  principal: EntityUid;
  sessionId?: string | undefined;
  sourceIp: string;
}

/** How recent a failed sign-in must be to count in `context.failed_attempts`. */
const FAILURE_HORIZON_MS = 3_600_000;
/** How far back sessions count as a user's known networks. */
const NETWORK_HORIZON_MS = 30 * 86_400_000;

/**
 * Risk signals for `context`: `failed_attempts` (failed sign-ins for the user in the last
 * hour, lockouts and successes notwithstanding)
 * and `new_network` (no other session of the user came from this network label).
 * Both are read from the store by `refresh()` (off the hot path: at start and on each
 * re-check tick) and served from memory.
 */
export class RiskSignals {
  readonly #ctx: AppContext;
  readonly #label: (ip: string) => string;
  #failures = new Map<string, number>();
  /** user name → network label → session ids seen from it. */
  #networks = new Map<string, Map<string, Set<string>>>();

  constructor(ctx: AppContext, networkLabel: (ip: string) => string) {
    this.#ctx = ctx;
    this.#label = networkLabel;
  }

  async refresh(): Promise<void> {
    const now = this.#ctx.clock.now();
    const fails = await this.#ctx.store.db
      .selectFrom("auth_failures")
      .select(["key", "failures", "failed_at"])
      .where("key", "like", "user:%")
      .where("updated_at", ">", now - FAILURE_HORIZON_MS)
      .execute();
    const failures = new Map<string, number>();
    for (const f of fails) {
      const n = failuresWithin(f.failed_at, Number(f.failures), now);
      if (n > 0) failures.set(f.key.slice(5), n);
    }
    const rows = await this.#ctx.store.db
      .selectFrom("sessions")
      .innerJoin("users", "users.id", "sessions.user_id")
      .select(["sessions.id as id", "sessions.source_ip as ip", "users.name as user"])
      .where("sessions.created_at", ">", now - NETWORK_HORIZON_MS)
      .execute();
    const networks = new Map<string, Map<string, Set<string>>>();
    for (const r of rows) {
      let byLabel = networks.get(r.user);
      if (!byLabel) networks.set(r.user, (byLabel = new Map()));
      const label = this.#label(r.ip);
      let ids = byLabel.get(label);
      if (!ids) byLabel.set(label, (ids = new Set()));
      ids.add(r.id);
    }
    this.#failures = failures;
    this.#networks = networks;
  }

  contribute(facts: RiskFacts): Record<string, CedarValue> | undefined {
    if (facts.principal.type !== "User") return undefined;
    const user = facts.principal.id;
    const out: Record<string, CedarValue> = {};
    const f = this.#failures.get(user);
    if (f) out["failed_attempts"] = f;
    if (facts.sessionId) {
      const ids = this.#networks.get(user)?.get(this.#label(facts.sourceIp));
      // New when no *other* session of this user came from this network.
      const known = ids !== undefined && (ids.size > 1 || !ids.has(facts.sessionId));
      // Sessions unknown to the last refresh (created since) count as known only via others.
      if (!known && this.#networks.has(user)) out["new_network"] = true;
    }
    return out;
  }
}

/**
 * Failed sign-ins in the hour before `now`, from the lockout row's `failed_at` (the
 * timestamps identity keeps through lockouts and successes). A value that is not a list
 * of timestamps counts as the row's stored `failures` (never as zero).
 */
function failuresWithin(failedAt: string, stored: number, now: number): number {
  try {
    const v: unknown = JSON.parse(failedAt);
    if (Array.isArray(v))
      return v.filter(
        (t) =>
          typeof t === "number" && t > now - FAILURE_HORIZON_MS && t <= now + FAILURE_HORIZON_MS,
      ).length;
  } catch {
    // fall through
  }
  return Number.isSafeInteger(stored) && stored > 0 ? stored : 0;
}
