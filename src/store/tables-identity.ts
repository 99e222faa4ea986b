/** Identity's additions to foundation tables (migration 0007-identity). */
declare module "./tables.js" {
  interface AuthFailuresTable {
    /** JSON array of the ms timestamps of failures (and attempts in flight) still inside the window. */
    recent_failures: string;
  }
}

export {};
