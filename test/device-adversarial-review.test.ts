/**
 * Regression tests for an adversarial review of device enrolment and posture, through the
 * real `bin/zt` (built by `npm run build`) in child processes, a real `zt up` over real
 * sockets and a real store. Each test is named after what it stops.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runZt, startZtUp, type UpProcess } from "./helpers/zt-process.js";
import {
  enrollDevice,
  expectCleanError,
  expectOk,
  masterKeyEnv,
  okJson,
  ztStoreForSuite,
} from "./helpers/zt-cli.js";

const env = masterKeyEnv();

describe("device review: zt device report / bind --server", () => {
  const store = ztStoreForSuite({
    prefix: "zt-device-review-",
    env,
    yaml: `listen: { proxy: "127.0.0.1:0", api: "127.0.0.1:0" }
devices:
  required: [disk_encryption, firewall]
`,
    users: [["alice", []]],
  });
  const { zt } = store;
  let up: UpProcess | undefined;
  /** A server answering every request 200 with an HTML page (a front proxy's). */
  let garbage: http.Server | undefined;
  let garbageUrl = "";

  beforeAll(async () => {
    up = await startZtUp(["--config", store.config, "up"], { env });
    garbage = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>maintenance</html>");
    });
    await new Promise<void>((r) => garbage!.listen(0, "127.0.0.1", r));
    garbageUrl = `http://127.0.0.1:${(garbage.address() as { port: number }).port}`;
  }, 120_000);

  afterAll(async () => {
    await up?.stop();
    garbage?.close();
  });

  function facts(name: string, checks: Record<string, boolean | null>): string {
    const f = join(store.dir, `${name}.json`);
    writeFileSync(f, JSON.stringify({ os: "Debian 12", checks }));
    return f;
  }

  /** `zt device bind --server` with a session token of the right form (no such session). */
  const bind = (keyDir: string, server: string) =>
    runZt(["--config", store.config, "device", "bind", "--key-dir", keyDir, "--server", server], {
      env: { ...env, ZT_SESSION_TOKEN: "x".repeat(43) },
    });

  it("exits 3 for a non-compliant device through the API as it does against the store, and passes on the server's refusal code (not ZT_UNAVAILABLE)", async () => {
    const keyDir = join(store.dir, "k1");
    const id = (await enrollDevice(zt, { as: "alice", keyDir, name: "l1" }))["id"] as string;
    expectOk(await zt(["device", "approve", id]));
    const report = (f: string, server = up!.apiUrl) =>
      zt(["device", "report", "--key-dir", keyDir, "--facts", f, "--server", server, "--json"]);

    const bad = facts("fw-off", { disk_encryption: true, firewall: false });
    const r1 = await report(bad);
    expect(r1.code, r1.stderr).toBe(3);
    expect(JSON.parse(r1.stdout)).toMatchObject({
      device_id: id,
      compliant: false,
      failures: ["required-check-failed:firewall"],
    });

    const good = facts("ok", { disk_encryption: true, firewall: true });
    expect(okJson(await report(good))).toMatchObject({ device_id: id, compliant: true });

    // A refusal keeps the server's code (and so its exit code): a revoked device is a
    // state to act on, not a server to retry.
    expectOk(await zt(["device", "revoke", id]));
    expectCleanError(await report(good), 65, "ZT_ACCESS_STATE", /revoked/);
    expectCleanError(await bind(keyDir, up!.apiUrl), 65, "ZT_ACCESS_STATE", /revoked/);
  }, 120_000);

  it("does not report success when the server's 200 answer is not zt's (a front proxy's page)", async () => {
    const keyDir = join(store.dir, "k2");
    const id = (await enrollDevice(zt, { as: "alice", keyDir, name: "l2" }))["id"] as string;
    expectOk(await zt(["device", "approve", id]));
    const good = facts("ok2", { disk_encryption: true, firewall: true });
    expectCleanError(
      await zt(["device", "report", "--key-dir", keyDir, "--facts", good, "--server", garbageUrl]),
      69,
      "ZT_UNAVAILABLE",
      /not a posture verdict/,
    );
    expectCleanError(await bind(keyDir, garbageUrl), 69, "ZT_UNAVAILABLE", /not a binding/);
  }, 120_000);
});
