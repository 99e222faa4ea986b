import type { Kysely } from "kysely";
import type { Tables } from "../store/index.js";
import { activeGrantOf, type ActiveGrant } from "./grant-cache.js";
import { toRequest } from "./access-service.js";

/**
 * A user's active grants — JIT and break-glass, approved and unexpired at `now` — read
 * from the store by user id. For decisions made off the PEP's hot path (`ssh:sign`):
 * the store is the authoritative answer, so a grant revoked a moment ago by any process
 * is already gone, with no event to wait for.
 */
export async function readActiveGrants(
  db: Kysely<Tables>,
  userId: string,
  now: number,
): Promise<ActiveGrant[]> {
  const rows = await db
    .selectFrom("access_requests")
    .selectAll()
    .where("user_id", "=", userId)
    .where("status", "=", "approved")
    .where("expires_at", ">", now)
    .execute();
  return rows.map((row) => {
    const r = toRequest(row);
    return activeGrantOf({ ...r, expiresAt: r.expiresAt! });
  });
}

/**
 * Of the given request ids, those revoked (by `zt access revoke`, or with their user's
 * deletion), with the instant they were; others (active, expired, unknown) are left out.
 */
export async function readRevokedGrants(
  db: Kysely<Tables>,
  ids: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db
      .selectFrom("access_requests")
      .select(["id", "decided_at"])
      .where("id", "in", ids.slice(i, i + 500))
      .where("status", "=", "revoked")
      .execute();
    for (const r of rows) out.set(r.id, Number(r.decided_at ?? 0));
  }
  return out;
}
