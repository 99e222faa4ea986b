import type { AppContext } from "../app/index.js";
import type { CedarValue, EntityUid } from "../policy/index.js";
import { toRequest, type AccessRequest } from "./access-service.js";
import { LatestReads } from "../core/latest-reads.js";
import { hostGroupOfKey } from "./access-resource.js";

export interface ActiveGrant {
  id: string;
  /** The holder's user id: a grant belongs to a user, never to a name. */
  userId: string;
  kind: "jit" | "breakglass";
  resource: string;
  expiresAt: number;
}

export interface GrantFacts {
  principal: EntityUid;
  route: string;
}

/**
 * What `context.grants` / `context.breakglass` are for one request to an App: the Apps
 * with an active JIT grant (host-group grants are for `ssh:sign`, see sshGrantContext),
 * and whether a break-glass for this App is active. Pure.
 */
export function grantContext(
  grants: readonly Pick<ActiveGrant, "kind" | "resource" | "expiresAt">[],
  route: string,
  now: number,
): { grants: string[]; breakglass: boolean } {
  return contextFor(grants, appOfKey, route, now);
}

/**
 * What `context.grants` / `context.breakglass` are for `ssh:sign` on `hostGroup`, the
 * same way as for an App: the host groups (bare names, `prod`) with an active JIT grant,
 * and whether a break-glass for this host group is active. Pure.
 *
 * @example sshGrantContext([{ kind: "jit", resource: 'HostGroup::"prod"', expiresAt: t }], "prod", now)
 *   // → { grants: ["prod"], breakglass: false } while now < t
 */
export function sshGrantContext(
  grants: readonly Pick<ActiveGrant, "kind" | "resource" | "expiresAt">[],
  hostGroup: string,
  now: number,
): { grants: string[]; breakglass: boolean } {
  return contextFor(grants, hostGroupOfKey, hostGroup, now);
}

/** An App grant's app name (its resource key); undefined for a host group's. */
function appOfKey(key: string): string | undefined {
  return hostGroupOfKey(key) === undefined ? key : undefined;
}

/**
 * The names (by `nameOf`, undefined for grants of the other kind of resource) with an
 * active JIT grant, and whether a break-glass for `target` is active.
 */
function contextFor(
  grants: readonly Pick<ActiveGrant, "kind" | "resource" | "expiresAt">[],
  nameOf: (key: string) => string | undefined,
  target: string,
  now: number,
): { grants: string[]; breakglass: boolean } {
  const names = new Set<string>();
  let breakglass = false;
  for (const g of grants) {
    const name = nameOf(g.resource);
    if (now >= g.expiresAt || name === undefined) continue;
    if (g.kind === "jit") names.add(name);
    else if (name === target) breakglass = true;
  }
  return { grants: [...names].sort(), breakglass };
}

/** The grant an approved request with an expiry is. */
export function activeGrantOf(r: AccessRequest & { expiresAt: number }): ActiveGrant {
  return { id: r.id, userId: r.userId, kind: r.kind, resource: r.resource, expiresAt: r.expiresAt };
}

/**
 * Active grants in memory, by user name, kept current from `grant.changed` events and
 * re-read from the store on every periodic tick (`reload`), so a lost event heals there.
 * Contributes `context.grants` (apps with an active approved grant) and
 * `context.breakglass` (an active break-glass grant for the requested app). Expiry is
 * checked against the clock at decision time, so a grant ends on time even before
 * the expiry timer has marked it.
 *
 * A grant is held under the *current* name of the user whose id requested it (read
 * joined with `users` by id): a grant whose user was deleted is never held, so a later
 * user given the same name cannot inherit it.
 */
export class GrantCache {
  readonly #ctx: AppContext;
  readonly #byUser = new Map<string, ActiveGrant[]>();
  /** Refreshes of a request in flight: only the newest applies (see LatestReads). */
  readonly #reads = new LatestReads<string>();

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
  }

  async load(): Promise<void> {
    await this.reload();
  }

  /**
   * Replaces the held grants with the active ones in the store (one query). Returns what
   * changed by request id: grants held but no longer active (`dropped`: ended while no
   * event reached this process) and active grants not held (`added`).
   */
  async reload(): Promise<{ dropped: string[]; added: string[] }> {
    const rows = await this.#ctx.store.db
      .selectFrom("access_requests")
      .innerJoin("users", "users.id", "access_requests.user_id")
      .selectAll("access_requests")
      .select("users.name as holder")
      .where("access_requests.status", "=", "approved")
      .where("access_requests.expires_at", ">", this.#ctx.clock.now())
      .execute();
    const before = new Set<string>();
    for (const list of this.#byUser.values()) for (const g of list) before.add(g.id);
    this.#byUser.clear();
    const added: string[] = [];
    for (const row of rows) {
      const r = toRequest(row);
      if (!before.delete(r.id)) added.push(r.id);
      this.#add(row.holder, activeGrantOf({ ...r, expiresAt: r.expiresAt! }));
    }
    return { dropped: [...before], added };
  }

  /**
   * Re-reads one request after `grant.changed`; returns its owner's user name. A read
   * overtaken by a newer refresh, or by `forget` (the grant ended meanwhile), applies
   * nothing: its row may predate the change.
   */
  async refresh(requestId: string): Promise<string | undefined> {
    const read = this.#reads.start(requestId);
    let row;
    try {
      row = await this.#ctx.store.db
        .selectFrom("access_requests")
        .leftJoin("users", "users.id", "access_requests.user_id")
        .selectAll("access_requests")
        .select("users.name as holder")
        .where("access_requests.id", "=", requestId)
        .executeTakeFirst();
      if (!read.isLatest()) return row ? (row.holder ?? toRequest(row).user) : undefined;
    } finally {
      read.done();
    }
    this.forget(requestId);
    if (!row) return undefined;
    const r = toRequest(row);
    if (
      row.holder !== null &&
      r.status === "approved" &&
      r.expiresAt !== null &&
      r.expiresAt > this.#ctx.clock.now()
    )
      this.#add(row.holder, activeGrantOf({ ...r, expiresAt: r.expiresAt }));
    return row.holder ?? r.user;
  }

  /** Drops every grant of a user id at once (the user was deleted); returns the name they were held under. */
  forgetUser(userId: string): string | undefined {
    let name: string | undefined;
    for (const [user, list] of this.#byUser) {
      const kept = list.filter((g) => g.userId !== userId);
      if (kept.length === list.length) continue;
      name = user;
      if (kept.length === 0) this.#byUser.delete(user);
      else this.#byUser.set(user, kept);
    }
    return name;
  }

  /** Drops one grant from memory at once (an event said it ended); returns its owner. */
  forget(requestId: string): string | undefined {
    this.#reads.supersede(requestId);
    for (const [user, list] of this.#byUser) {
      const kept = list.filter((g) => g.id !== requestId);
      if (kept.length === list.length) continue;
      if (kept.length === 0) this.#byUser.delete(user);
      else this.#byUser.set(user, kept);
      return user;
    }
    return undefined;
  }

  /** The earliest expiry among held grants (for the expiry timer). */
  nextExpiry(): number | undefined {
    let min: number | undefined;
    for (const list of this.#byUser.values())
      for (const g of list) if (min === undefined || g.expiresAt < min) min = g.expiresAt;
    return min;
  }

  /** Drops grants expired at `now`; returns the user names that lost one. */
  dropExpired(now: number): string[] {
    const users: string[] = [];
    for (const [user, list] of this.#byUser) {
      const kept = list.filter((g) => g.expiresAt > now);
      if (kept.length !== list.length) {
        users.push(user);
        if (kept.length === 0) this.#byUser.delete(user);
        else this.#byUser.set(user, kept);
      }
    }
    return users;
  }

  /** Whether a user holds an active break-glass grant for an app (for the banner). */
  breakglassActive(user: string, route: string): boolean {
    return grantContext(this.#byUser.get(user) ?? [], route, this.#ctx.clock.now()).breakglass;
  }

  contribute(facts: GrantFacts): Record<string, CedarValue> | undefined {
    if (facts.principal.type !== "User") return undefined;
    const list = this.#byUser.get(facts.principal.id);
    if (!list) return undefined;
    return grantContext(list, facts.route, this.#ctx.clock.now());
  }

  #add(user: string, g: ActiveGrant): void {
    const list = this.#byUser.get(user) ?? [];
    list.push(g);
    this.#byUser.set(user, list);
  }
}
