import type { Store } from "../../store/index.js";
import type { EventBus } from "../../events/index.js";
import { countBannedRequest, setBansActive } from "../metrics.js";

/**
 * The in-memory view of active bans the PEP consults before any other work:
 * `isBanned(ip, now)` is one Map lookup. It is refreshed from the bans table on every
 * `ban.changed` event (from this process or any other, through the event bus).
 */
const bannedIps = new Map<string, number>();
const bannedUsers = new Map<string, number>();

/** True when `sourceIp` is banned at `nowMs`. O(1); counts the refusal in metrics. */
export function isBanned(sourceIp: string, nowMs: number): boolean {
  const until = bannedIps.get(sourceIp);
  if (until === undefined || until <= nowMs) return false;
  countBannedRequest();
  return true;
}

/** True when the user is banned at `nowMs` (for the login path). O(1). */
export function isUserBanned(user: string, nowMs: number): boolean {
  const until = bannedUsers.get(user);
  return until !== undefined && until > nowMs;
}

/** Replaces the cache with the active bans in the store. */
export async function refreshBans(store: Store, nowMs: number): Promise<void> {
  const rows = await store.db
    .selectFrom("audit_bans")
    .select(["kind", "value", "until"])
    .where("lifted_at", "is", null)
    .where("until", ">", nowMs)
    .execute();
  bannedIps.clear();
  bannedUsers.clear();
  for (const r of rows) (r.kind === "ip" ? bannedIps : bannedUsers).set(r.value, Number(r.until));
  setBansActive(rows.length);
}

/** Loads the bans and keeps them fresh from `ban.changed` events. Returns a stop function. */
export async function startBanCache(
  store: Store,
  events: EventBus,
  now: () => number,
): Promise<() => void> {
  // Listening first, then reading the table: a ban that commits while the table is read
  // still arrives as an event (read the other way round, it could fall between the two).
  const unsubscribe = events.subscribe((e) => {
    if (e.kind !== "ban.changed") return;
    // Apply what the event says at once, then re-read the table as the source of truth.
    const key = e.data["key"];
    if (typeof key === "string") {
      const [kind, ...rest] = key.split(":");
      const map = kind === "ip" ? bannedIps : kind === "user" ? bannedUsers : undefined;
      const until = e.data["until"];
      if (map && e.data["action"] === "remove") map.delete(rest.join(":"));
      else if (map && e.data["action"] === "add" && typeof until === "number")
        map.set(rest.join(":"), until);
    }
    void refreshBans(store, now()).catch(() => undefined);
  });
  try {
    await refreshBans(store, now());
  } catch (e) {
    unsubscribe();
    throw e;
  }
  return unsubscribe;
}

/** For tests: sets the cache directly. */
export function setBansForTest(
  ips: Record<string, number>,
  users: Record<string, number> = {},
): void {
  bannedIps.clear();
  bannedUsers.clear();
  for (const [k, v] of Object.entries(ips)) bannedIps.set(k, v);
  for (const [k, v] of Object.entries(users)) bannedUsers.set(k, v);
}
