import type { Store } from "../store/index.js";
import type { AuditRowOut } from "./audit-log.js";

export interface AuditQueryOptions {
  afterSeq?: number;
  since?: number;
  limit?: number;
  decisionId?: string;
  /** Newest first when true (for tail). */
  newest?: boolean;
}

/** Reads audit records back, oldest first unless `newest`. */
export async function queryAudit(store: Store, options: AuditQueryOptions = {}): Promise<AuditRowOut[]> {
  let q = store.db.selectFrom("audit_events").select([
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
  ]);
  if (options.afterSeq !== undefined) q = q.where("seq", ">", options.afterSeq);
  if (options.since !== undefined) q = q.where("ts", ">=", options.since);
  if (options.decisionId !== undefined) q = q.where("decision_id", "=", options.decisionId);
  q = q.orderBy("seq", options.newest ? "desc" : "asc").limit(options.limit ?? 100);
  const rows = await q.execute();
  return rows.map((r) => ({ ...r, seq: Number(r.seq), ts: Number(r.ts) }));
}
