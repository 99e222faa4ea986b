import type { AuditRowChained } from "../audit-log.js";
import { toJsonRecord, toOcsf } from "../ocsf.js";

/** Somewhere audit events are shipped to. `deliver` resolves once the receiver has them. */
export interface Sink {
  readonly name: string;
  deliver(rows: AuditRowChained[]): Promise<void>;
  close(): Promise<void>;
}

export type SinkFormat = "jsonl" | "ocsf";

/** One event as the JSON object a sink ships (zt's own schema or OCSF). */
export function formatEvent(r: AuditRowChained, format: SinkFormat): Record<string, unknown> {
  return format === "ocsf" ? toOcsf(r) : toJsonRecord(r);
}
