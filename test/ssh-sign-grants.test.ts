/**
 * `ssh:sign` sees just-in-time grants and break-glass, on both storage engines (SQLite
 * and PostgreSQL): it used to be asked with `context.grants = []` and
 * `context.breakglass = false` always, so a policy permitting SSH with a grant never
 * matched and `zt access` / `zt breakglass` did nothing for SSH. Host groups are
 * requestable resources (`HostGroup::"prod"`); an allow that relied on a grant yields a
 * certificate that ends no later than the grant; a revoked or expired grant refuses
 * signing again. Keys from the real ssh-keygen, certificates read back by it; time from
 * an injected clock.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import { isZtError } from "../src/core/errors.js";
import { loadConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { identityService } from "../src/identity/index.js";
import { AccessService, grantContext, parseAccessConfig } from "../src/access/index.js";
import { initPki, pkiService, type PkiService } from "../src/pki/index.js";
import { engineConfigYaml, engines, type Engine, type EngineTarget } from "./store-fixture.js";

const ENGINES = await engines();
const HOUR = 3_600_000;

const POLICIES = `
@id("prod-ssh-with-grant")
permit (principal, action == Action::"ssh:sign", resource == HostGroup::"prod")
when { context.grants.contains("prod") };

@id("db-ssh-with-db-and-pci-grants")
permit (principal, action == Action::"ssh:sign", resource == HostGroup::"db")
when { context.grants.contains("db") && context.grants.contains("pci") };

@id("breakglass")
@reason("breakglass")
permit (principal, action, resource)
when { context.breakglass };
`;

const config = (t: EngineTarget) =>
  engineConfigYaml(
    t,
    `trust_domain: grants.test
policies: ${join(t.storeOptions.dataDir, "policies")}
access:
  resources:
    'HostGroup::"prod"': { approvers: sre, max_ttl: 2h }
    'HostGroup::"staging"': { approvers: sre }
    'HostGroup::"db"': { approvers: sre, max_ttl: 4h }
    'HostGroup::"pci"': { approvers: sre, max_ttl: 4h }
    prod: { approvers: sre }
  breakglass:
    accounts: [oncall]
    resources: ['HostGroup::"prod"']
    ttl: 1h
`,
  );

describe.each(ENGINES)("ssh:sign with grants on $name", (engine: Engine) => {
  let target: EngineTarget;
  let ctx: AppContext;
  let clock: ManualClock;
  let access: AccessService;
  let pki: PkiService;
  let pub: string;

  beforeAll(async () => {
    target = await engine.fresh();
    const dir = target.storeOptions.dataDir;
    mkdirSync(join(dir, "policies"));
    writeFileSync(join(dir, "policies", "ssh.cedar"), POLICIES);
    writeFileSync(join(dir, "zt.yaml"), config(target));
    clock = new ManualClock(Date.UTC(2026, 5, 1, 12));
    ctx = await openAppContext(loadConfig(join(dir, "zt.yaml"), { env: {} }), {
      clock,
      env: {},
      create: true,
    });
    const ids = identityService(ctx);
    for (const [name, groups] of [
      ["alice", ["eng"]],
      ["sam", ["sre"]],
      ["oncall", ["eng"]],
    ] as const)
      await ids.addUser({ name, groups: [...groups], password: "pw-correct-horse-battery" });
    await initPki(ctx);
    pki = await pkiService(ctx);
    access = new AccessService(ctx);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
    pub = readFileSync(join(dir, "id.pub"), "utf8");
  }, 60_000);

  afterAll(async () => {
    await ctx?.close();
    await target?.cleanup();
  });

  const sign = (user: string, hostGroup = "prod", ttlMs?: number) =>
    pki.ssh.signUser({
      publicKey: pub,
      user,
      hostGroup,
      principals: [user],
      actor: "test",
      ...(ttlMs !== undefined ? { ttlMs } : {}),
    });

  /** The refusal of a sign request: code, reason and decision id. */
  async function refusal(p: Promise<unknown>) {
    try {
      await p;
    } catch (e) {
      if (!isZtError(e)) throw e;
      return { code: e.code, reason: e.context["reason"], decisionId: e.context["decision_id"] };
    }
    throw new Error("expected the signing to be refused");
  }

  /** ssh-keygen's reading of the certificate: key id and end of validity (ms). */
  function readCert(line: string) {
    const file = join(target.storeOptions.dataDir, "id-cert.pub");
    writeFileSync(file, line);
    const text = execFileSync("ssh-keygen", ["-L", "-f", file], {
      encoding: "utf8",
      env: { ...process.env, TZ: "UTC" },
    });
    const valid = /Valid: from (\S+) to (\S+)/.exec(text);
    return {
      text,
      keyId: /Key ID: "([^"]*)"/.exec(text)?.[1],
      validTo: Date.parse(`${valid![2]}Z`),
    };
  }

  /** What the real ssh-keygen says of a certificate against the current KRL (`ssh-keygen -Q`). */
  async function krlSays(line: string): Promise<string> {
    const krl = join(target.storeOptions.dataDir, "zt.krl");
    const file = join(target.storeOptions.dataDir, "checked-cert.pub");
    writeFileSync(krl, await pki.ssh.krl());
    writeFileSync(file, line);
    const r = spawnSync("ssh-keygen", ["-Q", "-f", krl, file], { encoding: "utf8" });
    return r.stdout + r.stderr;
  }

  async function lastAudit(kind: string) {
    await ctx.audit.flush();
    const row = await ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", kind)
      .orderBy("seq", "desc")
      .executeTakeFirstOrThrow();
    return { ...row, data: JSON.parse(row.data ?? "{}") as Record<string, unknown> };
  }

  async function grant(user: string, resource: string, ttlMs: number) {
    const r = await access.request({ user, resource, reason: "INC-9 deploy fix", ttlMs });
    return access.approve(r.id, "sam");
  }

  it("refuses without a grant, with the decision id and the reason (audited)", async () => {
    const r = await refusal(sign("alice"));
    expect(r).toMatchObject({ code: "ZT_POLICY_DENIED", reason: "no-matching-permit" });
    expect(r.decisionId).toMatch(/^dec_/);
    const audit = await lastAudit("ssh.sign");
    expect(audit).toMatchObject({ outcome: "deny", decision_id: r.decisionId });
  });

  it('does not count a grant to an App, or to another host group, as one to HostGroup::"prod"', async () => {
    const app = await grant("alice", "prod", HOUR);
    const staging = await grant("alice", 'HostGroup::"staging"', HOUR);
    expect(app.resource).toBe("prod");
    expect(staging.resource).toBe('HostGroup::"staging"');
    expect(await refusal(sign("alice"))).toMatchObject({ code: "ZT_POLICY_DENIED" });
    await access.revoke(app.id, "sam");
    await access.revoke(staging.id, "sam");
  });

  it("signs with an approved grant, the certificate ending no later than the grant; after revoke refuses and lists it in the KRL", async () => {
    const g = await grant("alice", 'HostGroup::"prod"', 30 * 60_000);
    expect(g).toMatchObject({ status: "approved", resource: 'HostGroup::"prod"' });
    const signed = await sign("alice", "prod", 8 * HOUR);
    const cert = readCert(signed.certLine);
    expect(cert.validTo).toBeLessThanOrEqual(g.expiresAt!);
    expect(signed.validBeforeMs).toBeLessThanOrEqual(g.expiresAt!);
    expect(cert.keyId).toBe(
      `zt:user=alice decision=${signed.decisionId} grant=${g.id} serial=${signed.serial}`,
    );
    const audit = await lastAudit("ssh.sign");
    expect(audit).toMatchObject({ outcome: "success", decision_id: signed.decisionId });
    expect(audit.data).toMatchObject({
      grants: [g.id],
      grant: { id: g.id, kind: "jit", expires_at: g.expiresAt },
      ttl_clamped_to_grant: true,
    });

    // Shorter than the grant: not shortened, still bound to it.
    const short = await sign("alice", "prod", 10 * 60_000);
    expect(short.validBeforeMs).toBe(Math.floor((clock.now() + 10 * 60_000) / 1000) * 1000);
    expect((await lastAudit("ssh.sign")).data).toMatchObject({ ttl_clamped_to_grant: false });

    expect(await krlSays(signed.certLine)).toMatch(/: ok$/m);
    await access.revoke(g.id, "sam");
    // Certificates issued under the grant are in the KRL from then on.
    expect(await krlSays(signed.certLine)).toMatch(/: REVOKED$/m);
    expect(await krlSays(short.certLine)).toMatch(/: REVOKED$/m);
    const after = await refusal(sign("alice"));
    expect(after).toMatchObject({ code: "ZT_POLICY_DENIED", reason: "no-matching-permit" });
    expect(after.decisionId).toMatch(/^dec_/);
  });

  // The key id used to name only the grant ending first, and the KRL read it from there:
  // revoking another grant the allow needed left the certificate valid until it expired.
  it("revokes a certificate when any grant it relied on is revoked, not only the one ending first", async () => {
    const pci = await grant("alice", 'HostGroup::"pci"', 30 * 60_000);
    const db = await grant("alice", 'HostGroup::"db"', 3 * HOUR);
    const app = await grant("alice", "prod", HOUR); // an App grant: not in ssh:sign's context
    const signed = await sign("alice", "db", 8 * HOUR);
    expect(signed.validBeforeMs).toBeLessThanOrEqual(pci.expiresAt!);
    const cert = readCert(signed.certLine);
    expect(cert.keyId).toBe(
      `zt:user=alice decision=${signed.decisionId} grant=${pci.id},${db.id} serial=${signed.serial}`,
    );
    const audit = (await lastAudit("ssh.sign")).data;
    expect(audit).toMatchObject({ grant: { id: pci.id } });
    expect([...(audit["grants"] as string[])].sort()).toEqual([pci.id, db.id].sort());
    expect(await krlSays(signed.certLine)).toMatch(/: ok$/m);
    await access.revoke(app.id, "sam");
    expect(await krlSays(signed.certLine)).toMatch(/: ok$/m);
    // The grant that ends last, not named first: the allow needed it all the same.
    await access.revoke(db.id, "sam");
    expect(await krlSays(signed.certLine)).toMatch(/: REVOKED$/m);
    expect(await refusal(sign("alice", "db"))).toMatchObject({ code: "ZT_POLICY_DENIED" });
    await access.revoke(pci.id, "sam");
    expect(await krlSays(signed.certLine)).toMatch(/: REVOKED$/m);
  });

  it("refuses once the grant has expired, before any expiry pass has marked it", async () => {
    const g = await grant("alice", 'HostGroup::"prod"', 20 * 60_000);
    expect((await sign("alice", "prod", HOUR)).validBeforeMs).toBeLessThanOrEqual(g.expiresAt!);
    clock.advance(20 * 60_000);
    expect((await access.get(g.id)).status).toBe("approved");
    expect(await refusal(sign("alice"))).toMatchObject({ code: "ZT_POLICY_DENIED" });
  });

  it("keeps revoking a certificate whose grants were not recorded (signed before, or by an older replica): its key id names them", async () => {
    const g = await grant("alice", 'HostGroup::"prod"', 30 * 60_000);
    const signed = await sign("alice", "prod", HOUR);
    // As a zt from before migration 0009 leaves it: the key id's `grant=` the only record.
    await ctx.store.db
      .deleteFrom("pki_ssh_cert_grants")
      .where("serial", "=", signed.serial)
      .execute();
    expect(await krlSays(signed.certLine)).toMatch(/: ok$/m);
    await access.revoke(g.id, "sam");
    expect(await krlSays(signed.certLine)).toMatch(/: REVOKED$/m);
  });

  it("passes break-glass for the host group: signed, ending with the break-glass, audited", async () => {
    expect(await refusal(sign("oncall"))).toMatchObject({ code: "ZT_POLICY_DENIED" });
    const bg = await access.breakglass({
      user: "oncall",
      resource: 'HostGroup::"prod"',
      reason: "primary down, INC-7",
    });
    const signed = await sign("oncall", "prod", 8 * HOUR);
    expect(signed.validBeforeMs).toBeLessThanOrEqual(bg.expiresAt!);
    expect(readCert(signed.certLine).validTo).toBeLessThanOrEqual(bg.expiresAt!);
    const audit = await lastAudit("ssh.sign");
    expect(audit.policies).toContain("breakglass");
    expect(audit.data).toMatchObject({
      breakglass: true,
      grant: { id: bg.id, kind: "breakglass" },
      ttl_clamped_to_grant: true,
    });
    // Only for that host group.
    expect(await refusal(sign("oncall", "staging"))).toMatchObject({ code: "ZT_POLICY_DENIED" });
    await access.revoke(bg.id, "oncall");
    expect(await refusal(sign("oncall"))).toMatchObject({ code: "ZT_POLICY_DENIED" });
  });
});

describe("host groups as access resources", () => {
  it("configures App and HostGroup resources under one key each, refusing a resource listed twice", () => {
    const c = parseAccessConfig({
      resources: {
        'App::"db-admin"': { approvers: "dba" },
        'HostGroup::"prod"': { approvers: "sre" },
      },
      breakglass: { resources: ['HostGroup::"prod"', 'App::"db-admin"'] },
    });
    expect(Object.keys(c.resources).sort()).toEqual(['HostGroup::"prod"', "db-admin"]);
    expect(c.breakglass.resources).toEqual(['HostGroup::"prod"', "db-admin"]);
    expect(() =>
      parseAccessConfig({
        resources: { "db-admin": { approvers: "a" }, 'App::"db-admin"': { approvers: "b" } },
      }),
    ).toThrow(/listed twice/);
    expect(() => parseAccessConfig({ resources: { 'User::"x"': { approvers: "a" } } })).toThrow(
      /access\.resources/,
    );
  });

  it("keeps host-group grants out of the PEP's context.grants", () => {
    const now = 1_000;
    expect(
      grantContext(
        [
          { kind: "jit", resource: "db-admin", expiresAt: 2_000 },
          { kind: "jit", resource: 'HostGroup::"db-admin"', expiresAt: 2_000 },
          { kind: "breakglass", resource: 'HostGroup::"db-admin"', expiresAt: 2_000 },
        ],
        "db-admin",
        now,
      ),
    ).toEqual({ grants: ["db-admin"], breakglass: false });
  });
});
