/**
 * Just-in-time access: approvals (never self-approval, approver group only, two
 * approvers when configured), time-boxed grants visible as context.grants that end
 * on their own (injected clock), revocation, and webhook notifications received by a
 * real local HTTP server.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/core/clock.js";
import { ZtError } from "../src/core/errors.js";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import {
  AccessService,
  GrantCache,
  grantContext,
  parseAccessConfig,
  parseResource,
} from "../src/access/index.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { startWebhookReceiver, type WebhookReceiver } from "./helpers/webhook-receiver.js";

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ZtError);
  expect((err as ZtError).code).toBe(code);
}

describe("JIT access approvals and grants", () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 2, 10, 0, 0));
  let ctx: AppContext;
  let access: AccessService;
  let hooks: WebhookReceiver<Record<string, unknown>>;

  beforeAll(async () => {
    hooks = await startWebhookReceiver();
    const dir = tempDir("zt-access-");
    const path = writeConfig(
      dir,
      `data_dir: ./data
routes:
  - { name: db-admin, from: "http://db.localhost:8443", to: "http://127.0.0.1:9" }
  - { name: payroll, from: "http://payroll.localhost:8443", to: "http://127.0.0.1:9" }
access:
  max_ttl: 8h
  resources:
    db-admin: { approvers: dba-leads, max_ttl: 2h }
    payroll: { approvers: finance-leads, approvals: 2 }
notifications: { webhook: "${hooks.url}" }
`,
      {},
    );
    ctx = await openAppContext(loadConfig(path, { env: {} }), { clock, env: {}, create: true });
    const ids = identityService(ctx);
    for (const [name, groups] of [
      ["alice", ["eng"]],
      ["lead", ["dba-leads"]],
      ["lead2", ["dba-leads", "eng"]],
      ["fin1", ["finance-leads"]],
      ["fin2", ["finance-leads"]],
      ["mallory", ["eng"]],
    ] as const) {
      await ids.addUser({ name, groups: [...groups], password: "pw-correct-horse-battery" });
    }
    access = new AccessService(ctx);
  }, 60_000);

  afterAll(async () => {
    await ctx?.close();
    await hooks?.close();
  });

  it('parses resources as App::"name" or a bare name, and refuses anything else', () => {
    expect(parseResource('App::"db-admin"')).toBe("db-admin");
    expect(parseResource("db-admin")).toBe("db-admin");
    for (const bad of ['User::"x"', 'App::"DB"', "", 'App::"a" || true'])
      expect(() => parseResource(bad)).toThrow(ZtError);
  });

  it("refuses unknown resources, bad reasons and TTLs over the resource's maximum", async () => {
    await expectCode(
      access.request({ user: "alice", resource: "whoami", reason: "because", ttlMs: 60_000 }),
      "ZT_BAD_REQUEST",
    );
    await expectCode(
      access.request({ user: "alice", resource: "db-admin", reason: "x", ttlMs: 60_000 }),
      "ZT_BAD_REQUEST",
    );
    await expectCode(
      access.request({
        user: "alice",
        resource: "db-admin",
        reason: "long one",
        ttlMs: 3 * 3_600_000,
      }),
      "ZT_BAD_REQUEST",
    );
    await expectCode(
      access.request({ user: "nobody", resource: "db-admin", reason: "because", ttlMs: 60_000 }),
      "ZT_USER_NOT_FOUND",
    );
  });

  it("never lets a requester approve their own request, even from the approver group", async () => {
    const r = await access.request({
      user: "lead2",
      resource: "db-admin",
      reason: "own request",
      ttlMs: 3_600_000,
    });
    await expectCode(access.approve(r.id, "lead2"), "ZT_ACCESS_SELF_APPROVAL");
    await expectCode(access.approve(r.id, "mallory"), "ZT_ACCESS_NOT_APPROVER");
    expect((await access.get(r.id)).status).toBe("pending");
    const ok = await access.approve(r.id, "lead");
    expect(ok.status).toBe("approved");
    await expectCode(access.approve(r.id, "lead"), "ZT_ACCESS_STATE");
  });

  it("needs two distinct approvers when the resource says so", async () => {
    const r = await access.request({
      user: "alice",
      resource: 'App::"payroll"',
      reason: "quarter close",
      ttlMs: 3_600_000,
    });
    const one = await access.approve(r.id, "fin1");
    expect(one.status).toBe("pending");
    expect(one.approvals.map((a) => a.by)).toEqual(["fin1"]);
    await expectCode(access.approve(r.id, "fin1"), "ZT_ACCESS_STATE");
    const two = await access.approve(r.id, "fin2");
    expect(two.status).toBe("approved");
    expect(two.expiresAt).toBe(clock.now() + 3_600_000);
  });

  it("turns an approval into a grant in context.grants that ends on its own", async () => {
    const grants = new GrantCache(ctx);
    await grants.load();
    const r = await access.request({
      user: "alice",
      resource: "db-admin",
      reason: "INC-1 fix",
      ttlMs: 3_600_000,
    });
    const facts = { principal: { type: "User", id: "alice" }, route: "db-admin" };
    expect(grants.contribute(facts)?.["grants"] ?? []).not.toContain("db-admin");
    await access.approve(r.id, "lead");
    await grants.refresh(r.id);
    expect(grants.contribute(facts)).toMatchObject({
      grants: expect.arrayContaining(["db-admin", "payroll"]),
      breakglass: false,
    });
    expect(grants.nextExpiry()).toBe(clock.now() + 3_600_000);
    clock.advance(3_600_000);
    // At the expiry instant the grant is gone from decisions, before any timer runs.
    expect(grants.contribute(facts)).toMatchObject({ grants: [] });
    const expired = await access.expireDue();
    expect(expired.map((e) => e.id)).toContain(r.id);
    expect((await access.get(r.id)).status).toBe("expired");
    expect(grants.dropExpired(clock.now())).toContain("alice");
  });

  it("revokes an active grant at once, and only the requester or an approver may", async () => {
    const r = await access.request({
      user: "alice",
      resource: "db-admin",
      reason: "another fix",
      ttlMs: 600_000,
    });
    await access.approve(r.id, "lead");
    await expectCode(access.revoke(r.id, "mallory"), "ZT_ACCESS_NOT_APPROVER");
    const done = await access.revoke(r.id, "alice");
    expect(done.status).toBe("revoked");
    const denied = await access.request({
      user: "alice",
      resource: "db-admin",
      reason: "and again",
      ttlMs: 600_000,
    });
    expect((await access.deny(denied.id, "lead")).status).toBe("denied");
  });

  it("audits every step and notifies the webhook", async () => {
    await ctx.audit.flush();
    const events = hooks.received.map((h) => h["event"]);
    for (const e of [
      "access.requested",
      "access.approval",
      "access.approved",
      "access.expired",
      "access.revoked",
      "access.denied",
    ])
      expect(events).toContain(e);
    const rows = await ctx.store.db
      .selectFrom("audit_events")
      .select(["kind", "reason"])
      .where("kind", "like", "access.%")
      .execute();
    expect(rows.some((r) => r.kind === "access.approve" && r.reason === "self-approval")).toBe(
      true,
    );
    expect(rows.filter((r) => r.kind === "access.approved").length).toBeGreaterThanOrEqual(3);
  });

  it("computes context.grants / context.breakglass purely from grants and time", () => {
    const gs = [
      { id: "1", kind: "jit" as const, resource: "db-admin", expiresAt: 100 },
      { id: "2", kind: "breakglass" as const, resource: "prod", expiresAt: 200 },
    ];
    expect(grantContext(gs, "prod", 50)).toEqual({ grants: ["db-admin"], breakglass: true });
    expect(grantContext(gs, "db-admin", 50)).toEqual({ grants: ["db-admin"], breakglass: false });
    expect(grantContext(gs, "prod", 150)).toEqual({ grants: [], breakglass: true });
    expect(grantContext(gs, "prod", 200)).toEqual({ grants: [], breakglass: false });
  });

  it("names the config key path in errors", () => {
    expect(() => parseAccessConfig({ breakglass: { ttl: "2h" } })).toThrow(
      /access\.breakglass\.ttl/,
    );
    expect(() => parseAccessConfig({ resources: { "db-admin": { approvers: 3 } } })).toThrow(
      /access\.resources\.db-admin\.approvers/,
    );
    expect(() =>
      parseAccessConfig({ resources: { "db-admin": { approvers: "x", approvals: 3 } } }),
    ).toThrow(/access\.resources\.db-admin\.approvals/);
    expect(() => parseAccessConfig({ typo: 1 })).toThrow(/access/);
  });
});
