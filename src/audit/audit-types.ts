/**
 * One audit record. Designed for the tamper-evident log: every record gets a sequence
 * number and the hash of the previous record when written. Secrets (passwords, TOTP
 * codes, tokens, cookies) never enter a record.
 */
export interface AuditInput {
  /** e.g. `login`, `decision`, `session.create`, `session.revoke`, `user.add`, `svid.issue` */
  kind: string;
  /** success | failure | allow | deny | step-up | info */
  outcome: "success" | "failure" | "allow" | "deny" | "step-up" | "info";
  subject?: string | undefined;
  sourceIp?: string | undefined;
  route?: string | undefined;
  action?: string | undefined;
  decisionId?: string | undefined;
  /** Determining policy ids. */
  policies?: string[] | undefined;
  /** Stable kebab-case reason. */
  reason?: string | undefined;
  data?: Record<string, unknown> | undefined;
}

export interface AuditRecord extends Required<Omit<AuditInput, "data">> {
  seq: number;
  id: string;
  ts: number;
  data: Record<string, unknown>;
  prevHash: string | null;
  hash: string | null;
}

/** Where audit records go. `record` never blocks the caller; `flush` makes them durable. */
export interface AuditSink {
  record(input: AuditInput): string;
  flush(): Promise<void>;
  close(): Promise<void>;
}
