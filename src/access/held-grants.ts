import type { Kysely } from "kysely";
import type { Tables } from "../store/index.js";
import type { ActiveGrant } from "./grant-cache.js";
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
    return {
      id: r.id,
      userId: r.userId,
      kind: r.kind,
      resource: r.resource,
      expiresAt: r.expiresAt!,
    };
  });
}
