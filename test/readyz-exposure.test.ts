/**
 * `/readyz` answers anyone (a load balancer) with its verdict and stable check codes
 * only; the detail behind them (error text naming files, versions, worker state) only
 * to a caller with the operator token (`audit.metrics_token_file`, which also opens
 * /metrics). It gave the refused reload's error, with zt.yaml's full path, to anyone.
 *
 * Real `zt up` processes over real sockets; waits poll for observable state.
 */
import { afterEach, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
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

const PERMIT_ALL = '@id("all")\npermit (principal, action, resource);\n';
const CONFIG = `data_dir: ./data
trust_domain: readyz.test
policies: ./policies
routes:
  - { name: app, from: "http://app.localhost", to: "http://127.0.0.1:9" }
`;
const ENV = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };

const running: UpProcess[] = [];
afterEach(async () => {
  for (const z of running.splice(0)) await z.stop();
});

async function up(env: Record<string, string>) {
  const dir = tempDir();
  const config = writeConfig(dir, CONFIG, { "main.cedar": PERMIT_ALL });
  expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
  const zt = await startZtUp(["--config", config, "up"], { env });
  running.push(zt);
  return { dir, config, zt };
}

async function readyz(zt: UpProcess, headers: Record<string, string> = {}) {
  const api = new URL(zt.apiUrl);
  const r = await request(Number(api.port), { host: api.host, path: "/readyz", headers });
  return { status: r.status, text: r.body, body: r.json<Record<string, unknown>>() };
}

/** zt.yaml with a key zt does not know, and a policy that does not parse; then SIGHUP. */
async function breakReload(dir: string, config: string, zt: UpProcess) {
  writeFileSync(config, `${CONFIG}routes_typo: 1\n`);
  writeFileSync(join(dir, "policies", "main.cedar"), "permit (");
  zt.child.kill("SIGHUP");
}

describe("/readyz exposure", () => {
  it("gives anyone the status and check codes only, the detail to the operator token", async () => {
    const { dir, config, zt } = await up(withOperatorToken(ENV));
    const good = await readyz(zt);
    expect(good.status).toBe(200);
    expect(good.body).toEqual({
      status: "ready",
      checks: {
        store: "ok",
        policy: "ok",
        policy_watch: "ok",
        config: "ok",
        events: "ok",
        pki_rotation: "ok",
      },
    });

    await breakReload(dir, config, zt);
    await waitFor(
      async () => {
        const b = (await readyz(zt, OPERATOR_AUTH)).body;
        return b["config_error"] !== null && b["policy_error"] !== null;
      },
      "the refused reloads",
      20_000,
    );

    // The operator: the errors, naming the files.
    const detail = await readyz(zt, OPERATOR_AUTH);
    expect(detail.body["config_error"]).toContain(config);
    expect(detail.body["config_error"]).toContain("routes_typo");
    expect(detail.body["policy_error"]).toEqual(expect.any(String));
    expect(detail.body).toHaveProperty("policy_version");
    expect(detail.body).toMatchObject({
      checks: { config: "config-reload-failed", policy: "policy-reload-failed" },
    });

    // Anyone, and a wrong token: the codes, no file, key or error text.
    for (const headers of [{}, { authorization: "Bearer not-the-operator-token" }]) {
      const pub = await readyz(zt, headers);
      expect(pub.body).toEqual({
        status: "ready",
        checks: {
          store: "ok",
          policy: "policy-reload-failed",
          policy_watch: "ok",
          config: "config-reload-failed",
          events: "ok",
          pki_rotation: "ok",
        },
      });
      expect(pub.text).not.toContain(dir);
      expect(pub.text).not.toContain("routes_typo");
    }
  });

  it("gives no detail to anyone when no operator token is configured", async () => {
    const { dir, config, zt } = await up(ENV);
    await breakReload(dir, config, zt);
    await waitFor(
      async () =>
        (await readyz(zt)).body["checks"] !== undefined &&
        (await readyz(zt)).text.includes("config-reload-failed"),
      "the refused reload",
      20_000,
    );
    for (const headers of [{}, { authorization: "Bearer anything" }]) {
      const pub = await readyz(zt, headers);
      expect(Object.keys(pub.body).sort()).toEqual(["checks", "status"]);
      expect(pub.text).not.toContain(dir);
    }
  });
});
