import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { validateConfig } from "../config/index.js";
import { openAppContext, type AppContext } from "../app/index.js";
import { ManualClock } from "../core/clock.js";

/** A throwaway AppContext on a temp SQLite store with a manual clock (tests and benches). */
export async function openPkiTestContext(
  options: {
    trustDomain?: string;
    pki?: Record<string, unknown>;
    startMs?: number;
    policies?: string;
  } = {},
): Promise<{ ctx: AppContext; clock: ManualClock; dir: string; cleanup: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "zt-pki-"));
  const config = validateConfig(
    {
      data_dir: join(dir, "data"),
      trust_domain: options.trustDomain ?? "example.test",
      pki: options.pki ?? {},
      ...(options.policies ? { policies: options.policies } : {}),
    },
    join(dir, "zt.yaml"),
  );
  const clock = new ManualClock(options.startMs ?? Date.now());
  const ctx = await openAppContext(config, {
    clock,
    env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
  });
  return {
    ctx,
    clock,
    dir,
    cleanup: async () => {
      await ctx.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
