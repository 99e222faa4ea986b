import type { Store } from "../../store/index.js";
import type { EventBus } from "../../events/index.js";
import { countBannedRequest, setBansActive } from "../metrics.js";
import { LatestReads } from "../../core/latest-reads.js";
import { networkHolds, parseIp, parseNetwork, type IpNetwork } from "../../core/ip-address.js";

/**
 * The in-memory view of active bans the PEP consults before any other work:
 * `isBanned(ip, now)` is one Map lookup. It is refreshed from the bans table on every
 * `ban.changed` event (from this process or any other, through the event bus).
 */
const bannedIps = new Map<string, number>();
/** Banned user names: until when, and whether an operator banned them (`zt ban add user:…`). */
const bannedUsers = new Map<string, { until: number; byOperator: boolean }>();

/** Banned networks (`2001:db8:1:2::/64`, the keys of bannedIps with a `/`). */
let bannedNets: { net: IpNetwork; until: number }[] = [];
/** Per address, the latest `until` of the banned networks holding it (0: none). */
const netBanMemo = new Map<string, number>();

function setIpBan(value: string, until: number): void {
  bannedIps.set(value, until);
  if (value.includes("/")) indexNetworkBans();
}

function deleteIpBan(value: string): void {
  if (bannedIps.delete(value) && value.includes("/")) indexNetworkBans();
}

function indexNetworkBans(): void {
  bannedNets = [];
  for (const [value, until] of bannedIps) {
    const net = value.includes("/") ? parseNetwork(value) : undefined;
    if (net) bannedNets.push({ net, until });
  }
  netBanMemo.clear();
}

/** The latest `until` of the banned networks holding `ip` (0 when none does). */
function networkBanUntil(ip: string): number {
  let until = netBanMemo.get(ip);
  if (until !== undefined) return until;
  until = 0;
  const p = parseIp(ip);
  if (p)
    for (const b of bannedNets)
      if (networkHolds(b.net, p.family, p.value)) until = Math.max(until, b.until);
  if (netBanMemo.size >= 10_000) netBanMemo.clear();
  netBanMemo.set(ip, until);
  return until;
}

/**
 * True when `sourceIp` is banned at `nowMs`, by its address or a banned network holding
 * it. One Map lookup (a second, remembered per address, while networks are banned);
 * counts the refusal in metrics.
 */
export function isBanned(sourceIp: string, nowMs: number): boolean {
  let until = bannedIps.get(sourceIp);
  if ((until === undefined || until <= nowMs) && bannedNets.length > 0)
    until = networkBanUntil(sourceIp);
  if (until === undefined || until <= nowMs) return false;
  countBannedRequest();
  return true;
}

/**
 * True when the user is banned at `nowMs`. O(1). Every user ban refuses the user's
 * sign-ins; with `byOperator`, only a ban an operator placed counts (the PEP refuses
 * those users' requests too, while a jail's ban — which anyone typing the name can
 * trigger — must not cut a working user's sessions).
 */
export function isUserBanned(
  user: string,
  nowMs: number,
  options: { byOperator?: boolean } = {},
): boolean {
  const ban = bannedUsers.get(user);
  if (ban === undefined || ban.until <= nowMs) return false;
  return options.byOperator ? ban.byOperator : true;
}

/** Table reads in flight: one that returns after a newer one started applies nothing. */
const reads = new LatestReads<"bans">();

/** Replaces the cache with the active bans in the store. */
export async function refreshBans(store: Store, nowMs: number): Promise<void> {
  const read = reads.start("bans");
  let rows;
  try {
    rows = await store.db
      .selectFrom("audit_bans")
      .select(["kind", "value", "until", "rule"])
      .where("lifted_at", "is", null)
      .where("until", ">", nowMs)
      .execute();
    // Bans close together: an older read finishing last would drop the newest ban.
    if (!read.isLatest()) return;
  } finally {
    read.done();
  }
  bannedIps.clear();
  bannedUsers.clear();
  for (const r of rows) {
    if (r.kind === "ip") bannedIps.set(r.value, Number(r.until));
    else bannedUsers.set(r.value, { until: Number(r.until), byOperator: r.rule === "manual" });
  }
  indexNetworkBans();
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
      const value = rest.join(":");
      const until = e.data["until"];
      const add = e.data["action"] === "add" ? until : undefined;
      if (kind === "ip") {
        if (e.data["action"] === "remove") deleteIpBan(value);
        else if (typeof add === "number") setIpBan(value, add);
      } else if (kind === "user") {
        if (e.data["action"] === "remove") bannedUsers.delete(value);
        else if (typeof add === "number")
          bannedUsers.set(value, { until: add, byOperator: e.data["rule"] === "manual" });
      }
    }
    void refreshBans(store, now()).catch(() => undefined);
  });
  // Events pruned past this process's position: a `ban.changed` may be lost; re-read.
  const unsubscribeResync = events.onResync(() => refreshBans(store, now()));
  try {
    await refreshBans(store, now());
  } catch (e) {
    unsubscribe();
    unsubscribeResync();
    throw e;
  }
  return () => {
    unsubscribe();
    unsubscribeResync();
  };
}

/** For tests: sets the cache directly. */
export function setBansForTest(
  ips: Record<string, number>,
  users: Record<string, { until: number; byOperator: boolean }> = {},
): void {
  bannedIps.clear();
  bannedUsers.clear();
  for (const [k, v] of Object.entries(ips)) bannedIps.set(k, v);
  for (const [k, v] of Object.entries(users)) bannedUsers.set(k, v);
  indexNetworkBans();
}
