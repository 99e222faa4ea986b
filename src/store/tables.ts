import type { Generated } from "kysely";

/**
 * The database schema, one interface per table. Capabilities that own more tables
 * add them with module augmentation of `Tables` in a file of their own here
 * (see `tables-*.ts`), so each capability's schema stays in one place.
 *
 * Portable types: timestamps are integer milliseconds since the epoch; booleans are
 * 0/1 integers; structured values are JSON text.
 */
export interface Tables {
  users: UsersTable;
  groups: GroupsTable;
  user_groups: UserGroupsTable;
  backup_codes: BackupCodesTable;
  auth_failures: AuthFailuresTable;
  sessions: SessionsTable;
  audit_events: AuditEventsTable;
  events: EventsTable;
  keys: KeysTable;
  meta: MetaTable;
}

export interface UsersTable {
  id: string;
  name: string;
  email: string | null;
  password_hash: string;
  totp_secret_sealed: string | null;
  /** Time step (RFC 6238 T) of the last accepted code: codes at or before it are refused. */
  totp_last_step: number;
  disabled: number;
  created_at: number;
  updated_at: number;
}

export interface GroupsTable {
  name: string;
  created_at: number;
}

export interface UserGroupsTable {
  user_id: string;
  group_name: string;
}

export interface BackupCodesTable {
  id: string;
  user_id: string;
  code_hash: string;
  used_at: number | null;
}

export interface AuthFailuresTable {
  /** `user:<name>` or `ip:<address>` */
  key: string;
  failures: number;
  window_start: number;
  /** How many lockouts in a row; each one is longer than the last. */
  lockouts: number;
  locked_until: number;
  updated_at: number;
}

export interface SessionsTable {
  id: string;
  token_hash: string;
  user_id: string;
  created_at: number;
  expires_at: number;
  last_seen_at: number;
  mfa_at: number;
  source_ip: string;
  user_agent: string;
  device_id: string | null;
  revoked_at: number | null;
  revoke_reason: string | null;
}

export interface AuditEventsTable {
  seq: Generated<number>;
  id: string;
  ts: number;
  /** e.g. `login`, `decision`, `session.revoke`, `user.add` */
  kind: string;
  /** success | failure | allow | deny | step-up | info */
  outcome: string;
  subject: string | null;
  source_ip: string | null;
  route: string | null;
  action: string | null;
  decision_id: string | null;
  policies: string | null;
  reason: string | null;
  /** Everything else, as JSON text. Never secrets. */
  data: string;
  prev_hash: string | null;
  hash: string | null;
}

export interface EventsTable {
  seq: Generated<number>;
  ts: number;
  kind: string;
  data: string;
}

export interface KeysTable {
  id: string;
  purpose: string;
  alg: string;
  public_jwk: string;
  private_sealed: string;
  created_at: number;
  not_after: number | null;
  status: string;
}

export interface MetaTable {
  key: string;
  value: string;
}
