/**
 * Automatic rotation of the intermediate CA: the check `zt up` runs at start and then
 * periodically, on SQLite (several store handles on one file) and PostgreSQL (several
 * replicas on one database), with an injected clock moved into and out of
 * `pki.intermediate_rotate_before`. Certificates are checked with `openssl verify`.
 */
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig } from "../src/config/index.js";
import { ManualClock } from "../src/core/clock.js";
import {
  AUTO_ROTATE_ACTOR,
  initPki,
  IntermediateRotationRunner,
  parsePkiSettings,
  pkiService,
  startIntermediateRotation,
  type IntermediateCheckResult,
  type PkiService,
} from "../src/pki/index.js";
import { runUp } from "../src/app/run-up.js";
import {
  OPERATOR_AUTH,
  ROOT,
  tempDir,
  withOperatorToken,
  writeConfig,
} from "./helpers/zt-process.js";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "./store-fixture.js";

const TD = "rotate.test";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const REPLICAS = 4;

const pgAvailable = await postgresAvailable();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Cluster {
  contexts: AppContext[];
  clock: ManualClock;
  dir: string;
  masterKey: string;
}

/**
 * `n` AppContexts, each with its own store handle, on one database (the SQLite file in
 * a shared data_dir, or `databaseUrl`), sharing the master key and a manual clock.
 */
async function cluster(
  n: number,
  options: { databaseUrl?: string; pki?: Record<string, unknown>; startMs?: number } = {},
): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "zt-pki-rotate-"));
  const key = randomBytes(32).toString("base64");
  const clock = new ManualClock(options.startMs ?? Date.now());
  const contexts: AppContext[] = [];
  cleanups.push(async () => {
    for (const c of contexts) await c.close();
    rmSync(dir, { recursive: true, force: true });
  });
  for (let i = 0; i < n; i++) {
    const config = validateConfig(
      {
        data_dir: join(dir, "data"),
        trust_domain: TD,
        pki: options.pki ?? { intermediate_rotate_before: "120d" },
        ...(options.databaseUrl ? { database_url: options.databaseUrl } : {}),
      },
      join(dir, "zt.yaml"),
    );
    contexts.push(await openAppContext(config, { clock, env: { ZT_MASTER_KEY: key } }));
  }
  return { contexts, clock, dir, masterKey: key };
}

async function intermediates(ctx: AppContext) {
  return ctx.store.db
    .selectFrom("pki_cas")
    .select(["id", "status", "not_after"])
    .where("kind", "=", "intermediate")
    .orderBy("created_at")
    .execute();
}

/** Moves the clock to `hoursIn` hours inside (or, negative, outside) the rotation window. */
function intoWindow(svc: PkiService, clock: ManualClock, hoursIn: number): void {
  const active = svc.cas.activeIntermediate;
  clock.set(active.notAfterMs - svc.settings.intermediateRotateBeforeMs + hoursIn * HOUR);
}

function openssl(args: string[]): { status: number; out: string } {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** `openssl verify` of a chain (leaf + intermediate, as issued) against the trust bundle, at `atMs`. */
function opensslVerify(
  dir: string,
  name: string,
  chainPem: string,
  bundlePem: string,
  atMs: number,
) {
  const end = chainPem.indexOf("-----END CERTIFICATE-----") + "-----END CERTIFICATE-----\n".length;
  const files = { leaf: join(dir, `${name}.leaf.pem`), int: join(dir, `${name}.int.pem`) };
  writeFileSync(files.leaf, chainPem.slice(0, end));
  writeFileSync(files.int, chainPem.slice(end));
  writeFileSync(join(dir, "bundle.pem"), bundlePem);
  return openssl([
    "verify",
    "-x509_strict",
    "-purpose",
    "sslclient",
    "-attime",
    String(Math.floor(atMs / 1000)),
    "-CAfile",
    join(dir, "bundle.pem"),
    "-untrusted",
    files.int,
    files.leaf,
  ]);
}

/** The `ca.rotate` audit records, once every context has written its own. */
async function rotationRecords(ctx: AppContext, writers: AppContext[] = [ctx]) {
  for (const w of writers) await w.audit.flush();
  const rows = await ctx.store.db
    .selectFrom("audit_events")
    .selectAll()
    .where("kind", "=", "ca.rotate")
    .execute();
  return rows.map((r) => ({
    subject: r.subject,
    outcome: r.outcome,
    data: JSON.parse(r.data) as Record<string, unknown>,
  }));
}

async function pkiEvents(ctx: AppContext) {
  const rows = await ctx.store.db
    .selectFrom("events")
    .select("data")
    .where("kind", "=", "config.changed")
    .execute();
  return rows
    .map((r) => JSON.parse(r.data) as Record<string, unknown>)
    .filter((d) => d["component"] === "pki");
}

/** Every replica checks at the same moment; exactly one new active intermediate results. */
async function checkRaceMakesOneIntermediate(c: Cluster): Promise<void> {
  await initPki(c.contexts[0]!);
  const services = await Promise.all(c.contexts.map((ctx) => pkiService(ctx)));
  const old = services[0]!.cas.activeIntermediate.id;
  intoWindow(services[0]!, c.clock, 1);
  const results = await Promise.all(services.map((s) => s.checkIntermediateRotation()));
  const rotated = results.filter((r) => r.outcome === "rotated");
  expect(rotated).toHaveLength(1);
  expect(results.filter((r) => r.outcome === "not-due")).toHaveLength(REPLICAS - 1);
  const fresh = rotated[0]!.intermediate!;
  const rows = await intermediates(c.contexts[0]!);
  // The losers never inserted anything: one old (retired), one new (active).
  expect(rows.map((r) => [r.id, r.status])).toEqual([
    [old, "retired"],
    [fresh, "active"],
  ]);
  for (const s of services) expect(s.cas.activeIntermediate.id).toBe(fresh);
  expect((await rotationRecords(c.contexts[0]!, c.contexts)).map((r) => r.subject)).toEqual([
    AUTO_ROTATE_ACTOR,
  ]);
}

/** Several operators rotating at once: exactly one active intermediate, none discarded. */
async function manualRaceLeavesOneActive(c: Cluster): Promise<void> {
  await initPki(c.contexts[0]!);
  const services = await Promise.all(c.contexts.map((ctx) => pkiService(ctx)));
  const old = services[0]!.cas.activeIntermediate.id;
  const made = await Promise.all(services.map((s, i) => s.rotateIntermediate(`operator-${i}`)));
  expect(new Set(made).size).toBe(REPLICAS);
  const rows = await intermediates(c.contexts[0]!);
  const active = rows.filter((r) => r.status === "active");
  expect(active).toHaveLength(1);
  expect(made).toContain(active[0]!.id);
  // Each one was active for a moment and may have signed: retired (trusted), never discarded.
  expect(rows.filter((r) => r.status === "retired").map((r) => r.id)).toEqual(
    expect.arrayContaining([old, ...made.filter((id) => id !== active[0]!.id)]),
  );
  expect(rows).toHaveLength(REPLICAS + 1);
  expect((await rotationRecords(c.contexts[0]!, c.contexts)).map((r) => r.subject).sort()).toEqual(
    services.map((_, i) => `operator-${i}`),
  );
}

/**
 * A zt replica as a process of its own (the compiled dist/): it opens the shared
 * SQLite store, says "ready", and at the instant it then reads from stdin (the same for
 * all) runs the rotation check (`auto`) or a manual rotation, printing the result as
 * JSON. One process per replica, so nothing in one event loop orders their steps: only
 * the database's lock does.
 */
const REPLICA_SCRIPT = `
import { join } from "node:path";
import { once } from "node:events";
import { validateConfig } from ${JSON.stringify(join(ROOT, "dist/src/config/index.js"))};
import { openAppContext } from ${JSON.stringify(join(ROOT, "dist/src/app/index.js"))};
import { pkiService } from ${JSON.stringify(join(ROOT, "dist/src/pki/index.js"))};
const [mode, dir, pki] = process.argv.slice(2);
const config = validateConfig(
  { data_dir: join(dir, "data"), trust_domain: ${JSON.stringify(TD)}, pki: JSON.parse(pki) },
  join(dir, "zt.yaml"),
);
const ctx = await openAppContext(config, { env: process.env });
const svc = await pkiService(ctx);
process.stdout.write("ready\\n");
const [go] = await once(process.stdin, "data");
// Start together: wait for the agreed instant, spinning for precision at the end.
const at = Number(String(go).trim());
if (at - Date.now() > 20) await new Promise((r) => setTimeout(r, at - Date.now() - 20));
while (Date.now() < at);
const result =
  mode === "auto"
    ? await svc.checkIntermediateRotation()
    : { outcome: "rotated", intermediate: await svc.rotateIntermediate("operator-" + process.pid) };
await ctx.close();
process.stdout.write(JSON.stringify(result) + "\\n");
`;

async function racingProcesses(
  c: Cluster,
  mode: "auto" | "manual",
  pki: Record<string, unknown>,
): Promise<IntermediateCheckResult[]> {
  if (!existsSync(join(ROOT, "dist/src/pki/ca-lock.js"))) {
    throw new Error("run `npm run build` first: the replica processes run dist/");
  }
  const script = join(c.dir, "replica.mjs");
  writeFileSync(script, REPLICA_SCRIPT);
  const children: ChildProcessWithoutNullStreams[] = [];
  const outputs = Array.from({ length: REPLICAS }, () => "");
  for (let i = 0; i < REPLICAS; i++) {
    const child = spawn(process.execPath, [script, mode, c.dir, JSON.stringify(pki)], {
      env: { ...process.env, ZT_MASTER_KEY: c.masterKey },
    });
    child.stdout.on("data", (d: Buffer) => (outputs[i] += d.toString()));
    child.stderr.on("data", (d: Buffer) => (outputs[i] += d.toString()));
    children.push(child);
  }
  const exited = children.map(
    (child) => new Promise<number>((r) => child.on("close", (code) => r(code ?? -1))),
  );
  for (let i = 0; i < 3000 && !outputs.every((o) => o.includes("ready")); i++) {
    if (children.some((ch) => ch.exitCode !== null)) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  expect(
    outputs.every((o) => o.includes("ready")),
    outputs.join("\n"),
  ).toBe(true);
  const at = Date.now() + 300;
  for (const child of children) child.stdin.end(`${at}\n`);
  const codes = await Promise.all(exited);
  expect(codes, outputs.join("\n")).toEqual(children.map(() => 0));
  return outputs.map((o) => JSON.parse(o.slice(o.indexOf("ready") + 6)) as IntermediateCheckResult);
}

describe("automatic intermediate rotation (SQLite)", () => {
  it("rotates exactly once inside the window: the old intermediate retires but keeps verifying what it signed, new SVIDs chain to the new one", async () => {
    const c = await cluster(1);
    const ctx = c.contexts[0]!;
    await initPki(ctx);
    const svc = await pkiService(ctx);
    const old = svc.cas.activeIntermediate;
    const bundle = svc.bundlePem();
    intoWindow(svc, c.clock, 1);
    const before = await svc.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "t" });
    expect(new X509Certificate(before.certPem).verify(old.node.publicKey)).toBe(true);

    const first = await svc.checkIntermediateRotation();
    expect(first).toMatchObject({ outcome: "rotated", previous: old.id });
    expect(first.intermediate).not.toBe(old.id);
    const again = await svc.checkIntermediateRotation();
    expect(again).toMatchObject({ outcome: "not-due", intermediate: first.intermediate });

    expect((await intermediates(ctx)).map((r) => [r.id, r.status])).toEqual([
      [old.id, "retired"],
      [first.intermediate, "active"],
    ]);
    expect(svc.cas.activeIntermediate.id).toBe(first.intermediate);
    expect(svc.cas.intermediates.map((i) => i.id)).toContain(old.id);
    expect(svc.bundlePem()).toBe(bundle);

    // What the old intermediate signed still verifies, in zt and with OpenSSL.
    const now = c.clock.now();
    expect(svc.verifyClientCertificate(new X509Certificate(before.certPem).raw, now)).toMatchObject(
      { ok: true },
    );
    const v1 = opensslVerify(c.dir, "before", before.chainPem, bundle, now);
    expect(v1.status, v1.out).toBe(0);

    const after = await svc.issueSvidWithNewKey({ spiffeId: `spiffe://${TD}/web`, actor: "t" });
    const fresh = svc.cas.activeIntermediate;
    expect(new X509Certificate(after.certPem).verify(fresh.node.publicKey)).toBe(true);
    expect(after.chainPem.endsWith(fresh.pem)).toBe(true);
    const v2 = opensslVerify(c.dir, "after", after.chainPem, bundle, now);
    expect(v2.status, v2.out).toBe(0);

    // What operators see, and what tells the other processes to switch.
    expect(await rotationRecords(ctx)).toEqual([
      {
        subject: AUTO_ROTATE_ACTOR,
        outcome: "success",
        data: { intermediate: fresh.id, previous: old.id, not_after: fresh.notAfterMs },
      },
    ]);
    expect(await pkiEvents(ctx)).toEqual([{ component: "pki", intermediate: fresh.id }]);
  });

  it("does nothing outside the window", async () => {
    const c = await cluster(1);
    const ctx = c.contexts[0]!;
    await initPki(ctx);
    const svc = await pkiService(ctx);
    const old = svc.cas.activeIntermediate.id;
    intoWindow(svc, c.clock, -1);
    expect(await svc.checkIntermediateRotation()).toMatchObject({
      outcome: "not-due",
      intermediate: old,
    });
    expect((await intermediates(ctx)).map((r) => [r.id, r.status])).toEqual([[old, "active"]]);
    expect(await rotationRecords(ctx)).toEqual([]);
    expect(await pkiEvents(ctx)).toEqual([]);
  });

  it("makes exactly one new intermediate when replicas on one SQLite file check at the same moment", async () => {
    await checkRaceMakesOneIntermediate(await cluster(REPLICAS));
  });

  it("leaves exactly one active intermediate after concurrent manual rotations on one SQLite file", async () => {
    await manualRaceLeavesOneActive(await cluster(REPLICAS));
  });

  it("makes exactly one new intermediate when replica processes on one SQLite file check at the same moment", async () => {
    // The intermediate was made an hour ago (injected clock) and lives 2h: with
    // rotate_before 90m it is due now by the real clock the processes use.
    const pki = { intermediate_ttl: "2h", intermediate_rotate_before: "90m" };
    const c = await cluster(1, { pki, startMs: Date.now() - HOUR });
    await initPki(c.contexts[0]!);
    const old = (await pkiService(c.contexts[0]!)).cas.activeIntermediate.id;
    const results = await racingProcesses(c, "auto", pki);
    const rotated = results.filter((r) => r.outcome === "rotated");
    expect(rotated, JSON.stringify(results)).toHaveLength(1);
    expect(results.filter((r) => r.outcome === "not-due")).toHaveLength(REPLICAS - 1);
    expect((await intermediates(c.contexts[0]!)).map((r) => [r.id, r.status])).toEqual([
      [old, "retired"],
      [rotated[0]!.intermediate, "active"],
    ]);
  });

  it("leaves exactly one active intermediate after manual rotations racing in separate processes on one SQLite file", async () => {
    const pki = { intermediate_rotate_before: "120d" };
    const c = await cluster(1, { pki });
    await initPki(c.contexts[0]!);
    const made = (await racingProcesses(c, "manual", pki)).map((r) => r.intermediate);
    const rows = await intermediates(c.contexts[0]!);
    const active = rows.filter((r) => r.status === "active");
    expect(active).toHaveLength(1);
    expect(made).toContain(active[0]!.id);
    expect(rows.filter((r) => r.status === "retired")).toHaveLength(REPLICAS);
  });

  it("with pki.auto_rotate false: never rotates, warns at each check", async () => {
    const c = await cluster(1, { pki: { intermediate_rotate_before: "120d", auto_rotate: false } });
    const ctx = c.contexts[0]!;
    await initPki(ctx);
    const svc = await pkiService(ctx);
    const old = svc.cas.activeIntermediate.id;
    const warnings: string[] = [];
    const runner = startIntermediateRotation(ctx, { warn: (m) => warnings.push(m) });
    cleanups.push(() => runner.stop());
    expect(await runner.checkNow()).toMatchObject({ outcome: "not-due" });
    expect(warnings).toEqual([]);
    intoWindow(svc, c.clock, 1);
    for (let i = 0; i < 2; i++) {
      expect(await runner.checkNow()).toMatchObject({
        outcome: "due-auto-rotate-off",
        intermediate: old,
      });
    }
    expect(warnings).toHaveLength(2);
    for (const w of warnings) {
      expect(w).toContain(old);
      expect(w).toContain("pki.auto_rotate is false");
      expect(w).toContain("zt ca rotate-intermediate");
    }
    expect(runner.status()).toMatchObject({
      auto_rotate: false,
      last_outcome: "due-auto-rotate-off",
      intermediate: old,
    });
    expect((await intermediates(ctx)).map((r) => r.id)).toEqual([old]);
    expect(await rotationRecords(ctx)).toEqual([]);
  });

  it("reports a failed check, keeps running, and rotates at the next one", async () => {
    const c = await cluster(1);
    const ctx = c.contexts[0]!;
    await initPki(ctx);
    const svc = await pkiService(ctx);
    intoWindow(svc, c.clock, 1);
    const warnings: string[] = [];
    const info: string[] = [];
    const runner = new IntermediateRotationRunner(() => pkiService(ctx), svc.settings, c.clock, {
      warn: (m) => warnings.push(m),
      info: (m) => info.push(m),
    });
    cleanups.push(() => runner.stop());
    // A real store failure: the CA table is gone for a moment.
    await sql`ALTER TABLE pki_cas RENAME TO pki_cas_away`.execute(ctx.store.db);
    expect(await runner.checkNow()).toBeUndefined();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^intermediate CA rotation check failed \(retrying in 1h\): /);
    expect(runner.status()).toMatchObject({ last_outcome: "failed" });
    await sql`ALTER TABLE pki_cas_away RENAME TO pki_cas`.execute(ctx.store.db);
    const r = (await runner.checkNow()) as IntermediateCheckResult;
    expect(r.outcome).toBe("rotated");
    expect(runner.status()).toMatchObject({ last_outcome: "rotated", last_error: null });
    expect(info).toEqual([
      expect.stringContaining(`rotated the intermediate CA: ${r.intermediate}`),
    ]);
  });

  it("stops rotating once a new intermediate would end with the root, and says so", async () => {
    const c = await cluster(1, {
      pki: { root_ttl: "400d", intermediate_ttl: "365d", intermediate_rotate_before: "120d" },
    });
    const ctx = c.contexts[0]!;
    await initPki(ctx);
    const svc = await pkiService(ctx);
    const root = svc.cas.roots[0]!;
    // 300 days in: 65 days left, and a new one can still last until the root ends.
    intoWindow(svc, c.clock, 55 * 24);
    const first = await svc.checkIntermediateRotation();
    expect(first).toMatchObject({ outcome: "rotated" });
    expect(svc.cas.activeIntermediate.notAfterMs).toBe(root.notAfterMs);
    // Now every intermediate would end with the root: no rotation every hour for ever.
    c.clock.advance(30 * DAY);
    const warnings: string[] = [];
    const runner = startIntermediateRotation(ctx, { warn: (m) => warnings.push(m) });
    cleanups.push(() => runner.stop());
    expect(await runner.checkNow()).toMatchObject({
      outcome: "root-expiring",
      intermediate: first.intermediate,
    });
    expect(warnings).toEqual([expect.stringContaining("the root CA expires then too")]);
    expect(await intermediates(ctx)).toHaveLength(2);
  });

  it("zt up checks at start: rotates an intermediate that is due, logs it and shows it in /readyz", async () => {
    const dir = tempDir("zt-up-rotate-");
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const config = writeConfig(
      dir,
      `data_dir: ./data
trust_domain: ${TD}
pki: { intermediate_rotate_before: 120d }
routes:
  - { name: app, from: "http://app.localhost", to: "http://127.0.0.1:9" }
policies: ./policies
`,
      { "main.cedar": '@id("none")\nforbid (principal, action, resource);\n' },
    );
    // The operator token opens /readyz's detail.
    const env = withOperatorToken({
      ZT_LISTEN__PROXY: "127.0.0.1:0",
      ZT_LISTEN__API: "127.0.0.1:0",
    });
    const clock = new ManualClock(Date.now());
    const first = await runUp({ configPath: config, env, clock, out: () => undefined });
    const old = (await pkiService(first.ctx)).cas.activeIntermediate;
    const rotateBefore = (await pkiService(first.ctx)).settings.intermediateRotateBeforeMs;
    await first.close();

    clock.set(old.notAfterMs - rotateBefore + HOUR);
    const lines: string[] = [];
    const zt = await runUp({ configPath: config, env, clock, out: (l) => lines.push(l) });
    cleanups.push(() => zt.close());
    for (let i = 0; i < 500 && zt.pkiRotation.status().last_outcome === null; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const status = zt.pkiRotation.status();
    expect(status).toMatchObject({ last_outcome: "rotated", auto_rotate: true });
    expect(status.intermediate).not.toBe(old.id);
    expect(lines).toContainEqual(
      expect.stringContaining(`zt: pki: rotated the intermediate CA: ${status.intermediate}`),
    );
    const ready = (await (
      await fetch(`http://127.0.0.1:${zt.apiAddress.port}/readyz`, { headers: OPERATOR_AUTH })
    ).json()) as Record<string, unknown>;
    expect(ready["pki_rotation"]).toMatchObject({
      last_outcome: "rotated",
      intermediate: status.intermediate,
    });
    expect((await pkiService(zt.ctx)).cas.activeIntermediate.id).toBe(status.intermediate);
  });
});

describe("pki.intermediate_rotate_before and pki.auto_rotate", () => {
  it("default to a third of intermediate_ttl, and on", () => {
    const s = parsePkiSettings({}, TD);
    expect(s.intermediateRotateBeforeMs).toBe(Math.round((365 * DAY) / 3));
    expect(s.autoRotate).toBe(true);
    expect(parsePkiSettings({ intermediate_ttl: "3h" }, TD).intermediateRotateBeforeMs).toBe(HOUR);
    expect(
      parsePkiSettings({ intermediate_rotate_before: "30d", auto_rotate: false }, TD),
    ).toMatchObject({ intermediateRotateBeforeMs: 30 * DAY, autoRotate: false });
  });

  it.each([
    [
      { intermediate_rotate_before: "0s" },
      "pki.intermediate_rotate_before",
      "below pki.intermediate_ttl",
    ],
    [
      { intermediate_rotate_before: "365d" },
      "pki.intermediate_rotate_before",
      "below pki.intermediate_ttl",
    ],
    [
      { intermediate_ttl: "30d", intermediate_rotate_before: "60d" },
      "pki.intermediate_rotate_before",
      "below pki.intermediate_ttl",
    ],
    [
      { intermediate_rotate_before: "soon" },
      "pki.intermediate_rotate_before",
      "expected a duration",
    ],
    [{ auto_rotate: "yes" }, "pki.auto_rotate", "boolean"],
  ])("refuses %j, naming the key", (pki, key, what) => {
    let error: unknown;
    try {
      parsePkiSettings(pki, TD);
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: "ZT_CONFIG_INVALID", context: { key } });
    expect((error as Error).message).toContain(`${key}: `);
    expect((error as Error).message).toContain(what);
  });
});

describe.skipIf(!pgAvailable)("automatic intermediate rotation (PostgreSQL)", () => {
  const dbs: TestDatabase[] = [];
  afterAll(async () => {
    for (const db of dbs) await db.drop();
  });
  const database = async () => {
    const db = await createTestDatabase();
    dbs.push(db);
    return db.url;
  };

  it("makes exactly one new intermediate when replicas on one PostgreSQL database check at the same moment", async () => {
    await checkRaceMakesOneIntermediate(await cluster(REPLICAS, { databaseUrl: await database() }));
  });

  it("leaves exactly one active intermediate after concurrent manual rotations on PostgreSQL", async () => {
    await manualRaceLeavesOneActive(await cluster(REPLICAS, { databaseUrl: await database() }));
  });
});
