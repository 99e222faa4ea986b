/**
 * Device trust tables: enrolled devices (public key, owner, approval state, last
 * posture) and the signed posture reports they sent.
 */
declare module "./tables.js" {
  interface Tables {
    devices: DevicesTable;
    device_reports: DeviceReportsTable;
  }
}

export interface DevicesTable {
  id: string;
  user_id: string;
  name: string;
  /** Ed25519 public key, SPKI PEM. */
  public_key: string;
  /** pending | approved | revoked */
  status: string;
  created_at: number;
  approved_at: number | null;
  approved_by: string | null;
  /** When the last verified posture report arrived (null: never). */
  last_report_at: number | null;
  /** 0/1: the last report passed every required check and the minimum score. */
  compliant: number;
  score: number;
  os: string | null;
  /** The last report's checks, JSON text. */
  checks: string;
}

export interface DeviceReportsTable {
  id: string;
  device_id: string;
  received_at: number;
  /** The signed report as sent (JSON text) and its verification outcome. */
  report: string;
  score: number;
  compliant: number;
}
