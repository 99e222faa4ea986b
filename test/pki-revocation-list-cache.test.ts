/**
 * The public, unauthenticated revocation lists — `GET /pki/ssh/krl` and the CRL of a
 * retired intermediate, `GET /pki/crl/<id>` — are served from memory: they used to be
 * rebuilt from the store on every request (five queries, one a LIKE scan, for the KRL;
 * a query and a signature for the CRL), so anyone reaching the API could make the store
 * do that work at line rate. Many requests now cause one build (counted by
 * `zt_pki_revocation_list_builds_total` on /metrics), and the list stays as fresh as
 * before: a revocation (SSH certificate, SSH key, a grant a certificate relied on, an
 * X.509 certificate of the retired intermediate) is in the very next response, on this
 * replica at once and on another one as soon as it has heard the event. Over real HTTP
 * to `zt up`, on SQLite and PostgreSQL; the lists read by the real `ssh-keygen -Q` and
 * `openssl crl`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { loadConfig } from "../src/config/index.js";
import { AccessService } from "../src/access/index.js";
import { initPki, PkiService, pkiService } from "../src/pki/index.js";
import { identityService } from "../src/identity/index.js";
import { pruneEvents, StoreEventBus } from "../src/events/index.js";
import type { Store } from "../src/store/index.js";
import { ReadGate } from "./helpers/read-gate.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { addUsers, LOOPBACK_LISTEN_ENV } from "./helpers/zt-up-in-process.js";
import {
  createTestDatabase,
  engineConfigYaml,
  engines,
  perTestTargets,
  postgresAvailable,
  waitFor,
  type Engine,
  type EngineTarget,
  type TestDatabase,
} from "./store-fixture.js";

const ENGINES = await engines();
const PG = await postgresAvailable();
const HOUR = 3_600_000;

const POLICIES = `
@id("staging-ssh")
permit (principal in Group::"eng", action == Action::"ssh:sign", resource == HostGroup::"staging");

@id("prod-ssh-with-grant")
permit (principal, action == Action::"ssh:sign", resource == HostGroup::"prod")
when { context.grants.contains("prod") };
`;

const ACCESS = `access:
  resources:
    'HostGroup::"prod"': { approvers: sre, max_ttl: 2h }
`;

/** `zt_pki_revocation_list_builds_total{list}` as the API's /metrics reports it (0 when absent). */
async function builds(base: string, list: "ssh-krl" | "x509-crl"): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = new RegExp(
    `^zt_pki_revocation_list_builds_total\\{list="${list}"\\} (\\d+)$`,
    "m",
  ).exec(text);
  return m ? Number(m[1]) : 0;
}

async function get(url: string): Promise<Buffer> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

/** `count` concurrent GETs, then `count` one after another; every body must be the same. */
async function hammer(url: string, count: number): Promise<Buffer> {
  const bodies = await Promise.all(Array.from({ length: count }, () => get(url)));
  for (let i = 0; i < count; i++) bodies.push(await get(url));
  for (const b of bodies) expect(b.equals(bodies[0]!)).toBe(true);
  return bodies[0]!;
}

/** What the real ssh-keygen says of each certificate against a KRL: `ok` or `REVOKED`. */
function krlSays(dir: string, krl: Buffer, certLines: Record<string, string>) {
  const krlFile = join(dir, "zt.krl");
  writeFileSync(krlFile, krl);
  const out: Record<string, string> = {};
  for (const [name, line] of Object.entries(certLines)) {
    const file = join(dir, `${name}-cert.pub`);
    writeFileSync(file, line);
    const r = spawnSync("ssh-keygen", ["-Q", "-f", krlFile, file], { encoding: "utf8" });
    out[name] = /: REVOKED$/m.test(r.stdout + r.stderr)
      ? "REVOKED"
      : /: ok$/m.test(r.stdout + r.stderr)
        ? "ok"
        : `unexpected: ${r.stdout}${r.stderr}`;
  }
  return out;
}

/** The serials `openssl crl` reads from a DER CRL (upper-case hex, as it prints them). */
function crlSerials(dir: string, der: Buffer): string[] {
  const file = join(dir, "list.crl");
  writeFileSync(file, der);
  const text = execFileSync("openssl", ["crl", "-inform", "DER", "-in", file, "-noout", "-text"], {
    encoding: "utf8",
  });
  expect(text).toContain("Certificate Revocation List");
  return [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.replace(/^(00)+/, ""));
}

function newSshKey(dir: string, name: string): string {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, name)]);
  return readFileSync(join(dir, `${name}.pub`), "utf8");
}

describe.each(ENGINES)("revocation lists served from memory on $name", (engine: Engine) => {
  let target: EngineTarget;
  let zt: RunningZt;
  let base: string;
  let pki: PkiService;
  let access: AccessService;
  let dir: string;

  beforeAll(async () => {
    target = await engine.fresh();
    dir = target.storeOptions.dataDir;
    zt = await runUp({
      configPath: writeConfig(
        dir,
        engineConfigYaml(target, `trust_domain: cache.test\n${ACCESS}`),
        { "ssh.cedar": POLICIES },
      ),
      env: LOOPBACK_LISTEN_ENV,
      clock: new ManualClock(Date.now()),
      out: () => undefined,
    });
    base = `http://127.0.0.1:${zt.apiAddress.port}`;
    await addUsers(zt, [
      ["alice", ["eng"]],
      ["sam", ["sre"]],
    ]);
    pki = await pkiService(zt.ctx);
    access = new AccessService(zt.ctx);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await target?.cleanup();
  });

  it("GET /pki/ssh/krl: many requests, one build; a revoked certificate, key or grant is in the next response", async () => {
    const sign = (pub: string, hostGroup: string) =>
      pki.ssh.signUser({
        publicKey: pub,
        user: "alice",
        hostGroup,
        principals: ["alice"],
        actor: "test",
      });
    const bySerial = await sign(newSshKey(dir, "k1"), "staging");
    const byKeyPub = newSshKey(dir, "k2");
    const byKey = await sign(byKeyPub, "staging");
    const g = await access.approve(
      (
        await access.request({
          user: "alice",
          resource: 'HostGroup::"prod"',
          reason: "INC-7 fix prod",
          ttlMs: HOUR,
        })
      ).id,
      "sam",
    );
    const byGrant = await sign(newSshKey(dir, "k3"), "prod");
    const kept = await sign(newSshKey(dir, "k4"), "staging");
    const certs = {
      bySerial: bySerial.certLine,
      byKey: byKey.certLine,
      byGrant: byGrant.certLine,
      kept: kept.certLine,
    };
    const url = `${base}/pki/ssh/krl`;

    const b0 = await builds(base, "ssh-krl");
    const first = await hammer(url, 40);
    expect(await builds(base, "ssh-krl")).toBe(b0 + 1);
    expect(krlSays(dir, first, certs)).toEqual({
      bySerial: "ok",
      byKey: "ok",
      byGrant: "ok",
      kept: "ok",
    });
    // A request and its refusal change nothing the KRL reads: still no new build.
    const other = await access.request({
      user: "alice",
      resource: 'HostGroup::"prod"',
      reason: "INC-7 second look",
      ttlMs: HOUR,
    });
    await access.deny(other.id, "sam");
    await hammer(url, 10);
    expect(await builds(base, "ssh-krl")).toBe(b0 + 1);

    await pki.ssh.revoke({ serial: bySerial.serial, actor: "test" });
    expect(krlSays(dir, await get(url), certs)).toMatchObject({ bySerial: "REVOKED", byKey: "ok" });
    await hammer(url, 20);
    expect(await builds(base, "ssh-krl")).toBe(b0 + 2);

    await pki.ssh.revoke({ publicKey: byKeyPub, actor: "test" });
    expect(krlSays(dir, await get(url), certs)).toMatchObject({ byKey: "REVOKED", byGrant: "ok" });
    await hammer(url, 20);
    expect(await builds(base, "ssh-krl")).toBe(b0 + 3);

    await access.revoke(g.id, "sam");
    expect(krlSays(dir, await get(url), certs)).toEqual({
      bySerial: "REVOKED",
      byKey: "REVOKED",
      byGrant: "REVOKED",
      kept: "ok",
    });
    await hammer(url, 20);
    expect(await builds(base, "ssh-krl")).toBe(b0 + 4);
  });

  it("GET /pki/crl/<retired intermediate>: many requests, one build; a revocation is in the next response", async () => {
    const gone = await pki.issueSvidWithNewKey({
      spiffeId: "spiffe://cache.test/gone",
      actor: "t",
    });
    const kept = await pki.issueSvidWithNewKey({
      spiffeId: "spiffe://cache.test/kept",
      actor: "t",
    });
    const retired = pki.cas.activeIntermediate.id;
    await pki.rotateIntermediate("test");
    expect(pki.cas.activeIntermediate.id).not.toBe(retired);
    const url = `${base}/pki/crl/${retired}`;

    const b0 = await builds(base, "x509-crl");
    expect(crlSerials(dir, await hammer(url, 40))).toEqual([]);
    expect(await builds(base, "x509-crl")).toBe(b0 + 1);

    await pki.revoke({ serial: gone.serial, actor: "test", reason: "key-compromise" });
    const listed = crlSerials(dir, await get(url));
    expect(listed).toContain(gone.serial.toUpperCase().replace(/^(00)+/, ""));
    expect(listed).not.toContain(kept.serial.toUpperCase().replace(/^(00)+/, ""));
    // revoke() rebuilt the active intermediate's CRL; this one was built once more.
    const after = await builds(base, "x509-crl");
    expect(after).toBe(b0 + 3);
    await hammer(url, 20);
    expect(await builds(base, "x509-crl")).toBe(after);
  });
});

describe.runIf(PG)("two zt up replicas on one PostgreSQL: B's cached KRL", () => {
  let db: TestDatabase;
  const replicas: RunningZt[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    const masterKey = randomBytes(32).toString("base64");
    const clock = new ManualClock(Date.now());
    for (const name of ["a", "b"]) {
      const d = tempDir(`zt-krl-cache-${name}-`);
      mkdirSync(join(d, "data"), { recursive: true });
      const config = writeConfig(
        d,
        `data_dir: ${join(d, "data")}\ndatabase_url: "${db.url}"\ntrust_domain: cache.test\n${ACCESS}`,
        { "ssh.cedar": POLICIES },
      );
      replicas.push(
        await runUp({
          configPath: config,
          env: { ...LOOPBACK_LISTEN_ENV, ZT_MASTER_KEY: masterKey },
          clock,
          out: () => undefined,
        }),
      );
    }
  }, 60_000);

  afterAll(async () => {
    for (const r of replicas) await r.close();
    await db?.drop();
  });

  it("lists a certificate revoked on A, and one whose grant was revoked on A, once B has heard the event", async () => {
    const [a, b] = replicas as [RunningZt, RunningZt];
    const dir = tempDir("zt-krl-cache-keys-");
    await addUsers(a, [
      ["alice", ["eng"]],
      ["sam", ["sre"]],
    ]);
    const sa = await pkiService(a.ctx);
    const accessA = new AccessService(a.ctx);
    const sign = async (name: string, hostGroup: string) =>
      (
        await sa.ssh.signUser({
          publicKey: newSshKey(dir, name),
          user: "alice",
          hostGroup,
          principals: ["alice"],
          actor: "test",
        })
      ).certLine;
    const bySerial = await sa.ssh.signUser({
      publicKey: newSshKey(dir, "k1"),
      user: "alice",
      hostGroup: "staging",
      principals: ["alice"],
      actor: "test",
    });
    const g = await accessA.approve(
      (
        await accessA.request({
          user: "alice",
          resource: 'HostGroup::"prod"',
          reason: "INC-8 fix prod",
          ttlMs: HOUR,
        })
      ).id,
      "sam",
    );
    const certs = {
      bySerial: bySerial.certLine,
      byGrant: await sign("k2", "prod"),
      kept: await sign("k3", "staging"),
    };
    const baseB = `http://127.0.0.1:${b.apiAddress.port}`;
    const url = `${baseB}/pki/ssh/krl`;
    /** Waits until B's event bus has delivered every event committed so far. */
    const bHeardAll = async (what: string) => {
      const row = await a.ctx.store.db
        .selectFrom("events")
        .select((eb) => eb.fn.max("seq").as("max"))
        .executeTakeFirstOrThrow();
      const seq = Number(row.max);
      await waitFor(() => (b.ctx.events as StoreEventBus).lastSeq() >= seq, what);
    };

    await bHeardAll("B to hear the setup");
    // Only B serves the KRL here: the counter (one per process) counts B's builds.
    const b0 = await builds(baseB, "ssh-krl");
    expect(krlSays(dir, await hammer(url, 20), certs)).toEqual({
      bySerial: "ok",
      byGrant: "ok",
      kept: "ok",
    });
    expect(await builds(baseB, "ssh-krl")).toBe(b0 + 1);

    await sa.ssh.revoke({ serial: bySerial.serial, actor: "test" });
    await bHeardAll("B to hear the SSH revocation");
    expect(krlSays(dir, await get(url), certs)).toEqual({
      bySerial: "REVOKED",
      byGrant: "ok",
      kept: "ok",
    });

    await accessA.revoke(g.id, "sam");
    await bHeardAll("B to hear the grant's revocation");
    expect(krlSays(dir, await get(url), certs)).toEqual({
      bySerial: "REVOKED",
      byGrant: "REVOKED",
      kept: "ok",
    });
    await hammer(url, 20);
    expect(await builds(baseB, "ssh-krl")).toBe(b0 + 3);
  });
});

describe.each(ENGINES)("the cached KRL after an event resync on $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);

  it("lists a revocation whose event was pruned before this process heard it", async () => {
    const t = await target();
    const dir = t.storeOptions.dataDir;
    writeConfig(dir, engineConfigYaml(t, "trust_domain: cache.test\n"), { "ssh.cedar": POLICIES });
    const clock = new ManualClock(Date.now());
    const open = async (create: boolean): Promise<AppContext> => {
      const ctx = await openAppContext(loadConfig(join(dir, "zt.yaml"), { env: {} }), {
        clock,
        env: {},
        create,
      });
      cleanups.push(() => ctx.close());
      return ctx;
    };
    // A: the process that revokes. B: one whose event reader is suspended meanwhile.
    const a = await open(true);
    await initPki(a);
    const sa = await pkiService(a);
    const ctxB = await open(false);
    const gate = new ReadGate("events");
    const busB = new StoreEventBus({ ...ctxB.store, db: gate.wrap(ctxB.store.db) } as Store, {
      clock,
      resyncRetryMs: 10,
    });
    cleanups.push(() => busB.stop());
    const sb = await PkiService.open({ ...ctxB, events: busB });
    cleanups.push(async () => sb.close());
    await busB.start();

    await identityService(a).addUser({
      name: "alice",
      groups: ["eng"],
      password: "pw-correct-horse-battery",
    });
    const signed = await sa.ssh.signUser({
      publicKey: newSshKey(dir, "k1"),
      user: "alice",
      hostGroup: "staging",
      principals: ["alice"],
      actor: "test",
      ttlMs: 12 * HOUR,
    });
    const certs = { revoked: signed.certLine };
    const cached = await sb.ssh.krl();
    expect(krlSays(dir, cached, certs)).toEqual({ revoked: "ok" });
    // The premise: B serves its KRL from memory (the very same bytes, not a rebuild).
    expect(await sb.ssh.krl()).toBe(cached);

    gate.hold();
    await gate.held();
    await sa.ssh.revoke({ serial: signed.serial, actor: "test" });
    clock.advance(2 * HOUR);
    const kept = await a.events.publish("policy.changed", { v: 2 });
    await pruneEvents(a.store, { now: clock.now(), retentionMs: HOUR });
    gate.release();
    await waitFor(() => busB.lastSeq() >= kept.seq, "B's reader to catch up");
    await busB.resynced();
    expect(busB.resyncing()).toBe(false);
    // B never heard the cert.revoked event; its KRL, cached before, was built again.
    expect(krlSays(dir, await sb.ssh.krl(), certs)).toEqual({ revoked: "REVOKED" });
  });
});

describe.each(ENGINES)(
  "a grant revoked while its certificate is signed, on $name",
  (engine: Engine) => {
    const { target, cleanups } = perTestTargets(engine);

    it("is in the KRL, though a KRL was built and cached between the grant's revocation and the certificate's record", async () => {
      const t = await target();
      const dir = t.storeOptions.dataDir;
      writeConfig(dir, engineConfigYaml(t, `trust_domain: cache.test\n${ACCESS}`), {
        "ssh.cedar": POLICIES,
      });
      const ctx = await openAppContext(loadConfig(join(dir, "zt.yaml"), { env: {} }), {
        clock: new ManualClock(Date.now()),
        env: {},
        create: true,
      });
      cleanups.push(() => ctx.close());
      await initPki(ctx);
      const ids = identityService(ctx);
      for (const [name, groups] of [
        ["alice", ["eng"]],
        ["sam", ["sre"]],
      ] as const)
        await ids.addUser({ name, groups: [...groups], password: "pw-correct-horse-battery" });
      const access = new AccessService(ctx);
      const g = await access.approve(
        (
          await access.request({
            user: "alice",
            resource: 'HostGroup::"prod"',
            reason: "INC-9 fix prod",
            ttlMs: HOUR,
          })
        ).id,
        "sam",
      );
      // The signing service reads the user's grants through a gate: held after the read.
      const gate = new ReadGate("access_requests");
      const gated = { ...ctx, store: { ...ctx.store, db: gate.wrap(ctx.store.db) } as Store };
      const pki = await pkiService(gated);
      gate.hold();
      const signing = pki.ssh.signUser({
        publicKey: newSshKey(dir, "k1"),
        user: "alice",
        hostGroup: "prod",
        principals: ["alice"],
        actor: "test",
      });
      await gate.held(); // the grant was read as active
      await access.revoke(g.id, "sam");
      const before = await pki.ssh.krl(); // built and cached: the certificate is not recorded yet
      expect(await pki.ssh.krl()).toBe(before); // the premise: served from memory
      gate.release();
      const signed = await signing;
      expect(krlSays(dir, before, { cert: signed.certLine })).toEqual({ cert: "ok" });
      expect(krlSays(dir, await pki.ssh.krl(), { cert: signed.certLine })).toEqual({
        cert: "REVOKED",
      });
    });
  },
);
