import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { validateConfig } from "../config/index.js";
import { openAppContext, type AppContext } from "../app/index.js";
import { ManualClock } from "../core/clock.js";

/** A throwaway AppContext on a temp SQLite store with a manual clock (tests and benches). */
export async function openPkiTestContext(
  options: {
    trustDomain?: string;
    pki?: Record<string, unknown>;
    startMs?: number;
    policies?: string;
  } = {},
): Promise<{ ctx: AppContext; clock: ManualClock; dir: string; cleanup: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "zt-pki-"));
  const config = validateConfig(
    {
      data_dir: join(dir, "data"),
      trust_domain: options.trustDomain ?? "example.test",
      pki: options.pki ?? {},
      ...(options.policies ? { policies: options.policies } : {}),
    },
    join(dir, "zt.yaml"),
  );
  const clock = new ManualClock(options.startMs ?? Date.now());
  const ctx = await openAppContext(config, {
    clock,
    env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
  });
  return {
    ctx,
    clock,
    dir,
    cleanup: async () => {
      await ctx.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Inserts a user straight into the store (no password, no MFA), in `groups` (created when
 * missing): for tests that need a principal, not a sign-in.
 */
export async function insertTestUser(
  db: AppContext["store"]["db"],
  user: { id: string; name: string; groups?: readonly string[]; at?: number },
): Promise<void> {
  const at = user.at ?? Date.now();
  await db
    .insertInto("users")
    .values({
      id: user.id,
      name: user.name,
      email: null,
      password_hash: "x",
      totp_secret_sealed: null,
      totp_last_step: 0,
      disabled: 0,
      created_at: at,
      updated_at: at,
    })
    .execute();
  for (const group of user.groups ?? []) {
    await db
      .insertInto("groups")
      .values({ name: group, created_at: at })
      .onConflict((oc) => oc.column("name").doNothing())
      .execute();
    await db.insertInto("user_groups").values({ user_id: user.id, group_name: group }).execute();
  }
}
