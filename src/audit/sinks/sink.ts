import type { AuditRowChained } from "../audit-log.js";
import { toJsonRecord, toOcsf } from "../ocsf.js";

/** Somewhere audit events are shipped to. `deliver` resolves once the receiver has them. */
export interface Sink {
  readonly name: string;
  deliver(rows: AuditRowChained[]): Promise<void>;
  close(): Promise<void>;
}

export type SinkFormat = "jsonl" | "ocsf";

/**
 * The receiver refused the content itself (HTTP 400, 413 or 422): sending the same events
 * again gets the same answer, so retrying the batch would hold the sink until `max_lag`
 * and then drop far more than the offending events. The runner splits such a batch
 * until it finds the events refused on their own (see SinkRunner). Anything else (5xx,
 * 401/403, 408, 429, timeouts, refused connections) is transient: retried, never dropped.
 */
export class SinkRejectedError extends Error {
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.name = "SinkRejectedError";
    this.status = status;
  }
}

/** HTTP statuses by which a receiver refuses the events themselves (see SinkRejectedError). */
export const CONTENT_REJECTED_STATUSES: ReadonlySet<number> = new Set([400, 413, 422]);

/** One event as the JSON object a sink ships (zt's own schema or OCSF). */
export function formatEvent(r: AuditRowChained, format: SinkFormat): Record<string, unknown> {
  return format === "ocsf" ? toOcsf(r) : toJsonRecord(r);
}
