/**
 * `zt keys rotate assertion`: the real CLI rotates the identity assertion key of a running
 * PEP (another process, the same SQLite store); the PEP hears it on the event bus and
 * signs with the new key, the JWKS publishes the old key for its window (or drops it at
 * once with --retire-now), and every verifier that reads the JWKS follows.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { join } from "node:path";
import type { PepFixture } from "./pep-fixture.js";
import { startPepAppRoute, type PepAppRoute, type Upstream } from "./helpers/pep-app-route.js";
import { request } from "./helpers/http-client.js";
import { runZt } from "./helpers/zt-process.js";

const POLICY = `permit (principal in Group::"eng", action, resource == App::"app");\n`;

describe("assertion signing key rotation", () => {
  let fixture: PepAppRoute;
  let zt: PepFixture;
  let upstream: Upstream;
  let cookie: string;
  let configPath: string;

  beforeAll(async () => {
    fixture = await startPepAppRoute({ host: "app.localhost", policies: POLICY });
    ({ pep: zt, upstream } = fixture);
    configPath = join(zt.dir, "zt.yaml");
    await zt.ctx.events.start();
    await zt.addUser("alice", ["eng"]);
    cookie = (await zt.session("alice")).cookie;
  });

  afterAll(async () => {
    await fixture?.close();
  });

  /** The assertion the upstream received for one request through the PEP. */
  async function assertionThroughPep(): Promise<string> {
    const r = await request(zt.port, { host: "app.localhost", path: "/", headers: { cookie } });
    expect(r.status).toBe(200);
    return String(upstream.seen.at(-1)!.headers["x-zt-assertion"]);
  }

  async function jwks(): Promise<{ keys: Record<string, unknown>[] }> {
    const r = await request(zt.port, { host: "app.localhost", path: "/.well-known/zt/jwks.json" });
    expect(r.status).toBe(200);
    return r.json<{ keys: Record<string, unknown>[] }>();
  }

  /** Waits (by polling the PEP, not the clock) until its assertions carry another kid. */
  async function assertionWithKidOtherThan(kid: string): Promise<string> {
    for (let i = 0; i < 200; i++) {
      const jwt = await assertionThroughPep();
      if (decodeProtectedHeader(jwt).kid !== kid) return jwt;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the PEP never stopped signing with ${kid}`);
  }

  it("switches every PEP to the new key, and keeps the old one verifiable for its window", async () => {
    const before = await assertionThroughPep();
    const oldKid = decodeProtectedHeader(before).kid!;
    // The cached assertion is reused within its half-life: rotation must drop it too.
    expect(await assertionThroughPep()).toBe(before);

    const r = await runZt(["--config", configPath, "keys", "rotate", "assertion"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/now signing with key_/);
    expect(r.stdout).toContain(oldKid);

    const after = await assertionWithKidOtherThan(oldKid);
    const newKid = decodeProtectedHeader(after).kid!;
    expect(r.stdout).toContain(newKid);

    const set = await jwks();
    expect(set.keys.map((k) => k["kid"])).toEqual(expect.arrayContaining([oldKid, newKid]));
    const verify = createLocalJWKSet(set as Parameters<typeof createLocalJWKSet>[0]);
    // Both verify: the old assertion until it expires, the new one from now on.
    await expect(jwtVerify(before, verify, { audience: "app" })).resolves.toBeDefined();
    const { payload } = await jwtVerify(after, verify, { audience: "app" });
    expect(payload.sub).toBe("alice");

    const list = await runZt(["--config", configPath, "keys", "list", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    const rows = JSON.parse(list.stdout) as { kid: string; status: string; published: string }[];
    expect(rows.find((k) => k.kid === newKid)?.status).toBe("active");
    const old = rows.find((k) => k.kid === oldKid);
    expect(old?.status).toBe("previous");
    expect(old?.published).toMatch(/^until /);
    expect(JSON.stringify(rows)).not.toMatch(/private|ztbox1|"d"/);
  });

  it("--retire-now drops the old key from the JWKS, so what it signed no longer verifies", async () => {
    const before = await assertionThroughPep();
    const oldKid = decodeProtectedHeader(before).kid!;
    const r = await runZt(["--config", configPath, "keys", "rotate", "assertion", "--retire-now"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/retired/);
    const after = await assertionWithKidOtherThan(oldKid);

    const set = await jwks();
    const kids = set.keys.map((k) => k["kid"]);
    expect(kids).not.toContain(oldKid);
    const verify = createLocalJWKSet(set as Parameters<typeof createLocalJWKSet>[0]);
    await expect(jwtVerify(before, verify, { audience: "app" })).rejects.toThrow();
    await expect(jwtVerify(after, verify, { audience: "app" })).resolves.toBeDefined();

    const audit = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", "key.rotate")
      .execute();
    expect(audit.map((a) => a.reason)).toEqual(["rotated", "retired-at-once"]);
  });

  it("refuses to rotate anything but the assertion key, and a bad --keep-previous, naming it", async () => {
    const other = await runZt(["--config", configPath, "keys", "rotate", "audit-checkpoint"]);
    expect(other.code).toBe(64);
    expect(other.stderr).toMatch(/ZT_USAGE.*purpose must be "assertion"/);
    expect(other.stderr).not.toMatch(/\n\s+at /);
    const bad = await runZt([
      "--config",
      configPath,
      "keys",
      "rotate",
      "assertion",
      "--keep-previous",
      "soon",
    ]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/--keep-previous/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
  });
});
