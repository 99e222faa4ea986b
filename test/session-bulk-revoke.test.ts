/**
 * Revoking more sessions at once than one SQL statement can bind (SQLite: 32,766 values;
 * PostgreSQL: 65,535) — a policy change cutting a large fleet's connections, or a user
 * with that many sessions — revokes them all instead of failing with a store error.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig } from "../src/config/index.js";
import { identityService } from "../src/identity/index.js";
import { SessionService } from "../src/session/index.js";
import { engines } from "./store-fixture.js";
import { testSession } from "./helpers/test-session.js";

const ENGINES = await engines();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe.each(ENGINES)("bulk session revocation ($name)", (engine) => {
  it("revokes 70,000 session ids in one call, the real ones among them", async () => {
    const target = await engine.fresh();
    cleanups.push(() => target.cleanup());
    const dir = target.storeOptions.dataDir;
    mkdirSync(join(dir, "policies"));
    writeFileSync(join(dir, "policies", "main.cedar"), `permit (principal, action, resource);`);
    const cfg = validateConfig(
      {
        data_dir: join(dir, "data"),
        ...(target.storeOptions.databaseUrl
          ? { database_url: target.storeOptions.databaseUrl }
          : {}),
        trust_domain: "bulk.test",
        policies: join(dir, "policies"),
      },
      join(dir, "zt.yaml"),
    );
    const ctx: AppContext = await openAppContext(cfg, { create: true });
    cleanups.push(() => ctx.close());
    const { user } = await identityService(ctx).addUser({
      name: "bulk",
      password: "pw-correct-horse-battery",
    });
    const sessions = new SessionService(ctx);
    cleanups.push(async () => sessions.close());
    const real: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { session } = await testSession(sessions, user.id);
      real.push(session.id);
    }
    const ids = Array.from({ length: 70_000 }, (_, i) => `ses_bulk${i}`);
    ids.splice(35_000, 0, ...real);
    expect(await sessions.revoke(ids, "policy-changed")).toBe(3);
    const rows = await ctx.store.db
      .selectFrom("sessions")
      .select(["id", "revoke_reason"])
      .where("user_id", "=", user.id)
      .execute();
    expect(rows.map((r) => r.revoke_reason)).toEqual([
      "policy-changed",
      "policy-changed",
      "policy-changed",
    ]);
  }, 60_000);
});
