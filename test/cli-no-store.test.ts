/**
 * The real `bin/zt` pointed at a place with no zt store (a mistyped data_dir, ZT_DATA_DIR
 * or database_url): every command but those that set a store up (`zt init`, `zt up`,
 * `zt ca init`, `zt db migrate`) refuses with ZT_STORE naming the place, and leaves
 * nothing behind — no folder, no database file, no schema — instead of answering from a
 * new, empty store ("no users", "no bans").
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { exitCodeFor } from "../src/core/errors.js";
import { runZt, tempDir, type RunResult } from "./helpers/zt-process.js";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "./store-fixture.js";

const masterKey = randomBytes(32).toString("base64");
let dir: string;

function expectNoStore(r: RunResult, where: string): void {
  expect(r.stderr, r.stdout).toMatch(/^zt: error ZT_STORE: /);
  expect(r.code, r.stderr).toBe(exitCodeFor("ZT_STORE"));
  expect(r.stderr).toContain(where);
  expect(r.stderr).toMatch(/zt init/);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stdout).toBe("");
}

/** Commands that only read the store, and one that writes to it. */
const COMMANDS: string[][] = [
  ["user", "list"],
  ["session", "list"],
  ["audit", "tail"],
  ["audit", "verify"],
  ["ban", "list"],
  ["alerts", "list"],
  ["device", "list"],
  ["access", "list"],
  ["keys", "list"],
  ["cert", "list"],
  ["ca", "show"],
  ["user", "add", "alice"],
];

beforeAll(() => {
  dir = tempDir("zt-no-store-");
  writeFileSync(join(dir, "zt.yaml"), "data_dir: ./data\n");
  mkdirSync(join(dir, "policies"));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("SQLite: a data_dir with no store", () => {
  const typo = () => join(dir, "dta");

  it.each(COMMANDS)(
    "zt %s %s (ZT_MASTER_KEY, ZT_DATA_DIR) refuses and creates nothing",
    async (...args) => {
      const r = await runZt(args, {
        cwd: dir,
        env: { ZT_CONFIG: join(dir, "zt.yaml"), ZT_MASTER_KEY: masterKey, ZT_DATA_DIR: typo() },
      });
      expectNoStore(r, typo());
      expect(existsSync(typo())).toBe(false);
    },
  );

  it("the data_dir of zt.yaml, existing but empty: refused, no zt.db made in it", async () => {
    const empty = join(dir, "empty");
    mkdirSync(empty);
    writeFileSync(join(dir, "empty.yaml"), `data_dir: ${empty}\n`);
    const r = await runZt(["--config", join(dir, "empty.yaml"), "user", "list"], {
      cwd: dir,
      env: { ZT_MASTER_KEY: masterKey },
    });
    expectNoStore(r, empty);
    expect(readdirSync(empty)).toEqual([]);
  });

  it("key file mode with master_key_file outside data_dir: refused, nothing made", async () => {
    const keyFile = join(dir, "master.key");
    writeFileSync(keyFile, randomBytes(32).toString("base64") + "\n", { mode: 0o600 });
    writeFileSync(join(dir, "keyfile.yaml"), `data_dir: ${typo()}\nmaster_key_file: ${keyFile}\n`);
    const r = await runZt(["--config", join(dir, "keyfile.yaml"), "ban", "list"], {
      cwd: dir,
      env: { ZT_MASTER_KEY: "" },
    });
    expectNoStore(r, typo());
    expect(existsSync(typo())).toBe(false);
  });

  it("zt db status reports every migration pending without making the file", async () => {
    const r = await runZt(["db", "status", "--json"], {
      cwd: dir,
      env: { ZT_CONFIG: join(dir, "zt.yaml"), ZT_DATA_DIR: typo() },
    });
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as { engine: string; location: string; applied: number };
    expect(s).toMatchObject({ engine: "sqlite", location: join(typo(), "zt.db"), applied: 0 });
    expect(existsSync(typo())).toBe(false);
  });

  it("after zt init the same commands answer from the store", async () => {
    const env = { ZT_CONFIG: join(dir, "zt.yaml"), ZT_MASTER_KEY: masterKey };
    const init = await runZt(["init"], { cwd: dir, env });
    expect(init.code, init.stderr).toBe(0);
    const add = await runZt(["user", "add", "alice", "--json"], { cwd: dir, env });
    expect(add.code, add.stderr).toBe(0);
    const list = await runZt(["user", "list", "--json"], { cwd: dir, env });
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { name: string }[]).map((u) => u.name)).toEqual(["alice"]);
  });
});

describe("PostgreSQL: a database with no zt schema", async () => {
  const available = await postgresAvailable();
  let db: TestDatabase | undefined;
  beforeAll(async () => {
    if (available) db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function tables(): Promise<string[]> {
    const client = new pg.Client({ connectionString: db!.url });
    await client.connect();
    try {
      const r = await client.query<{ tablename: string }>(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
      );
      return r.rows.map((row) => row.tablename);
    } finally {
      await client.end();
    }
  }

  it.skipIf(!available)("read and write commands refuse and run no migration", async () => {
    const env = {
      ZT_CONFIG: join(dir, "zt.yaml"),
      ZT_MASTER_KEY: masterKey,
      ZT_DATABASE_URL: db!.url,
    };
    for (const args of [
      ["user", "list"],
      ["ban", "list"],
      ["user", "add", "bob"],
    ]) {
      const r = await runZt(args, { cwd: dir, env });
      expect(r.stderr, args.join(" ")).toMatch(
        /^zt: error ZT_STORE: no zt schema in the PostgreSQL/,
      );
      expect(r.code).toBe(exitCodeFor("ZT_STORE"));
      expect(r.stderr).toContain(db!.name);
      expect(r.stderr).toMatch(/zt db migrate/);
    }
    expect(await tables()).toEqual([]);

    const migrate = await runZt(["db", "migrate"], { cwd: dir, env });
    expect(migrate.code, migrate.stderr).toBe(0);
    const list = await runZt(["user", "list", "--json"], { cwd: dir, env });
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([]);
  });
});
