import type { Store } from "../store/index.js";
import type { AuditRowChained } from "./audit-log.js";

export interface AuditQueryOptions {
  afterSeq?: number;
  since?: number;
  until?: number;
  limit?: number;
  decisionId?: string;
  /** Newest first when true (for tail). */
  newest?: boolean;
}

/** Reads audit records back (with their chain hashes), oldest first unless `newest`. */
export async function queryAudit(
  store: Store,
  options: AuditQueryOptions = {},
): Promise<AuditRowChained[]> {
  let q = store.db
    .selectFrom("audit_events")
    .select([
      "seq",
      "id",
      "ts",
      "kind",
      "outcome",
      "subject",
      "source_ip",
      "route",
      "action",
      "decision_id",
      "policies",
      "reason",
      "data",
      "prev_hash",
      "hash",
    ]);
  if (options.afterSeq !== undefined) q = q.where("seq", ">", options.afterSeq);
  if (options.since !== undefined) q = q.where("ts", ">=", options.since);
  if (options.until !== undefined) q = q.where("ts", "<", options.until);
  if (options.decisionId !== undefined) q = q.where("decision_id", "=", options.decisionId);
  q = q.orderBy("seq", options.newest ? "desc" : "asc").limit(options.limit ?? 100);
  const rows = await q.execute();
  return rows.map((r) => ({
    ...r,
    seq: Number(r.seq),
    ts: Number(r.ts),
    prev_hash: r.prev_hash ?? "",
    hash: r.hash ?? "",
  }));
}

/** Seq and hash of the newest event (0 and "" for an empty log). */
export async function auditHead(store: Store): Promise<{ seq: number; hash: string }> {
  const r = await store.db
    .selectFrom("audit_events")
    .select(["seq", "hash"])
    .orderBy("seq", "desc")
    .limit(1)
    .executeTakeFirst();
  return { seq: r ? Number(r.seq) : 0, hash: r?.hash ?? "" };
}
