import { randomBytes } from "node:crypto";
import { ManualClock } from "../../src/core/clock.js";
import { loadConfig } from "../../src/config/index.js";
import { openAppContext, type AppContext } from "../../src/app/index.js";
import { writeEngineConfig, type EngineTarget } from "../store-fixture.js";

/**
 * zt processes for the PKI suites on one engine target: a zt.yaml with trust domain
 * `example.test`, and one master key and one manual clock shared by every context
 * `open()` makes (each closed by `cleanups`, as `perTestTargets` gives).
 */
export function pkiProcessesOn(
  t: EngineTarget,
  cleanups: (() => Promise<void>)[],
): { clock: ManualClock; open(): Promise<AppContext> } {
  const path = writeEngineConfig(t, "trust_domain: example.test\n");
  const env = { ZT_MASTER_KEY: randomBytes(32).toString("base64") };
  const clock = new ManualClock(Date.now());
  return {
    clock,
    async open() {
      const c = await openAppContext(loadConfig(path, { env }), { clock, env, create: true });
      cleanups.push(() => c.close());
      return c;
    },
  };
}
