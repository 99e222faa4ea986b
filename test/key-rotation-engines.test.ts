/**
 * KeyStore rotation on both storage engines: one active key after any number of
 * rotations (also concurrent ones from two handles, as two replicas would), the
 * rotated-out key published for its window only, retired keys never published.
 */
import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { openStore } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { SecretBox } from "../src/core/secret-box.js";
import { KeyStore } from "../src/keys/index.js";
import { engines } from "./store-fixture.js";

const ENGINES = await engines();

describe.each(ENGINES)("KeyStore rotation on $name", (engine) => {
  it("keeps exactly one active key, publishes the previous one for its window only", async () => {
    const target = await engine.fresh();
    const a = await openStore(target.storeOptions);
    const b = await openStore(target.storeOptions);
    const clock = new ManualClock(1_800_000_000_000);
    const box = new SecretBox(randomBytes(32));
    const ka = new KeyStore(a, box, clock);
    const kb = new KeyStore(b, box, clock);
    try {
      const first = await ka.activeKey("assertion", "ES256");
      const kids = async () =>
        (await ka.publicJwks("assertion")).map((k) => String(k["kid"])).sort();

      // Two replicas rotating at the same moment: both succeed, one key stays active.
      const [r1, r2] = await Promise.all([
        ka.rotate("assertion", "ES256", { publishPreviousForMs: 60_000 }),
        kb.rotate("assertion", "ES256", { publishPreviousForMs: 60_000 }),
      ]);
      const rows = await a.db
        .selectFrom("keys")
        .selectAll()
        .where("purpose", "=", "assertion")
        .execute();
      const active = rows.filter((r) => r.status === "active");
      expect(active).toHaveLength(1);
      expect([r1.kid, r2.kid]).toContain(active[0]!.id);
      // Whoever rotated second retired the first rotation's key into "previous".
      expect(
        rows
          .filter((r) => r.status === "previous")
          .map((r) => r.id)
          .sort(),
      ).toEqual([first.kid, r1.kid, r2.kid].filter((k) => k !== active[0]!.id).sort());
      const fresh = new KeyStore(a, box, clock);
      expect((await fresh.activeKey("assertion", "ES256")).kid).toBe(active[0]!.id);
      expect(await kids()).toEqual([first.kid, r1.kid, r2.kid].sort());

      // The publication window closes: only the active key is published.
      clock.advance(60_001);
      expect(await kids()).toEqual([active[0]!.id]);

      // --retire-now: the old key is gone from the JWKS at once.
      const r3 = await ka.rotate("assertion", "ES256", { publishPreviousForMs: 0 });
      expect(r3.previous).toEqual([active[0]!.id]);
      expect(await kids()).toEqual([r3.kid]);
      const statuses = Object.fromEntries((await ka.list()).map((k) => [k.kid, k.status]));
      expect(statuses[active[0]!.id]).toBe("retired");
      expect(statuses[r3.kid]).toBe("active");

      // Other purposes are untouched.
      const audit = await ka.activeKey("audit-checkpoint", "EdDSA");
      await ka.rotate("assertion", "ES256", { publishPreviousForMs: 1000 });
      expect((await new KeyStore(a, box, clock).activeKey("audit-checkpoint", "EdDSA")).kid).toBe(
        audit.kid,
      );
      await expect(
        ka.rotate("assertion", "ES256", { publishPreviousForMs: -1 }),
      ).rejects.toMatchObject({ code: "ZT_USAGE" });
    } finally {
      await a.close();
      await b.close();
      await target.cleanup();
    }
  });
});
