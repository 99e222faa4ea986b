import { sql, type Kysely, type Migration } from "kysely";
import type { StoreDialect } from "../dialect.js";

/**
 * Devices: revokes the devices whose owner no longer exists. Deleting a user now revokes
 * their devices; before, they were left as they were (approved ones still reporting).
 */
export const orphanDevices = (_dialect: StoreDialect): Migration => ({
  async up(db: Kysely<unknown>): Promise<void> {
    await sql`UPDATE devices SET status = 'revoked', compliant = 0
      WHERE status <> 'revoked' AND user_id NOT IN (SELECT id FROM users)`.execute(db);
  },
});
