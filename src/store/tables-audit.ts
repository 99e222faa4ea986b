/** Tables owned by the audit capability (src/audit). */

export interface AuditCheckpointsTable {
  /** Tree size: the seq of the last event the checkpoint covers. */
  size: number;
  ts: number;
  origin: string;
  /** Hex hash of event `size`. */
  head_hash: string;
  key_id: string;
  /** The signed note, as pushed to witnesses. */
  note: string;
}

export interface AuditCursorsTable {
  /** Sink or consumer name, e.g. `sink:loki`, `alerts`. */
  name: string;
  /** Last seq delivered. */
  seq: number;
  /** Events skipped because the consumer fell too far behind. */
  dropped: number;
  updated_at: number;
}

export interface AuditBansTable {
  /** `ip:<address>` or `user:<name>` */
  key: string;
  kind: string;
  value: string;
  rule: string;
  reason: string;
  created_at: number;
  until: number;
  /** How many times this key has been banned (bantime grows with it). */
  count: number;
  lifted_at: number | null;
}

export interface AuditAlertsTable {
  id: string;
  ts: number;
  rule: string;
  severity: string;
  key: string;
  message: string;
  /** Audit seq of the event that fired it. */
  seq: number;
  data: string;
}

declare module "./tables.js" {
  interface Tables {
    audit_checkpoints: AuditCheckpointsTable;
    audit_cursors: AuditCursorsTable;
    audit_bans: AuditBansTable;
    audit_alerts: AuditAlertsTable;
  }
}
