import type { Store } from "../../store/index.js";
import type { Clock } from "../../core/clock.js";
import type { EventBus } from "../../events/index.js";
import type { AuditSink } from "../audit-types.js";
import { ZtError } from "../../core/errors.js";
import { canonicalIp } from "./alert-engine.js";
import { formatIp, formatNetwork, parseNetwork } from "../../core/ip-address.js";

export interface BanRow {
  key: string;
  kind: string;
  value: string;
  rule: string;
  reason: string;
  created_at: number;
  until: number;
  count: number;
  lifted_at: number | null;
}

/**
 * `192.0.2.1`, `ip:192.0.2.1`, a network (`ip:2001:db8:1:2::/64`, `198.51.100.0/24`) or
 * `user:alice` → the ban key. The address is written as the PEP sees it
 * (`::ffff:192.0.2.1` is `192.0.2.1`, `2001:DB8::7` is `2001:db8::7`), or the ban would
 * never match a request; a network is written canonically, must have no host bits set,
 * and is at least a /8 (IPv4) or /32 (IPv6): a wider ban locks out whole regions, and
 * with them, easily, the operator.
 */
export function banKey(target: string): string {
  if (target.startsWith("user:") && target.length > 5) return target;
  const text = target.startsWith("ip:") ? target.slice(3) : target;
  if (text.includes("/")) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)\/(\d{1,3})$/i.exec(text);
    const net = parseNetwork(
      mapped && Number(mapped[2]) >= 96 ? `${mapped[1]}/${Number(mapped[2]) - 96}` : text,
    );
    if (net === undefined || net.prefix < (net.family === 4 ? 8 : 32)) {
      throw new ZtError(
        "ZT_BAD_REQUEST",
        `expected a network with no host bits set, /8 to /32 for IPv4 or /32 to /128 for IPv6 (e.g. 198.51.100.0/24, 2001:db8:1:2::/64), got ${JSON.stringify(target)}`,
      );
    }
    // A full-length prefix is the address itself: one key for one thing.
    return `ip:${net.prefix === (net.family === 4 ? 32 : 128) ? formatIp(net.family, net.base) : formatNetwork(net)}`;
  }
  const ip = canonicalIp(text);
  if (ip === undefined) {
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `expected an IP address, ip:<address or network> or user:<name>, got ${JSON.stringify(target)}`,
    );
  }
  return `ip:${ip}`;
}

export async function listBans(store: Store, nowMs: number, all = false): Promise<BanRow[]> {
  let q = store.db.selectFrom("audit_bans").selectAll().orderBy("created_at", "desc");
  if (!all) q = q.where("lifted_at", "is", null).where("until", ">", nowMs);
  const rows = await q.execute();
  return rows.map((r) => ({
    ...r,
    created_at: Number(r.created_at),
    until: Number(r.until),
    count: Number(r.count),
    lifted_at: r.lifted_at === null ? null : Number(r.lifted_at),
  }));
}

export interface BanAdminDeps {
  store: Store;
  clock: Clock;
  events: EventBus;
  audit: AuditSink;
}

/** Lifts a ban now; audited, and every PEP hears it through `ban.changed`. */
export async function removeBan(deps: BanAdminDeps, target: string, actor: string): Promise<void> {
  const key = banKey(target);
  const now = deps.clock.now();
  const res = await deps.store.db
    .updateTable("audit_bans")
    .set({ lifted_at: now })
    .where("key", "=", key)
    .where("lifted_at", "is", null)
    .where("until", ">", now)
    .executeTakeFirst();
  if (Number(res.numUpdatedRows) === 0)
    throw new ZtError("ZT_NOT_FOUND", `no active ban for ${key}`, { key });
  deps.audit.record({
    kind: "ban.remove",
    outcome: "info",
    subject: actor,
    reason: "manual",
    data: { key },
  });
  await deps.events.publish("ban.changed", { action: "remove", key });
}

/**
 * The longest reason a hand-made ban takes, in characters: as long as an access request's
 * reason (MAX_REASON_LENGTH), room for a ticket reference and a sentence or two. The reason
 * goes into the store, the audit record and every `zt ban list`: a megabyte pasted by
 * mistake would sit in all three.
 */
export const MAX_BAN_REASON_LENGTH = 500;

/** Bans a source or user by hand for `durationMs`; a reason past MAX_BAN_REASON_LENGTH is refused. */
export async function addBan(
  deps: BanAdminDeps,
  target: string,
  durationMs: number,
  reason: string,
  actor: string,
): Promise<BanRow> {
  const key = banKey(target);
  const length = [...reason].length;
  if (length > MAX_BAN_REASON_LENGTH)
    throw new ZtError(
      "ZT_BAD_REQUEST",
      `reason: at most ${MAX_BAN_REASON_LENGTH} characters, got ${length}`,
      { length, max: MAX_BAN_REASON_LENGTH },
    );
  const now = deps.clock.now();
  const [kind, ...rest] = key.split(":");
  const value = rest.join(":");
  const prev = await deps.store.db
    .selectFrom("audit_bans")
    .select("count")
    .where("key", "=", key)
    .executeTakeFirst();
  const row: BanRow = {
    key,
    kind: kind!,
    value,
    rule: "manual",
    reason,
    created_at: now,
    until: now + durationMs,
    count: Number(prev?.count ?? 0) + 1,
    lifted_at: null,
  };
  await deps.store.db
    .insertInto("audit_bans")
    .values(row)
    .onConflict((oc) =>
      oc.column("key").doUpdateSet({
        rule: row.rule,
        reason,
        created_at: now,
        until: row.until,
        count: row.count,
        lifted_at: null,
      }),
    )
    .execute();
  deps.audit.record({
    kind: "ban.add",
    outcome: "info",
    subject: actor,
    reason: "manual",
    data: { key, until: row.until, why: reason },
  });
  await deps.events.publish("ban.changed", {
    action: "add",
    key,
    until: row.until,
    rule: "manual",
  });
  return row;
}
