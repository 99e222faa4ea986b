/**
 * Storage conformance: the same tests against SQLite and a real PostgreSQL server
 * (a fresh `zt_test_<random>` database per test, dropped afterwards). Whatever one
 * engine accepts, returns or refuses, the other must too.
 */
import { afterEach, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { migrationStatus, migrateStore, openStore, type Store } from "../src/store/index.js";
import { allMigrations } from "../src/store/migrations/index.js";
import {
  engines,
  postgresEngine,
  sqliteEngine,
  type Engine,
  type EngineTarget,
} from "./store-fixture.js";

const ENGINES = await engines();
const MIGRATIONS = Object.keys(allMigrations("sqlite")).sort();
const T0 = 1_800_000_000_000; // ms timestamps beyond 2^32 must round-trip exactly

describe.each(ENGINES)("store conformance: $name", (engine: Engine) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function fresh(): Promise<EngineTarget> {
    const t = await engine.fresh();
    cleanups.push(t.cleanup);
    return t;
  }
  async function open(t?: EngineTarget): Promise<Store> {
    const target = t ?? (await fresh());
    const store = await openStore(target.storeOptions);
    cleanups.push(() => store.close());
    return store;
  }
  async function addUser(store: Store, id: string, name = id): Promise<void> {
    await store.db
      .insertInto("users")
      .values({
        id,
        name,
        email: null,
        password_hash: "h",
        totp_secret_sealed: null,
        totp_last_step: 0,
        disabled: 0,
        created_at: T0,
        updated_at: T0,
      })
      .execute();
  }

  it("reports its engine and a location without credentials", async () => {
    const store = await open();
    expect(store.dialect).toBe(engine.name);
    expect(store.location).not.toMatch(/@|password/);
    if (engine.name === "postgres")
      expect(store.location).toMatch(/^[^/@]+:\d+\/zt_test_[0-9a-f]+$/);
    else expect(store.location).toMatch(/zt\.db$/);
  });

  it("applies every migration once; reopening applies none", async () => {
    const t = await fresh();
    const store = await open(t);
    const status = await migrationStatus(store);
    expect(status.map((m) => m.name)).toEqual(MIGRATIONS);
    expect(status.every((m) => m.executedAt instanceof Date)).toBe(true);
    expect(await migrateStore(store)).toEqual([]);
    const again = await open(t);
    expect((await migrationStatus(again)).map((m) => m.name)).toEqual(MIGRATIONS);
  });

  it("opened without migrating, lists every migration as pending", async () => {
    const t = await fresh();
    const store = await openStore({ ...t.storeOptions, migrate: false });
    cleanups.push(() => store.close());
    const status = await migrationStatus(store);
    expect(status.map((m) => m.name)).toEqual(MIGRATIONS);
    expect(status.every((m) => m.executedAt === undefined)).toBe(true);
  });

  it("serialises 4 concurrent migrations on a fresh database: each runs exactly once", async () => {
    const t = await fresh();
    const stores = await Promise.all(
      [1, 2, 3, 4].map(() => openStore({ ...t.storeOptions, migrate: false })),
    );
    for (const s of stores) cleanups.push(() => s.close());
    const applied = await Promise.all(stores.map((s) => migrateStore(s)));
    // Exactly one migrator applied them all; the others waited and found nothing to do.
    expect(applied.filter((a) => a.length > 0)).toEqual([MIGRATIONS]);
    const rows = await sql<{ name: string }>`SELECT name FROM zt_migrations ORDER BY name`.execute(
      stores[0]!.db,
    );
    expect(rows.rows.map((r) => r.name)).toEqual(MIGRATIONS);
  });

  it("users: insert, select, update, unique name refused, bigint round-trip", async () => {
    const store = await open();
    await addUser(store, "u1", "alice");
    await store.db
      .updateTable("users")
      .set({ totp_last_step: 59_999_999_999, disabled: 1 })
      .where("id", "=", "u1")
      .execute();
    const row = await store.db
      .selectFrom("users")
      .selectAll()
      .where("name", "=", "alice")
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({
      id: "u1",
      email: null,
      totp_last_step: 59_999_999_999,
      disabled: 1,
      created_at: T0,
    });
    expect(typeof row.created_at).toBe("number");
    await expect(addUser(store, "u2", "alice")).rejects.toThrow();
    expect((await store.db.selectFrom("users").select("id").execute()).length).toBe(1);
  });

  it("groups: membership, and deleting a user cascades to its memberships", async () => {
    const store = await open();
    await addUser(store, "u1");
    await store.db
      .insertInto("groups")
      .values([
        { name: "ops", created_at: T0 },
        { name: "dev", created_at: T0 },
      ])
      .execute();
    await store.db
      .insertInto("user_groups")
      .values([
        { user_id: "u1", group_name: "ops" },
        { user_id: "u1", group_name: "dev" },
      ])
      .execute();
    const groups = await store.db
      .selectFrom("user_groups")
      .select("group_name")
      .where("user_id", "=", "u1")
      .orderBy("group_name")
      .execute();
    expect(groups.map((g) => g.group_name)).toEqual(["dev", "ops"]);
    // a membership of an unknown user is refused (foreign keys on both engines)
    await expect(
      store.db.insertInto("user_groups").values({ user_id: "nobody", group_name: "ops" }).execute(),
    ).rejects.toThrow();
    await store.db.deleteFrom("users").where("id", "=", "u1").execute();
    expect(await store.db.selectFrom("user_groups").selectAll().execute()).toEqual([]);
  });

  it("sessions: lookup by token hash, revoke, duplicate token refused", async () => {
    const store = await open();
    await addUser(store, "u1");
    const session = {
      id: "s1",
      token_hash: "th1",
      user_id: "u1",
      created_at: T0,
      expires_at: T0 + 3_600_000,
      last_seen_at: T0,
      mfa_at: T0,
      source_ip: "192.0.2.1",
      user_agent: "UA ü ✓",
      device_id: null,
      revoked_at: null,
      revoke_reason: null,
    };
    await store.db.insertInto("sessions").values(session).execute();
    await expect(
      store.db
        .insertInto("sessions")
        .values({ ...session, id: "s2" })
        .execute(),
    ).rejects.toThrow();
    await store.db
      .updateTable("sessions")
      .set({ revoked_at: T0 + 5, revoke_reason: "admin" })
      .where("id", "=", "s1")
      .execute();
    const row = await store.db
      .selectFrom("sessions")
      .selectAll()
      .where("token_hash", "=", "th1")
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ ...session, revoked_at: T0 + 5, revoke_reason: "admin" });
  });

  it("keys: insert and select the active key of a purpose", async () => {
    const store = await open();
    const key = (id: string, created_at: number, status: string) => ({
      id,
      purpose: "assertion",
      alg: "ES256",
      public_jwk: "{}",
      private_sealed: "sealed",
      created_at,
      not_after: null,
      status,
    });
    await store.db
      .insertInto("keys")
      .values([key("k1", T0, "retired"), key("k2", T0 + 1, "active")])
      .execute();
    const active = await store.db
      .selectFrom("keys")
      .select("id")
      .where("purpose", "=", "assertion")
      .where("status", "=", "active")
      .execute();
    expect(active).toEqual([{ id: "k2" }]);
  });

  it("audit_events: explicit seq, ordered reads, duplicate seq refused", async () => {
    const store = await open();
    const ev = (seq: number) => ({
      seq,
      id: `e${seq}`,
      ts: T0 + seq,
      kind: "login",
      outcome: "success",
      subject: "alice",
      source_ip: null,
      route: null,
      action: null,
      decision_id: `d${seq}`,
      policies: null,
      reason: null,
      data: JSON.stringify({ n: seq }),
      prev_hash: null,
      hash: null,
    });
    await store.db
      .insertInto("audit_events")
      .values([ev(2), ev(1), ev(3)])
      .execute();
    await expect(
      store.db
        .insertInto("audit_events")
        .values({ ...ev(3), id: "other" })
        .execute(),
    ).rejects.toThrow();
    const rows = await store.db
      .selectFrom("audit_events")
      .select(["seq", "id", "data"])
      .orderBy("seq")
      .execute();
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(JSON.parse(rows[2]!.data)).toEqual({ n: 3 });
  });

  it("events: generated seq increases", async () => {
    const store = await open();
    const a = await store.db
      .insertInto("events")
      .values({ ts: T0, kind: "policy.changed", data: "{}" })
      .returning("seq")
      .executeTakeFirstOrThrow();
    const b = await store.db
      .insertInto("events")
      .values({ ts: T0, kind: "policy.changed", data: "{}" })
      .returning("seq")
      .executeTakeFirstOrThrow();
    expect(typeof a.seq).toBe("number");
    expect(b.seq).toBeGreaterThan(a.seq);
  });

  it("meta: upsert with ON CONFLICT", async () => {
    const store = await open();
    for (const value of ["1", "2"]) {
      await store.db
        .insertInto("meta")
        .values({ key: "k", value })
        .onConflict((oc) => oc.column("key").doUpdateSet({ value }))
        .execute();
    }
    expect(await store.db.selectFrom("meta").selectAll().execute()).toEqual([
      { key: "k", value: "2" },
    ]);
  });

  it("transactions: a failure rolls everything back", async () => {
    const store = await open();
    await expect(
      store.db.transaction().execute(async (trx) => {
        await trx.insertInto("groups").values({ name: "g", created_at: T0 }).execute();
        await trx.insertInto("groups").values({ name: "g", created_at: T0 }).execute();
      }),
    ).rejects.toThrow();
    expect(await store.db.selectFrom("groups").selectAll().execute()).toEqual([]);
  });
});

describe.runIf(ENGINES.length === 2)("store conformance: one schema", () => {
  it("every table has the same columns and nullability on SQLite and PostgreSQL", async () => {
    const shapes = [];
    for (const engine of [sqliteEngine, postgresEngine]) {
      const t = await engine.fresh();
      const store = await openStore(t.storeOptions);
      try {
        const tables = await store.db.introspection.getTables();
        // SQLite lets a non-integer PRIMARY KEY column hold NULL (a historical quirk); zt
        // always supplies keys, so key columns count as NOT NULL on both engines.
        const pk = (table: string, column: string): boolean =>
          store.sqlite !== undefined &&
          (store.sqlite.pragma(`table_info(${table})`) as { name: string; pk: number }[]).some(
            (c) => c.name === column && c.pk > 0,
          );
        shapes.push(
          Object.fromEntries(
            tables
              .filter((tb) => !tb.name.startsWith("zt_migrations"))
              .map((tb) => [
                tb.name,
                tb.columns
                  .map((c) => `${c.name}${c.isNullable && !pk(tb.name, c.name) ? "?" : ""}`)
                  .sort(),
              ])
              .sort(([a], [b]) => String(a).localeCompare(String(b))),
          ),
        );
      } finally {
        await store.close();
        await t.cleanup();
      }
    }
    expect(Object.keys(shapes[0]!)).toContain("users");
    expect(shapes[1]).toEqual(shapes[0]);
  });
});
