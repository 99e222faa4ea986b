/**
 * Durations in the `audit:` and `alerts:` sections that cannot work: 0 where it would
 * spin a timer, count nothing or ban for nothing, a timer period past 2^31-1 ms (Node
 * fires such a timer at once, so a poll would spin), and a `max_bantime` below
 * `bantime`. `zt up` refuses each with ZT_CONFIG_INVALID naming the key (exit 78), as
 * other config errors, before opening anything; and a SIGHUP reload validates the
 * capability sections (pki, audit, alerts, access, notifications, devices, mfa) with the
 * same parsers as the start, refusing a bad value and keeping the old config (it took
 * them as "restart required" and the next start failed).
 *
 * Real `zt up` processes; waits poll for observable state.
 */
import { afterEach, describe, expect, it } from "vitest";
import { rmSync, writeFileSync } from "node:fs";
import { request } from "./helpers/http-client.js";
import {
  OPERATOR_AUTH,
  runZt,
  startZtUp,
  tempDir,
  withOperatorToken,
  writeConfig,
  type UpProcess,
} from "./helpers/zt-process.js";
import { waitFor } from "./store-fixture.js";

const BASE = `data_dir: ./data
trust_domain: durations.test
policies: ./policies
routes:
  - { name: app, from: "http://app.localhost", to: "http://127.0.0.1:9" }
`;
const POLICY = { "main.cedar": '@id("all")\npermit (principal, action, resource);\n' };
const ENV = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
const jail = (extra: string) =>
  `alerts:\n  jails:\n    - { name: j, match: denial, by: ip, maxretry: 5, findtime: 1m, bantime: 10m${extra} }\n`;
const jailWith = (findtime: string, bantime: string, extra = "") =>
  `alerts:\n  jails:\n    - { name: j, match: denial, by: ip, maxretry: 5, findtime: ${findtime}, bantime: ${bantime}${extra} }\n`;

/** [section of zt.yaml, the key the error must name, what it must say]. */
const REFUSED: Array<[yaml: string, key: string, why: RegExp]> = [
  ["audit: { poll_interval: 0 }\n", "audit.poll_interval", /more than 0/],
  ["audit: { poll_interval: 0s }\n", "audit.poll_interval", /more than 0/],
  ["audit: { poll_interval: 25d }\n", "audit.poll_interval", /at most 2147483647ms/],
  ["audit: { poll_interval: 2147483648ms }\n", "audit.poll_interval", /at most 2147483647ms/],
  ["audit: { checkpoint_interval: 0 }\n", "audit.checkpoint_interval", /more than 0/],
  ["audit: { checkpoint_interval: 30d }\n", "audit.checkpoint_interval", /at most/],
  ["audit: { poll_interval: often }\n", "audit.poll_interval", /expected a duration/],
  [jailWith("0", "10m"), "alerts.jails.0.findtime", /more than 0/],
  [jailWith("1m", "0s"), "alerts.jails.0.bantime", /more than 0/],
  [jail(", max_bantime: 0"), "alerts.jails.0.max_bantime", /more than 0/],
  [jail(", max_bantime: 5m"), "alerts.jails.0.max_bantime", /at least bantime \(10m\)/],
  [
    "alerts: { denial_burst: { threshold: 5, window: 0 } }\n",
    "alerts.denial_burst.window",
    /more than 0/,
  ],
  [
    "alerts: { fan_out: { distinct_routes: 3, window: 0 } }\n",
    "alerts.fan_out.window",
    /more than 0/,
  ],
  [
    "alerts: { mtls_failures: { threshold: 5, window: 0 } }\n",
    "alerts.mtls_failures.window",
    /more than 0/,
  ],
];

const running: UpProcess[] = [];
afterEach(async () => {
  for (const z of running.splice(0)) await z.stop();
});

describe("audit and alerts durations at start", () => {
  it.each(REFUSED)("refuses %j naming %s", async (yaml, key, why) => {
    const dir = tempDir("zt-durations-");
    try {
      const config = writeConfig(dir, `${BASE}${yaml}`, POLICY);
      // A zt that started anyway is killed: the test then fails on its exit code.
      const r = await runZt(["--config", config, "up"], { env: ENV, timeoutMs: 20_000 });
      expect(r.code, r.stderr).toBe(78);
      expect(r.stderr).toMatch(
        new RegExp(`^zt: error ZT_CONFIG_INVALID: .*${key.replace(/\./g, "\\.")}: `),
      );
      expect(r.stderr).toMatch(why);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("starts with the longest timer period, max_bantime equal to bantime, and replay 0 (no history replayed)", async () => {
    const dir = tempDir("zt-durations-");
    const config = writeConfig(
      dir,
      `${BASE}audit: { poll_interval: 2147483647ms, checkpoint_interval: 1s }\n${jail(", max_bantime: 10m")}  replay: 0\n`,
      POLICY,
    );
    running.push(await startZtUp(["--config", config, "up"], { env: ENV }));
  });
});

describe("SIGHUP reload validates the capability sections as the start does", () => {
  it("refuses each bad section naming the key and keeps the last good config", async () => {
    const dir = tempDir("zt-durations-reload-");
    const config = writeConfig(dir, BASE, POLICY);
    expect((await runZt(["--config", config, "init"], { env: ENV })).code).toBe(0);
    const zt = await startZtUp(["--config", config, "up"], { env: withOperatorToken(ENV) });
    running.push(zt);
    const api = new URL(zt.apiUrl);
    const readyz = async () =>
      (
        await request(Number(api.port), { host: api.host, path: "/readyz", headers: OPERATOR_AUTH })
      ).json<{ config_error: string | null; config_restart_required: string[] }>();
    const first = await readyz();
    expect(first.config_error).toBeNull();

    const cases: Array<[yaml: string, key: string]> = [
      ["audit: { poll_interval: 0 }\n", "audit.poll_interval"],
      ["alerts: { denial_burst: { threshold: 5, window: 0 } }\n", "alerts.denial_burst.window"],
      [jail(", max_bantime: 1m"), "alerts.jails.0.max_bantime"],
      ["pki: { svid_ttl: soon }\n", "pki.svid_ttl"],
      ["access: { max_ttl: 0 }\n", "access.max_ttl"],
      ["notifications: { timeout: 0 }\n", "notifications.timeout"],
      ["devices: { report_interval: 0 }\n", "devices.report_interval"],
      ["mfa: { max_failures: 500 }\n", "mfa.max_failures"],
    ];
    let refusals = 0;
    for (const [yaml, key] of cases) {
      writeFileSync(config, `${BASE}${yaml}`);
      zt.child.kill("SIGHUP");
      refusals++;
      const seen = refusals;
      await waitFor(
        () =>
          (zt.output().match(/config reload refused, keeping the last good config/g) ?? [])
            .length >= seen,
        `the reload with ${key} refused`,
        20_000,
      );
      const last = zt
        .output()
        .split("\n")
        .filter((l) => l.includes("config reload refused"))
        .at(-1)!;
      expect(last).toContain(`${key}: `);
      const r = await readyz();
      expect(r.config_error).toContain(`${key}: `);
    }

    // The good file again: applied, nothing left pending a restart.
    writeFileSync(config, BASE);
    zt.child.kill("SIGHUP");
    await waitFor(async () => (await readyz()).config_error === null, "the good reload", 20_000);
    expect((await readyz()).config_restart_required).toEqual([]);
    expect(zt.child.exitCode).toBeNull();
  });
});
