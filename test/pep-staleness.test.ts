/**
 * Fail closed after `max_staleness`, and the break-glass banner, through `zt up` in
 * process (ManualClock) and real HTTP over loopback.
 *
 * Staleness: the event bus's `lastContactMs()` is stubbed to age from a chosen instant.
 * The stub stands in for an unreachable PostgreSQL (the bus stops hearing from the
 * store while the clock moves on); `test/scale-partition.test.ts` cuts a real
 * PostgreSQL off and watches `lastContactMs()` grow. Here the subject is what the PEP
 * and `/readyz` do with that age.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/core/clock.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { request } from "./helpers/http-client.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";
import { testSession } from "./helpers/test-session.js";

const POLICY = `
@id("eng-whoami")
permit (principal in Group::"eng", action == Action::"GET", resource == App::"whoami");

@id("breakglass")
permit (principal, action, resource)
when { context.breakglass };
`;

describe("PEP staleness and break-glass banner (zt up in process)", () => {
  let zt: RunningZt;
  let port: number;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  const clock = new ManualClock(Date.now());
  const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
  /** When set, the store has been unreachable since this instant (clock ms). */
  let unreachableSince: number | undefined;
  const cookies: Record<string, string> = {};

  const get = (host: string, cookie: string) =>
    request(port, { host, path: "/", headers: { cookie, accept: "application/json" } });
  const readyz = async () => {
    const r = await fetch(`http://127.0.0.1:${zt.apiAddress.port}/readyz`);
    return {
      status: r.status,
      body: (await r.json()) as { status: string; checks?: Record<string, string> },
    };
  };

  async function until(what: string, check: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < 300; i++) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`timed out waiting for: ${what}`);
  }

  beforeAll(async () => {
    const dir = tempDir();
    upstream = await startRecordingUpstream();
    const to = `http://127.0.0.1:${upstream.port}`;
    const config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: stale.test
max_staleness: 2m
routes:
  - { name: whoami, from: "http://whoami.localhost", to: "${to}" }
  - { name: db-admin, from: "http://db.localhost", to: "${to}" }
policies: ./policies
access:
  resources:
    db-admin: { approvers: dba-leads, approvals: 1, max_ttl: 4h }
  breakglass: { accounts: [oncall], resources: [db-admin], ttl: 30m }
`,
      { "main.cedar": POLICY },
    );
    zt = await runUp({ configPath: config, env, clock, out: () => undefined });
    port = zt.pepAddress.port;
    const bus = zt.ctx.events;
    const real = bus.lastContactMs.bind(bus);
    bus.lastContactMs = () =>
      unreachableSince === undefined ? real() : Math.max(0, clock.now() - unreachableSince);
    for (const [name, groups] of [
      ["alice", ["eng"]],
      ["oncall", ["sre"]],
    ] as const) {
      const r = await zt.services.identity.addUser({
        name,
        groups: [...groups],
        password: "pw-correct-horse-battery",
      });
      await zt.services.snapshot.refreshUser(r.user.id);
      const { token } = await testSession(zt.services.sessions, r.user.id);
      cookies[name] = `${zt.ctx.config.session.cookie_name}=${token}`;
    }
  }, 60_000);

  afterAll(async () => {
    unreachableSince = undefined;
    await zt?.close();
    await upstream?.close();
  });

  it("keeps deciding while degraded, denies everything once max_staleness has passed, and recovers", async () => {
    expect((await get("whoami.localhost", cookies["alice"]!)).status).toBe(200);
    expect((await readyz()).body).toMatchObject({ status: "ready", checks: { store: "ok" } });

    unreachableSince = clock.now();
    clock.advance(10_000);
    // Degraded: still deciding from the last good state, but /readyz says so.
    expect((await get("whoami.localhost", cookies["alice"]!)).status).toBe(200);
    const degraded = await readyz();
    expect(degraded.status).toBe(503);
    expect(degraded.body).toMatchObject({
      status: "degraded",
      checks: { store: "store-degraded" },
    });

    clock.advance(2 * 60_000);
    const denied = await get("whoami.localhost", cookies["alice"]!);
    expect(denied.status).toBe(403);
    const err = denied.json<{ error: { reason: string; decision_id: string } }>().error;
    expect(err.reason).toBe("control-plane-unreachable");
    expect(err.decision_id).toMatch(/^dec_/);
    const stale = await readyz();
    expect(stale.status).toBe(503);
    expect(stale.body).toMatchObject({ status: "degraded", checks: { store: "store-stale" } });
    await zt.ctx.audit.flush();
    const row = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("decision_id", "=", err.decision_id)
      .executeTakeFirstOrThrow();
    expect(row.outcome).toBe("deny");
    expect(row.reason).toBe("control-plane-unreachable");

    // Contact returns: decisions resume.
    unreachableSince = clock.now();
    expect((await get("whoami.localhost", cookies["alice"]!)).status).toBe(200);
    unreachableSince = undefined;
    // The real bus polls again (every 50 ms on SQLite) and catches up with the clock.
    await until(
      "real store contact",
      async () => (await readyz()).body["checks"]?.["store"] === "ok",
    );
  });

  it("marks responses allowed under an active break-glass grant with X-Zt-Breakglass", async () => {
    const normal = await get("whoami.localhost", cookies["alice"]!);
    expect(normal.status).toBe(200);
    expect(normal.headers["x-zt-breakglass"]).toBeUndefined();
    expect((await get("db.localhost", cookies["oncall"]!)).status).toBe(403);

    await zt.continuous.access.breakglass({
      user: "oncall",
      resource: 'App::"db-admin"',
      reason: "primary db down, INC-9",
    });
    await until(
      "break-glass heard",
      async () => (await get("db.localhost", cookies["oncall"]!)).status === 200,
    );
    const r = await get("db.localhost", cookies["oncall"]!);
    expect(r.status).toBe(200);
    expect(r.headers["x-zt-breakglass"]).toBe("active");
    // The upstream does not see the banner; it is for the user.
    expect(upstream.seen.at(-1)!.headers["x-zt-breakglass"]).toBeUndefined();
    // Forward-auth mode (nginx auth_request) answers with the same header.
    const fa = await request(port, {
      host: "db.localhost",
      path: "/.zt/authz",
      headers: {
        cookie: cookies["oncall"]!,
        accept: "application/json",
        "x-original-url": "http://db.localhost/",
        "x-original-method": "GET",
      },
    });
    expect(fa.status).toBe(200);
    expect(fa.headers["x-zt-breakglass"]).toBe("active");
    const faNormal = await request(port, {
      host: "whoami.localhost",
      path: "/.zt/authz",
      headers: {
        cookie: cookies["alice"]!,
        "x-original-url": "http://whoami.localhost/",
        "x-original-method": "GET",
      },
    });
    expect(faNormal.status).toBe(200);
    expect(faNormal.headers["x-zt-breakglass"]).toBeUndefined();
  });
});
