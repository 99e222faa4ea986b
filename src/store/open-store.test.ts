import { chmodSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { openStore, type Store } from "./open-store.js";

describe("SQLite transactions and a second writing connection (the audit writer thread)", () => {
  let dir: string | undefined;
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("a read-then-write transaction holds the write lock from BEGIN, so another connection's commit cannot break it", async () => {
    dir = mkdtempSync(join(tmpdir(), "zt-store-tx-"));
    store = await openStore({ dataDir: dir });
    const other = new Database(join(dir, "zt.db"));
    other.pragma("busy_timeout = 0");
    try {
      const outcome = await store.db.transaction().execute(async (trx) => {
        // Read first (a DEFERRED transaction would hold only a read snapshot here)…
        await trx.selectFrom("events").select("seq").limit(1).execute();
        // …then another connection tries to commit a write in between…
        let otherWrote: boolean;
        try {
          other.exec("INSERT INTO events (ts, kind, data) VALUES (1, 'test.other', '{}')");
          otherWrote = true;
        } catch (e) {
          expect((e as { code?: string }).code).toMatch(/^SQLITE_BUSY/);
          otherWrote = false;
        }
        // …and this transaction's own write still succeeds.
        await trx
          .insertInto("events")
          .values({ ts: 2, kind: "test.mine", data: "{}" } as never)
          .execute();
        return otherWrote;
      });
      // The other connection had to wait for the lock (here: refused at once).
      expect(outcome).toBe(false);
      const kinds = other.prepare("SELECT kind FROM events WHERE kind LIKE 'test.%'").pluck().all();
      expect(kinds).toEqual(["test.mine"]);
    } finally {
      other.close();
    }
  });
});

describe("the SQLite database file's mode", () => {
  it("is 0600 from creation, its -wal and -shm too, and an existing readable one is narrowed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "zt-store-mode-"));
    try {
      const store = await openStore({ dataDir: dir });
      await store.db
        .insertInto("events")
        .values({ ts: 1, kind: "t", data: "{}" } as never)
        .execute();
      for (const f of ["zt.db", "zt.db-wal", "zt.db-shm"])
        expect((statSync(join(dir, f)).mode & 0o777).toString(8), f).toBe("600");
      await store.close();
      chmodSync(join(dir, "zt.db"), 0o644);
      const again = await openStore({ dataDir: dir });
      expect((statSync(join(dir, "zt.db")).mode & 0o777).toString(8)).toBe("600");
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
