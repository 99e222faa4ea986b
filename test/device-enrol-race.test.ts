/**
 * Device enrolment and a concurrent `user disable`, on both storage engines (SQLite and
 * PostgreSQL at 127.0.0.1:5432). The owner's disabled flag was read, then the device
 * inserted as a separate statement: a disabling committed in between still got the
 * (possibly auto-approved) device enrolled. Now the owner's row is read in the same
 * transaction as the insert (locked for share on PostgreSQL).
 *
 * The interleaving is real: a second AppContext on the same store disables the user (the
 * identity service's own `setDisabled`) at the moment the enrolling process has read the
 * user's row for the first time, before anything is written; and on PostgreSQL, through
 * the real `bin/zt`, an enrolment that meets a disable under way (the user's row locked)
 * waits for it and is refused once it commits.
 */
import { afterEach, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { ManualClock } from "../src/core/clock.js";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import { DeviceService, generateDeviceKey } from "../src/device/index.js";
import { AfterFirstRead } from "./helpers/after-first-read.js";
import { runZt, tempDir } from "./helpers/zt-process.js";
import {
  createTestDatabase,
  engines,
  postgresAvailable,
  waitFor,
  writeEngineConfig,
  type Engine,
  type EngineTarget,
} from "./store-fixture.js";

const ENGINES = await engines();

describe.each(ENGINES)(
  "device enrolment against a concurrent disable on $name",
  (engine: Engine) => {
    let target: EngineTarget | undefined;
    const contexts: AppContext[] = [];
    afterEach(async () => {
      for (const c of contexts.splice(0)) await c.close();
      await target?.cleanup();
      target = undefined;
    });

    it("refuses the device of a user disabled between the enrolment's check and its insert", async () => {
      target = await engine.fresh();
      const path = writeEngineConfig(
        target,
        `routes:
  - { name: app, from: "http://app.localhost:8443", to: "http://127.0.0.1:9" }
devices: { auto_approve_groups: [eng] }
`,
      );
      const clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
      const open = async () => {
        const c = await openAppContext(loadConfig(path, { env: {} }), {
          clock,
          env: {},
          create: true,
        });
        contexts.push(c);
        return c;
      };
      const enrolling = await open();
      const admin = await open();
      await identityService(admin).addUser({
        name: "dave",
        groups: ["eng"],
        password: "pw-correct-horse-battery",
      });

      // The enrolling process's store handle, with the other process's disable run right
      // after its first read of dave's row.
      let disabledMeanwhile = false;
      const hook = new AfterFirstRead("users", async () => {
        await identityService(admin).setDisabled("dave", true);
        disabledMeanwhile = true;
      });
      const store = enrolling.store as { db: typeof enrolling.store.db };
      store.db = enrolling.store.db.withPlugin(hook);

      const attempt = new DeviceService(enrolling).enroll({
        userName: "dave",
        name: "laptop",
        publicKeyPem: generateDeviceKey().publicPem,
      });
      await expect(attempt).rejects.toMatchObject({ code: "ZT_USER_DISABLED" });
      expect(disabledMeanwhile).toBe(true);
      const rows = await admin.store.db.selectFrom("devices").select(["id", "status"]).execute();
      expect(rows).toEqual([]);
      await enrolling.audit.flush();
      const refusals = await admin.store.db
        .selectFrom("audit_events")
        .select(["kind", "outcome", "reason"])
        .where("kind", "=", "device.enroll")
        .execute();
      expect(refusals).toEqual([
        { kind: "device.enroll", outcome: "failure", reason: "user-disabled" },
      ]);
    });
  },
);

const PG = await postgresAvailable();

describe.runIf(PG)("device enrolment waiting on a disable under way (PostgreSQL, bin/zt)", () => {
  it("refuses the device once the disable it waited on commits (it read the user before the wait)", async () => {
    const db = await createTestDatabase();
    const dir = tempDir("zt-enrol-race-");
    const lock = new pg.Client({ connectionString: db.url });
    const watch = new pg.Client({ connectionString: db.url });
    const env = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };
    try {
      const config = join(dir, "zt.yaml");
      writeFileSync(
        config,
        `data_dir: ${join(dir, "data")}
database_url: ${db.url}
routes:
  - { name: app, from: "http://app.localhost:8443", to: "http://127.0.0.1:9" }
devices: { auto_approve_groups: [eng] }
`,
      );
      const zt = (args: string[], input?: string) =>
        runZt(["--config", config, ...args], { env, ...(input ? { input } : {}) });
      expect((await zt(["init"])).code).toBe(0);
      const add = await zt(
        ["user", "add", "dave", "--group", "eng", "--password-stdin"],
        "pw-correct-horse-battery",
      );
      expect(add.code, add.stderr).toBe(0);

      // An admin's disable is under way: dave's row is locked by its transaction. The
      // enrolment must wait for it and judge dave as it commits, not as before the wait.
      await lock.connect();
      await watch.connect();
      await lock.query("BEGIN");
      await lock.query("SELECT id FROM users WHERE name = 'dave' FOR UPDATE");
      const enrolling = zt([
        "device",
        "enroll",
        "--as",
        "dave",
        "--key-dir",
        join(dir, "dave-key"),
        "--name",
        "laptop",
      ]);
      await waitFor(
        async () => {
          const r = await watch.query(
            `SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query ILIKE '%users%'`,
            [db.name],
          );
          return (r.rowCount ?? 0) > 0;
        },
        "the enrolment to wait on dave's row",
        20_000,
      );
      await lock.query("UPDATE users SET disabled = 1 WHERE name = 'dave'");
      await lock.query("COMMIT");

      const r = await enrolling;
      expect(r.code, r.stderr).toBe(77);
      expect(r.stderr).toMatch(/^zt: error ZT_USER_DISABLED: dave is disabled/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      const devices = await watch.query("SELECT id FROM devices");
      expect(devices.rows).toEqual([]);
    } finally {
      await lock.end().catch(() => undefined);
      await watch.end().catch(() => undefined);
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
