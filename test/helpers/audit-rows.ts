import type { Selectable } from "kysely";
import type { AppContext } from "../../src/app/index.js";
import type { AuditEventsTable } from "../../src/store/index.js";

export type AuditRow = Selectable<AuditEventsTable>;

export interface AuditRowsOptions {
  /** Only the records with this reason. */
  reason?: string;
  /** Only the records with this outcome (`success`, `failure`, `allow`, `deny` …). */
  outcome?: string;
}

/**
 * The audit records of one kind, oldest first, with the columns asked for: the audit log
 * is flushed first, so that every record written so far is in the store.
 *
 * @example
 * expect(await auditRows(zt.ctx, "session.cut", ["subject", "reason"])).toEqual([…]);
 */
export async function auditRows<C extends keyof AuditRow>(
  ctx: Pick<AppContext, "audit" | "store">,
  kind: string,
  columns: readonly C[],
  options: AuditRowsOptions = {},
): Promise<Pick<AuditRow, C>[]> {
  await ctx.audit.flush();
  let q = ctx.store.db.selectFrom("audit_events").selectAll().where("kind", "=", kind);
  if (options.reason !== undefined) q = q.where("reason", "=", options.reason);
  if (options.outcome !== undefined) q = q.where("outcome", "=", options.outcome);
  const rows = await q.orderBy("seq").execute();
  return rows.map(
    (row) => Object.fromEntries(columns.map((c) => [c, row[c]])) as Pick<AuditRow, C>,
  );
}

/** A record's columns, with `data` parsed from its JSON. */
export type AuditRecord<C extends keyof AuditRow> = Omit<Pick<AuditRow, C>, "data"> & {
  data: Record<string, unknown>;
};

/**
 * auditRows with the `data` column included and parsed: for assertions on what a record
 * says (a `session.cut`'s cause, connection and revocation links).
 */
export async function auditRecords<C extends keyof AuditRow>(
  ctx: Pick<AppContext, "audit" | "store">,
  kind: string,
  columns: readonly C[],
  options: AuditRowsOptions = {},
): Promise<AuditRecord<C>[]> {
  const rows = await auditRows(ctx, kind, [...columns, "data"], options);
  return rows.map((r) => ({
    ...r,
    data: JSON.parse(String(r.data)) as Record<string, unknown>,
  })) as AuditRecord<C>[];
}
