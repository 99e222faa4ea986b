/**
 * PostgreSQL connection handling against the real server: unreachable servers give a
 * clear ZT_STORE error naming the host (never the password), database_url parameters
 * are validated, and TLS works end to end — through a TLS front (openssl-issued
 * certificate) that forwards to the real PostgreSQL, the way a TLS-enabled server
 * answers an SSLRequest.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { makePrivateCa } from "./helpers/tls.js";
import { freePort } from "./helpers/free-port.js";
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, parseDatabaseUrl, redactDatabaseUrl } from "../src/store/index.js";
import { isZtError, type ZtError } from "../src/core/errors.js";
import { sql } from "kysely";
import pg from "pg";
import {
  ADMIN_URL,
  createTestDatabase,
  postgresAvailable,
  terminateConnections,
  waitFor,
  type TestDatabase,
} from "./store-fixture.js";

const PG = await postgresAvailable();
const admin = new pg.Client({ connectionString: ADMIN_URL });
if (PG) await admin.connect();
afterAll(async () => {
  if (PG) await admin.end();
});

async function caught(p: Promise<unknown>): Promise<ZtError> {
  try {
    await p;
  } catch (e) {
    if (isZtError(e)) return e;
    throw e;
  }
  throw new Error("expected a ZtError");
}

describe("database_url parsing", () => {
  it("reads host, port, database, user and zt's pool parameters", () => {
    const t = parseDatabaseUrl(
      "postgres://zt:pw@db.example.test:6543/ztdb?pool_max=20&statement_timeout=2500&connect_timeout=3",
    );
    expect(t.location).toBe("db.example.test:6543/ztdb");
    expect(t.poolConfig).toMatchObject({
      host: "db.example.test",
      port: 6543,
      database: "ztdb",
      user: "zt",
      password: "pw",
      max: 20,
    });
    expect(t.poolConfig.statement_timeout).toBe(2500);
    expect(t.poolConfig.connectionTimeoutMillis).toBe(3000);
    expect(t.poolConfig.ssl).toBe(false);
  });

  it.each([
    ["postgres://h/db?pool_size=3", /unknown parameter "pool_size"/],
    ["postgres://h/db?sslmode=prefer", /sslmode=prefer is not supported/],
    ["postgres://h/db?sslmode=verify-ca", /verify-ca needs sslrootcert/],
    ["postgres://h/db?sslmode=bogus", /sslmode: expected/],
    ["postgres://h/db?pool_max=0", /pool_max: expected an integer/],
    ["postgres://h/?sslmode=require", /missing database name/],
    [
      "postgres://h/db?sslrootcert=/nonexistent/ca.pem&sslmode=verify-full",
      /sslrootcert: cannot read/,
    ],
    ["mysql://h/db", /expected a postgres/],
  ])("refuses %s with ZT_CONFIG_INVALID naming the problem", (url, why) => {
    let err: unknown;
    try {
      parseDatabaseUrl(url);
    } catch (e) {
      err = e;
    }
    expect(isZtError(err) && err.code).toBe("ZT_CONFIG_INVALID");
    expect((err as Error).message).toMatch(/^database_url: /);
    expect((err as Error).message).toMatch(why);
  });

  it("openStore refuses a database_url that is not PostgreSQL rather than falling back to SQLite", async () => {
    const err = await caught(openStore({ dataDir: tmpdir(), databaseUrl: "mysql://u:pw@h/db" }));
    expect(err.code).toBe("ZT_CONFIG_INVALID");
    expect(err.message).toMatch(/^database_url: expected a postgres/);
    expect(err.message).not.toContain("pw");
  });

  it("redacts the password for display", () => {
    expect(redactDatabaseUrl("postgres://zt:s3cret@h:5432/db")).toBe("postgres://zt:***@h:5432/db");
  });
});

describe("PostgreSQL unreachable", () => {
  it("fails with ZT_STORE naming host:port/db and not the password", async () => {
    const port = await freePort();
    const err = await caught(
      openStore({
        dataDir: tmpdir(),
        databaseUrl: `postgres://zt:s3cret-pw@127.0.0.1:${port}/ztdb?connect_timeout=2`,
      }),
    );
    expect(err.code).toBe("ZT_STORE");
    expect(err.message).toContain(`127.0.0.1:${port}/ztdb`);
    expect(err.message).toMatch(/connection refused/);
    expect(JSON.stringify(err.toJSON())).not.toContain("s3cret-pw");
    expect(err.message).not.toContain("s3cret-pw");
  });

  it.runIf(PG)("a missing database is named as such", async () => {
    const url = new URL(ADMIN_URL);
    url.pathname = "/zt_test_does_not_exist";
    url.password = "s3cret-pw";
    const err = await caught(openStore({ dataDir: tmpdir(), databaseUrl: url.toString() }));
    expect(err.code).toBe("ZT_STORE");
    expect(err.message).toContain(
      `${url.hostname}:${url.port || 5432}/zt_test_does_not_exist as ${decodeURIComponent(url.username) || "postgres"}: database "zt_test_does_not_exist" does not exist`,
    );
    expect(err.message).not.toContain("s3cret-pw");
  });
});

describe.runIf(PG)("PostgreSQL connection loss", () => {
  it("a connection killed inside a transaction fails that transaction, not the process", async () => {
    const db = await createTestDatabase();
    const url = new URL(db.url);
    url.searchParams.set("application_name", "zt-victim");
    const store = await openStore({ dataDir: tmpdir(), databaseUrl: url.toString() });
    try {
      await expect(
        store.db.transaction().execute(async (trx) => {
          await sql`SELECT 1`.execute(trx);
          // Killed while idle in the transaction: pg emits 'error' on the checked-out
          // client, which is an uncaught exception (a crashed replica) unless handled.
          expect(await terminateConnections(db.name, "zt-victim")).toBeGreaterThan(0);
          await waitFor(async () => {
            const r = await admin.query(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'zt-victim'",
            );
            return (r.rows[0] as { n: number }).n === 0;
          }, "the backend to be gone");
          await sql`SELECT 1`.execute(trx);
        }),
      ).rejects.toThrow();
      // the pool drops the broken client and carries on
      expect((await sql<{ x: number }>`SELECT 1 AS x`.execute(store.db)).rows).toEqual([{ x: 1 }]);
    } finally {
      await store.close();
      await db.drop();
    }
  });
});

/** A TLS front for PostgreSQL: answers SSLRequest with 'S', terminates TLS, forwards in clear. */
class TlsFront {
  server: Server;
  handshakes = 0;
  plaintextRefused = 0;
  readonly #sockets = new Set<Socket>();
  constructor(key: string, cert: string, upstream: { host: string; port: number }) {
    this.server = createServer((client) => {
      this.#sockets.add(client);
      client.on("close", () => this.#sockets.delete(client));
      client.once("data", (first) => {
        // SSLRequest: int32 length 8, int32 code 80877103
        if (first.length !== 8 || first.readInt32BE(4) !== 80877103) {
          this.plaintextRefused++;
          client.destroy();
          return;
        }
        client.write("S");
        const tls = new TLSSocket(client, { isServer: true, key, cert });
        tls.on("secure", () => {
          this.handshakes++;
          const up = connect(upstream.port, upstream.host);
          this.#sockets.add(up);
          up.on("close", () => this.#sockets.delete(up));
          tls.pipe(up).pipe(tls);
          up.on("error", () => tls.destroy());
          tls.on("error", () => up.destroy());
        });
        tls.on("error", () => client.destroy());
      });
      client.on("error", () => undefined);
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return (this.server.address() as AddressInfo).port;
  }
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

describe.runIf(PG)("TLS to PostgreSQL", () => {
  let dir: string;
  let front: TlsFront;
  let port: number;
  let db: TestDatabase;
  const base = () => {
    const u = new URL(db.url);
    u.hostname = "localhost";
    u.port = String(port);
    return u.toString();
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "zt-pgtls-"));
    makePrivateCa(dir, "localhost", { other: true });
    const read = (f: string) => readFileSync(join(dir, f), "utf8");
    const admin = new URL(ADMIN_URL);
    front = new TlsFront(read("server.key"), read("server.pem"), {
      host: admin.hostname,
      port: Number(admin.port || 5432),
    });
    port = await front.listen();
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await front?.close();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sslmode=verify-full with sslrootcert: connects over TLS and migrates", async () => {
    const before = front.handshakes;
    const store = await openStore({
      dataDir: dir,
      databaseUrl: `${base()}?sslmode=verify-full&sslrootcert=${join(dir, "ca.pem")}`,
    });
    try {
      const r = await store.db
        .selectFrom("zt_migrations" as never)
        .selectAll()
        .execute();
      expect(r.length).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
    expect(front.handshakes).toBeGreaterThan(before);
  });

  it("sslmode=verify-full refuses a server certificate from another CA", async () => {
    const err = await caught(
      openStore({
        dataDir: dir,
        databaseUrl: `${base()}?sslmode=verify-full&sslrootcert=${join(dir, "other-ca.pem")}`,
      }),
    );
    expect(err.code).toBe("ZT_STORE");
    expect(err.message).toContain(`localhost:${port}/`);
    expect(err.message).toMatch(/TLS: /);
  });

  it("sslmode=require encrypts without verifying (libpq semantics)", async () => {
    const before = front.handshakes;
    const store = await openStore({ dataDir: dir, databaseUrl: `${base()}?sslmode=require` });
    await store.close();
    expect(front.handshakes).toBeGreaterThan(before);
  });

  it("sslmode=disable sends no SSLRequest (the TLS-only front refuses it)", async () => {
    const before = front.plaintextRefused;
    const err = await caught(openStore({ dataDir: dir, databaseUrl: `${base()}?sslmode=disable` }));
    expect(err.code).toBe("ZT_STORE");
    expect(front.plaintextRefused).toBeGreaterThan(before);
  });
});
