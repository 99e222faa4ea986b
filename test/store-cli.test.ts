/**
 * `zt db status|migrate` through the real CLI (bin/zt, built by `npm run build`) on
 * SQLite and a real PostgreSQL database, with ZT_DATABASE_URL as the override.
 */
import { afterEach, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { allMigrations } from "../src/store/migrations/index.js";
import { engines, type Engine, type EngineTarget } from "./store-fixture.js";

const run = promisify(execFile);
const ZT = join(import.meta.dirname, "..", "bin", "zt");
const ENGINES = await engines();
const MIGRATIONS = Object.keys(allMigrations("sqlite")).sort();

async function zt(t: EngineTarget, args: string[], extraEnv: Record<string, string> = {}) {
  const config = join(t.storeOptions.dataDir, "zt.yaml");
  writeFileSync(config, `data_dir: ${t.storeOptions.dataDir}\n`);
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    ZT_CONFIG: config,
  };
  delete env["ZT_DATABASE_URL"];
  if (t.storeOptions.databaseUrl) env["ZT_DATABASE_URL"] = t.storeOptions.databaseUrl;
  Object.assign(env, extraEnv);
  try {
    const r = await run(process.execPath, [ZT, ...args], { env });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe.each(ENGINES)("zt db: $name", (engine: Engine) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  it("status lists pending migrations, migrate applies them, status then shows them applied", async () => {
    const t = await engine.fresh();
    cleanups.push(t.cleanup);
    const before = await zt(t, ["db", "status", "--json"]);
    expect(before.stderr).toBe("");
    const s0 = JSON.parse(before.stdout) as {
      engine: string;
      location: string;
      applied: number;
      pending: number;
    };
    expect(s0).toMatchObject({ engine: engine.name, applied: 0, pending: MIGRATIONS.length });
    if (t.database) expect(s0.location).toMatch(new RegExp(`:\\d+/${t.database}$`));

    const migrated = await zt(t, ["db", "migrate"]);
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toContain(`applied ${MIGRATIONS.join(", ")}`);
    expect((await zt(t, ["db", "migrate"])).stdout).toMatch(/schema is up to date/);

    const after = await zt(t, ["db", "status"]);
    expect(after.stdout).toMatch(new RegExp(`engine: +${engine.name}`));
    expect(after.stdout).toMatch(new RegExp(`${MIGRATIONS.length} applied, 0 pending`));
  });
});

describe.each(ENGINES)("zt db: $name, four processes migrating at once", (engine: Engine) => {
  it("all succeed; exactly one applies the migrations", async () => {
    const t = await engine.fresh();
    try {
      const runs = await Promise.all([1, 2, 3, 4].map(() => zt(t, ["db", "migrate", "--json"])));
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      const applied = runs.map(
        (r) => (JSON.parse(r.stdout) as { applied_now: string[] }).applied_now,
      );
      expect(applied.filter((a) => a.length > 0)).toEqual([MIGRATIONS]);
      const status = JSON.parse((await zt(t, ["db", "status", "--json"])).stdout) as {
        applied: number;
        pending: number;
      };
      expect(status).toMatchObject({ applied: MIGRATIONS.length, pending: 0 });
    } finally {
      await t.cleanup();
    }
  });
});

describe("zt db: PostgreSQL unreachable", () => {
  it("exits 74 with ZT_STORE naming the host, never the password", async () => {
    const t = await ENGINES[0]!.fresh();
    try {
      const r = await zt(t, ["db", "status"], {
        ZT_DATABASE_URL: "postgres://zt:hunter2-secret@127.0.0.1:1/ztdb?connect_timeout=2",
      });
      expect(r.code).toBe(74);
      expect(r.stderr).toMatch(
        /^zt: error ZT_STORE: cannot connect to PostgreSQL at 127\.0\.0\.1:1\/ztdb as zt: /,
      );
      expect(r.stderr + r.stdout).not.toContain("hunter2");
    } finally {
      await t.cleanup();
    }
  });
});
