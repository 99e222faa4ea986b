/**
 * A replica cut off from PostgreSQL: a real `zt up` reaches the real PostgreSQL only
 * through a TCP relay this test controls. Blocking the relay (existing connections
 * cut, new ones black-holed) is a network partition:
 *
 * - the PEP keeps deciding from memory (a session it knows keeps working);
 * - `/readyz` reports `degraded` (503), its store check `store-degraded`;
 * - a revocation committed meanwhile (through another path to the database) cannot be
 *   heard — the risk `max_staleness` bounds (docs/scale-out.md);
 * - when the partition heals, the event listener reconnects, catches up by seq, the
 *   revocation is enforced and `/readyz` is ready again.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import * as OTPAuth from "otpauth";
import { login, request } from "./helpers/http-client.js";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";
import {
  ADMIN_URL,
  createTestDatabase,
  postgresAvailable,
  waitFor,
  type TestDatabase,
} from "./store-fixture.js";

const PG = await postgresAvailable();
const HOST = "whoami.localhost";
const POLICY = `@id("eng")\npermit (principal in Group::"eng", action, resource == App::"whoami");\n`;

/** A TCP relay to PostgreSQL that can be cut like a network partition. */
class Relay {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  blocked = false;
  constructor(target: { host: string; port: number }) {
    this.#server = createServer((client) => {
      this.#sockets.add(client);
      client.on("close", () => this.#sockets.delete(client));
      client.on("error", () => undefined);
      if (this.blocked) return; // black hole: accepted, never answered
      const up = connect(target.port, target.host);
      this.#sockets.add(up);
      up.on("close", () => this.#sockets.delete(up));
      up.on("error", () => client.destroy());
      client.on("error", () => up.destroy());
      client.pipe(up).pipe(client);
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.#server.listen(0, "127.0.0.1", r));
    return (this.#server.address() as AddressInfo).port;
  }
  block(): void {
    this.blocked = true;
    for (const s of this.#sockets) s.destroy();
  }
  unblock(): void {
    this.blocked = false;
    for (const s of this.#sockets) s.destroy(); // drop the black-holed ones
  }
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise((r) => this.#server.close(r));
  }
}

describe.runIf(PG)("a replica partitioned from PostgreSQL", () => {
  let db: TestDatabase;
  let relay: Relay;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let zt: UpProcess;
  let config: string;
  let direct: Record<string, string>;
  let cookie: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    const admin = new URL(ADMIN_URL);
    relay = new Relay({ host: admin.hostname, port: Number(admin.port || 5432) });
    const relayPort = await relay.listen();
    const viaRelay = new URL(db.url);
    viaRelay.hostname = "127.0.0.1";
    viaRelay.port = String(relayPort);
    viaRelay.searchParams.set("connect_timeout", "2");
    viaRelay.searchParams.set("statement_timeout", "2000");
    upstream = await startRecordingUpstream();
    const base = {
      ZT_MASTER_KEY: randomBytes(32).toString("base64"),
      ZT_LISTEN__PROXY: "127.0.0.1:0",
      ZT_LISTEN__API: "127.0.0.1:0",
    };
    direct = { ...base, ZT_DATABASE_URL: db.url };
    config = writeConfig(
      tempDir("zt-partition-"),
      `data_dir: ./data\ntrust_domain: partition.test\npolicies: ./policies\nroutes:\n  - name: whoami\n    from: http://${HOST}:8443\n    to: http://127.0.0.1:${upstream.port}\n`,
      { "main.cedar": POLICY },
    );
    expect((await runZt(["--config", config, "init"], { env: direct })).code).toBe(0);
    const add = await runZt(
      [
        "--config",
        config,
        "user",
        "add",
        "erin",
        "--group",
        "eng",
        "--password-stdin",
        "--no-qr",
        "--json",
      ],
      {
        env: direct,
        input: "pw-erin-correct-horse\n",
      },
    );
    expect(add.code, add.stderr).toBe(0);
    const secret = (JSON.parse(add.stdout) as { totp_secret: string }).totp_secret;
    zt = await startZtUp(["--config", config, "up"], {
      env: { ...base, ZT_DATABASE_URL: viaRelay.toString() },
    });
    const code = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret) }).generate();
    const l = await login(
      Number(new URL(zt.pepUrl).port),
      HOST,
      "erin",
      "pw-erin-correct-horse",
      code,
    );
    expect(l.status, JSON.stringify(l.body)).toBe(200);
    cookie = l.cookie!;
  });

  afterAll(async () => {
    relay?.unblock();
    await zt?.stop();
    await relay?.close();
    await upstream?.close();
    await db?.drop();
  });

  const pep = () =>
    request(Number(new URL(zt.pepUrl).port), {
      host: HOST,
      path: "/",
      headers: { cookie, accept: "application/json" },
    });
  const readyz = async () => {
    const u = new URL(zt.apiUrl);
    const r = await request(Number(u.port), { host: u.host, path: "/readyz" });
    return { status: r.status, body: r.json<{ status: string; checks: Record<string, string> }>() };
  };

  it("keeps deciding from memory, reports degraded, and enforces what it missed once the partition heals", async () => {
    try {
      await partition();
    } catch (e) {
      throw new Error(
        `${(e as Error).message} (zt exit ${zt.child.exitCode} ${zt.child.signalCode})\n--- zt up output ---\n${zt.output()}`,
        { cause: e },
      );
    }
  });

  async function partition(): Promise<void> {
    expect((await pep()).status).toBe(200);
    expect((await readyz()).status).toBe(200);

    relay.block();
    await waitFor(
      async () => (await readyz()).status === 503,
      "/readyz to report degraded",
      60_000,
    );
    const degraded = await readyz();
    expect(degraded.body.status).toBe("degraded");
    expect(degraded.body.checks["store"]).toBe("store-degraded");
    // cached state: the known session is still decided (and allowed) locally
    expect((await pep()).status).toBe(200);

    // Revoked meanwhile through a path that still reaches the database.
    const revoke = await runZt(["--config", config, "session", "revoke", "--user", "erin"], {
      env: direct,
    });
    expect(revoke.code, revoke.stderr).toBe(0);
    // Unheard while partitioned: the window max_staleness bounds.
    expect((await pep()).status).toBe(200);

    relay.unblock();
    // When the missed revocation lands, continuous verification cuts the session's requests
    // in flight: a request of this loop may be reset rather than answered — that is the
    // revocation enforced too, so a reset counts as "not yet 401" and the loop asks again.
    const statusOrCut = async (): Promise<number> => {
      try {
        return (await pep()).status;
      } catch (e) {
        if ((e as { code?: string }).code === "ECONNRESET") return 0;
        throw e;
      }
    };
    await waitFor(
      async () => (await statusOrCut()) === 401,
      "the missed revocation to be enforced after the partition heals",
      60_000,
    );
    await waitFor(async () => (await readyz()).status === 200, "/readyz to be ready again", 60_000);
  }
});
