/**
 * Just-in-time access: requests, their approvals, and the time-boxed grants they
 * become (an approved row with `expires_at`); break-glass grants live here too.
 */
declare module "./tables.js" {
  interface Tables {
    access_requests: AccessRequestsTable;
  }
}

export interface AccessRequestsTable {
  id: string;
  /** jit | breakglass */
  kind: string;
  user_id: string;
  user_name: string;
  /** The App name the grant is for. */
  resource: string;
  reason: string;
  ttl_ms: number;
  /** pending | approved | denied | revoked | expired */
  status: string;
  required_approvals: number;
  /** JSON array of { by: user name, at: ms }. */
  approvals: string;
  created_at: number;
  decided_at: number | null;
  decided_by: string | null;
  /** Grant window (set when approved). */
  starts_at: number | null;
  expires_at: number | null;
}
