/**
 * Without a `tls:` block zt serves plain HTTP, which it allows on loopback only — for the
 * API as for the PEP: the API carries session tokens (Bearer), join tokens and SVID
 * requests. `listen.api: 0.0.0.0:…` without TLS used to serve all of that in clear on
 * every interface. The real CLI; nothing is left listening.
 */
import { describe, expect, it } from "vitest";
import { runZt, tempDir, writeConfig } from "./helpers/zt-process.js";

describe("plain HTTP listeners", () => {
  const config = writeConfig(
    tempDir(),
    `data_dir: ./data\ntrust_domain: plain.test\npolicies: ./policies\nroutes: []\n`,
    { "main.cedar": `permit (principal, action, resource);\n` },
  );

  it.each([
    ["listen.api", { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "0.0.0.0:0" }],
    ["listen.proxy", { ZT_LISTEN__PROXY: "0.0.0.0:0", ZT_LISTEN__API: "127.0.0.1:0" }],
  ])(
    "refuses %s off loopback without tls, naming the key",
    async (key, env) => {
      expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
      const r = await runZt(["--config", config, "up"], { env });
      expect(r.code).toBe(78);
      expect(r.stderr).toContain(`ZT_CONFIG_INVALID`);
      expect(r.stderr).toContain(`${key}: plain HTTP is allowed only on loopback`);
    },
    20_000,
  );
});
