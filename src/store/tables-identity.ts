/** Identity's additions to foundation tables (migrations 0007-identity, 0008-failed-attempts). */
declare module "./tables.js" {
  interface AuthFailuresTable {
    /** JSON array of the ms timestamps of failures (and attempts in flight) still inside the window. */
    recent_failures: string;
    /** JSON array of the ms timestamps of settled failures in the last hour (migration 0008). */
    failed_at: string;
  }
}

export {};
