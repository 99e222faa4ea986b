import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManualClock } from "../core/clock.js";
import { validateConfig } from "../config/index.js";
import { openAppContext, type AppContext } from "../app/index.js";
import { sha256Hex } from "../core/ids.js";
import { SessionService } from "./session-service.js";

async function context(clock: ManualClock, idleTimeout = "10m"): Promise<AppContext> {
  const dir = mkdtempSync(join(tmpdir(), "zt-session-"));
  const config = validateConfig(
    { data_dir: dir, session: { ttl: "1h", idle_timeout: idleTimeout } },
    join(dir, "zt.yaml"),
  );
  const ctx = await openAppContext(config, { clock, create: true });
  await ctx.store.db
    .insertInto("users")
    .values({
      id: "u1",
      name: "alice",
      email: null,
      password_hash: "x",
      totp_secret_sealed: null,
      totp_last_step: 0,
      disabled: 0,
      created_at: 0,
      updated_at: 0,
    })
    .execute();
  return ctx;
}

describe("SessionService", () => {
  let ctx: AppContext | undefined;
  afterEach(async () => {
    await ctx?.close();
  });

  it("accepts a fresh session and refuses malformed or unknown tokens", async () => {
    const clock = new ManualClock();
    ctx = await context(clock);
    const sessions = new SessionService(ctx);
    const { token } = await sessions.create({
      userId: "u1",
      sourceIp: "127.0.0.1",
      userAgent: "test",
    });
    expect((await sessions.check(token)).ok).toBe(true);
    for (const bad of [undefined, "", "x", "%%%", token + "a", "A".repeat(43)]) {
      const r = await sessions.check(bad);
      expect(r).toMatchObject({ ok: false, code: "ZT_SESSION_INVALID" });
    }
    sessions.close();
  });

  it("checkInMemory answers as check does, and undefined only when the store must be read", async () => {
    const clock = new ManualClock();
    ctx = await context(clock);
    const sessions = new SessionService(ctx);
    const a = await sessions.create({ userId: "u1", sourceIp: "127.0.0.1", userAgent: "t" });
    const b = await sessions.create({ userId: "u1", sourceIp: "127.0.0.1", userAgent: "t" });
    // Another process's session: only in the store until first checked here.
    const other = new SessionService(ctx);
    const c = await other.create({ userId: "u1", sourceIp: "127.0.0.1", userAgent: "t" });
    expect(sessions.checkInMemory(c.token)).toBeUndefined();
    expect(sessions.checkInMemory("A".repeat(43))).toBeUndefined();
    // The one-shot hash the checks use is the store's token_hash (sha256Hex).
    const row = await ctx.store.db
      .selectFrom("sessions")
      .select("token_hash")
      .where("id", "=", a.session.id)
      .executeTakeFirstOrThrow();
    expect(row.token_hash).toBe(sha256Hex(a.token));
    expect((await sessions.check(c.token)).ok).toBe(true);
    await sessions.revoke([b.session.id], "test");
    const all = [a.token, b.token, c.token, undefined, "", "x", a.token + "a"];
    const sameAnswer = async () => {
      for (const t of all) {
        const known = sessions.checkInMemory(t);
        expect(known).toBeDefined();
        expect(known).toEqual(await sessions.check(t));
      }
    };
    for (const step of [0, 9 * 60_000]) {
      clock.advance(step);
      await sameAnswer();
    }
    // Past the idle timeout (10 min) a live session must be re-read: another process may
    // have served the user since. A revoked one is still answered in memory.
    clock.advance(11 * 60_000);
    for (const t of [a.token, c.token]) {
      expect(sessions.checkInMemory(t)).toBeUndefined();
      expect(await sessions.check(t)).toMatchObject({ ok: false, reason: "session-idle" });
    }
    expect(sessions.checkInMemory(b.token)).toMatchObject({ reason: "session-revoked" });
    // Past the absolute lifetime, everything is known in memory again.
    clock.advance(60 * 60_000);
    await sameAnswer();
    other.close();
    sessions.close();
  });

  it("expires at the absolute lifetime and after the idle timeout (injected clock)", async () => {
    const clock = new ManualClock();
    ctx = await context(clock);
    const sessions = new SessionService(ctx);
    const a = await sessions.create({ userId: "u1", sourceIp: "127.0.0.1", userAgent: "t" });
    clock.advance(9 * 60_000);
    expect((await sessions.check(a.token)).ok).toBe(true); // touches last_seen
    clock.advance(9 * 60_000);
    expect((await sessions.check(a.token)).ok).toBe(true);
    clock.advance(11 * 60_000);
    expect(await sessions.check(a.token)).toMatchObject({ ok: false, reason: "session-idle" });

    const b = await sessions.create({ userId: "u1", sourceIp: "127.0.0.1", userAgent: "t" });
    for (let i = 0; i < 7; i++) {
      clock.advance(9 * 60_000);
      await sessions.check(b.token);
    }
    expect(await sessions.check(b.token)).toMatchObject({ ok: false, code: "ZT_SESSION_EXPIRED" });
    sessions.close();
  });

  // Activity was written back at most once a minute whatever the idle timeout: with one of
  // a minute or less, a session in use every 20 s was refused as idle all the same.
  it("stops a short idle timeout from ending a session that is in use", async () => {
    const clock = new ManualClock();
    ctx = await context(clock, "30s");
    const sessions = new SessionService(ctx);
    const { token } = await sessions.create({
      userId: "u1",
      sourceIp: "127.0.0.1",
      userAgent: "t",
    });
    for (let i = 0; i < 6; i++) {
      clock.advance(20_000);
      expect(await sessions.check(token), `request ${i + 1}, 20 s after the last`).toMatchObject({
        ok: true,
      });
    }
    clock.advance(31_000);
    expect(await sessions.check(token)).toMatchObject({ ok: false, reason: "session-idle" });
    sessions.close();
  });

  it("revokes in another SessionService (another process) through the event bus", async () => {
    const clock = new ManualClock();
    ctx = await context(clock);
    const pep = new SessionService(ctx);
    const admin = new SessionService(ctx);
    const { session, token } = await pep.create({
      userId: "u1",
      sourceIp: "127.0.0.1",
      userAgent: "t",
    });
    expect((await pep.check(token)).ok).toBe(true);
    const heard: string[] = [];
    pep.onRevoked((id) => heard.push(id));
    expect(await admin.revokeUser("u1", "test")).toBe(1);
    expect(heard).toContain(session.id);
    expect(await pep.check(token)).toMatchObject({ ok: false, code: "ZT_SESSION_REVOKED" });
    pep.close();
    admin.close();
  });
});
