import type { Kysely } from "kysely";
import { withStoreLock, type Store, type Tables } from "../store/index.js";

/**
 * PostgreSQL advisory lock key (transaction-scoped) that serialises changes to the set
 * of active intermediates. Arbitrary but fixed: "zt-pkica" as a 63-bit integer.
 */
export const PKI_CA_LOCK_KEY = 0x7a742d706b696361n;

/** Runs `body` holding the CA lock (see `withStoreLock` for how it holds on each store). */
export function withCaLock<T>(store: Store, body: (db: Kysely<Tables>) => Promise<T>): Promise<T> {
  return withStoreLock(store, PKI_CA_LOCK_KEY, body);
}
