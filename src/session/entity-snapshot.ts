import type { AppContext } from "../app/index.js";
import { EntityStore, type CedarEntity, type EntityUid } from "../policy/index.js";
import type { ZtEvent } from "../events/index.js";
import { LatestReads } from "../core/latest-reads.js";

export interface UserEntityInfo {
  id: string;
  name: string;
  email: string | null;
  groups: string[];
  disabled: boolean;
}

/**
 * The PEP's in-memory picture of the entities policies talk about: users with their
 * groups, groups, apps (routes). Loaded once, then kept current from events, so a
 * decision never waits on the store.
 */
export class EntitySnapshot {
  readonly #ctx: AppContext;
  readonly entities = new EntityStore();
  readonly #users = new Map<string, UserEntityInfo>();
  #apps = new Set<string>();
  /** Refreshes of a user in flight: only the newest applies (see LatestReads). */
  readonly #reads = new LatestReads<string>();
  #unsubscribe: (() => void) | undefined;
  #unsubscribeResync: (() => void) | undefined;
  #resyncing: Promise<void> | undefined;

  constructor(ctx: AppContext) {
    this.#ctx = ctx;
  }

  async load(): Promise<void> {
    await this.#loadAll();
    this.#unsubscribe ??= this.#ctx.events.subscribe((e) => void this.#onEvent(e));
    this.#unsubscribeResync ??= this.#ctx.events.onResync(() => this.resync());
  }

  /**
   * Re-reads every user from the store, forgetting those no longer there: the full
   * resync after events were pruned past this process's position. Concurrent calls
   * share one read. Rejects when the store cannot be read.
   */
  resync(): Promise<void> {
    this.#resyncing ??= this.#loadAll(true).finally(() => {
      this.#resyncing = undefined;
    });
    return this.#resyncing;
  }

  /**
   * The App entities: one per route, those of routes no longer configured removed (the
   * routes in force change on a config reload).
   */
  setApps(routes: readonly { name: string }[]): void {
    const names = new Set(routes.map((r) => r.name));
    for (const name of this.#apps)
      if (!names.has(name)) this.entities.remove({ type: "App", id: name });
    for (const name of names)
      if (!this.#apps.has(name))
        this.entities.upsert({ uid: { type: "App", id: name }, attrs: { name }, parents: [] });
    this.#apps = names;
  }

  async #loadAll(forgetMissing = false): Promise<void> {
    this.setApps(this.#ctx.config.routes);
    const users = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "name", "email", "disabled"])
      .execute();
    const memberships = await this.#ctx.store.db
      .selectFrom("user_groups")
      .select(["user_id", "group_name"])
      .execute();
    const groupsOf = new Map<string, string[]>();
    for (const m of memberships) {
      const list = groupsOf.get(m.user_id) ?? [];
      list.push(m.group_name);
      groupsOf.set(m.user_id, list);
    }
    for (const u of users) {
      this.#put({
        id: u.id,
        name: u.name,
        email: u.email,
        groups: groupsOf.get(u.id) ?? [],
        disabled: u.disabled === 1,
      });
    }
    if (!forgetMissing) return;
    const present = new Set(users.map((u) => u.id));
    for (const [id, old] of this.#users) {
      if (present.has(id)) continue;
      this.entities.remove({ type: "User", id: old.name });
      this.#users.delete(id);
    }
  }

  /** The user as policies see it, by internal id. */
  user(userId: string): UserEntityInfo | undefined {
    return this.#users.get(userId);
  }

  /** Re-reads one user from the store (after an event about them). */
  async refreshUser(userId: string): Promise<void> {
    const read = this.#reads.start(userId);
    try {
      await this.#refreshUser(userId, read.isLatest);
    } finally {
      read.done();
    }
  }

  async #refreshUser(userId: string, latest: () => boolean): Promise<void> {
    const u = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "name", "email", "disabled"])
      .where("id", "=", userId)
      .executeTakeFirst();
    const old = this.#users.get(userId);
    if (!latest()) return;
    if (!u) {
      if (old) this.entities.remove({ type: "User", id: old.name });
      this.#users.delete(userId);
      return;
    }
    const groups = await this.#ctx.store.db
      .selectFrom("user_groups")
      .select("group_name")
      .where("user_id", "=", userId)
      .execute();
    if (!latest()) return;
    this.#put({
      id: u.id,
      name: u.name,
      email: u.email,
      groups: groups.map((g) => g.group_name),
      disabled: u.disabled === 1,
    });
  }

  close(): void {
    this.#unsubscribe?.();
    this.#unsubscribeResync?.();
  }

  #put(u: UserEntityInfo): void {
    this.#users.set(u.id, u);
    for (const g of u.groups) {
      const uid: EntityUid = { type: "Group", id: g };
      if (!this.entities.get(uid)) this.entities.upsert({ uid, attrs: {}, parents: [] });
    }
    const entity: CedarEntity = {
      uid: { type: "User", id: u.name },
      attrs: { name: u.name, disabled: u.disabled, ...(u.email ? { email: u.email } : {}) },
      parents: u.groups.map((g) => ({ type: "Group", id: g })),
    };
    this.entities.upsert(entity);
  }

  async #onEvent(e: ZtEvent): Promise<void> {
    const userId = e.data["userId"];
    if (typeof userId !== "string") {
      if (
        e.kind === "user.groups-changed" ||
        e.kind === "user.disabled" ||
        e.kind === "user.enabled"
      ) {
        // An event without a user id: reload everyone (rare; keeps us correct).
        await this.load().catch(() => undefined);
      }
      return;
    }
    if (e.kind.startsWith("user.") || e.kind === "mfa.reset")
      await this.refreshUser(userId).catch(() => undefined);
  }
}
