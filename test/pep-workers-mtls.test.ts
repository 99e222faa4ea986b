/**
 * mTLS in PEP worker processes (`listen.proxy_workers` > 1) with a listener certificate
 * from files (`tls: { cert, key }`, not `from_ca`): every worker verifies client SVIDs
 * against zt's CA and hears revocations, as the single-process PEP does.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import https from "node:https";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runZt, startZtUp, tempDir, writeConfig, type UpProcess } from "./helpers/zt-process.js";
import { startRecordingUpstream } from "./helpers/upstream.js";

const TD = "workers-mtls.test";
const POLICY = `
@id("web-calls-app")
permit (principal == Service::"spiffe://${TD}/web", action, resource == App::"app");
`;

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

describe("zt up with listen.proxy_workers: 2, tls cert/key files and client_certs: optional", () => {
  let dir: string;
  let config: string;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let zt: UpProcess;
  let port: number;
  let bundle: string;
  let web: { key: string; cert: string; serial: string };
  const env = {
    ZT_LISTEN__PROXY: "127.0.0.1:0",
    ZT_LISTEN__API: "127.0.0.1:0",
    ZT_LISTEN__PROXY_WORKERS: "2",
  };

  /** One request on a fresh connection (so either worker may answer), with the web SVID. */
  function get(): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port,
          path: "/",
          servername: "localhost",
          ca: bundle,
          key: web.key,
          cert: web.cert,
          agent: false,
          headers: { host: "app.localhost", accept: "application/json" },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (text += d));
          res.on("end", () => {
            let body: Record<string, unknown> = {};
            try {
              body = JSON.parse(text) as Record<string, unknown>;
            } catch {
              /* not JSON: the upstream's answer */
            }
            resolve({ status: res.statusCode ?? 0, body });
          });
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  const zt_ = async (args: string[]) => {
    const r = await runZt(["--config", config, ...args], { env });
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  };

  beforeAll(async () => {
    dir = tempDir();
    upstream = await startRecordingUpstream();
    const base = `data_dir: ./data
trust_domain: ${TD}
routes:
  - { name: app, from: "https://app.localhost", to: "http://127.0.0.1:${upstream.port}" }
policies: ./policies
`;
    config = writeConfig(dir, base, { "main.cedar": POLICY });
    await zt_(["init"]);
    // The listener's certificate and key as files (here from zt's CA; any CA would do).
    const issue = (id: string, out: string, ...more: string[]) =>
      zt_([
        "cert",
        "issue",
        "--spiffe-id",
        `spiffe://${TD}/${id}`,
        "--out",
        join(dir, out),
        ...more,
      ]);
    await issue("listener", "listener", "--dns", "localhost", "--ttl", "24h");
    const issued = JSON.parse(await issue("web", "web", "--json")) as { serial: string };
    web = {
      key: readFileSync(join(dir, "web", "svid.key"), "utf8"),
      cert: readFileSync(join(dir, "web", "chain.pem"), "utf8"),
      serial: issued.serial,
    };
    bundle = readFileSync(join(dir, "web", "bundle.pem"), "utf8");
    writeFileSync(
      config,
      base +
        `tls:\n  cert: ${join(dir, "listener", "chain.pem")}\n  key: ${join(dir, "listener", "svid.key")}\n  client_certs: optional\n`,
    );
    zt = await startZtUp(["--config", config, "up"], { env });
    port = Number(new URL(zt.pepUrl).port);
  }, 120_000);

  afterAll(async () => {
    await zt?.stop();
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("stops the workers from refusing every SVID as cert-untrusted: allowed by policy on each connection", async () => {
    expect(zt.output()).toContain("(2 worker processes)");
    const before = upstream.seen.length;
    for (let i = 0; i < 16; i++) {
      const r = await get();
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    expect(upstream.seen.length - before).toBe(16);
  });

  it("applies a revocation made by another process in every worker (403 cert-revoked)", async () => {
    await zt_(["cert", "revoke", web.serial]);
    const end = Date.now() + 20_000;
    for (;;) {
      let refused = 0;
      for (let i = 0; i < 16; i++) {
        const r = await get();
        if (
          r.status === 403 &&
          (r.body["error"] as { reason?: string } | undefined)?.reason === "cert-revoked"
        )
          refused++;
      }
      if (refused === 16) break;
      if (Date.now() > end) throw new Error("the workers did not all refuse the revoked SVID");
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
