/**
 * `zt forward-auth config KIND` through the real CLI: what it derives from zt.yaml, what
 * it refuses (exit 64, a message naming the setting, no stack trace), and that every
 * configuration docs/forward-auth.md shows is exactly its output for the documented
 * zt.yaml. The generated configurations run in the real nginx, Caddy and HAProxy in
 * forward-auth-proxies.test.ts.
 */
import { describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, runZt, tempDir } from "./helpers/zt-process.js";
import { parse as parseYaml } from "yaml";
import { FRONT_PROXY_KINDS } from "../src/proxy/front-proxy-config.js";
import { makePrivateCa } from "./helpers/tls.js";

function configFile(yaml: string): string {
  const p = join(tempDir("zt-fa-config-"), "zt.yaml");
  writeFileSync(p, yaml);
  return p;
}

const ONE_ROUTE = `
listen: { proxy: "0.0.0.0:8443" }
routes:
  - name: app
    from: https://app.example.com
    to: http://127.0.0.1:9000
`;

async function config(yaml: string, ...args: string[]) {
  return runZt(["--config", configFile(yaml), "forward-auth", "config", ...args]);
}

/** The refusal a user sees: exit 64 and one clear line, never a stack trace. */
function expectUsageError(r: { code: number; stdout: string; stderr: string }, says: RegExp): void {
  expect(r.code, r.stderr).toBe(64);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(/^zt: error ZT_USAGE: /);
  expect(r.stderr).toMatch(says);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe("zt forward-auth config", () => {
  it("shows in docs/forward-auth.md exactly what it writes for the documented zt.yaml", async () => {
    const doc = readFileSync(join(ROOT, "docs", "forward-auth.md"), "utf8");
    const sample = /<!-- forward-auth sample -->\n```yaml\n([\s\S]*?)```/.exec(doc);
    expect(sample, "the documented zt.yaml").not.toBeNull();
    const file = configFile(sample![1]!);
    const blocks = [
      ...doc.matchAll(/<!-- zt forward-auth config (\S+) -->\n```\w*\n([\s\S]*?)```/g),
    ];
    // Every kind is shown once; a kind dropped from the docs would go untested here.
    expect(blocks.map((b) => b[1]).sort()).toEqual([...FRONT_PROXY_KINDS].sort());
    for (const [, kind, text] of blocks) {
      const r = await runZt(["--config", file, "forward-auth", "config", kind!]);
      expect(r.code, r.stderr).toBe(0);
      expect(text, `docs/forward-auth.md, ${kind}`).toBe(r.stdout);
    }
  }, 60_000);

  it("prints the shipped Lua action for haproxy-lua --print-lua", async () => {
    const r = await config(ONE_ROUTE, "haproxy-lua", "--print-lua");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(readFileSync(join(ROOT, "examples", "haproxy", "zt-authz.lua"), "utf8"));
  });

  it("takes zt's address, the SPOE agent and the session cookie name from zt.yaml", async () => {
    const yaml = `${ONE_ROUTE}
forward_auth: { spoa_listen: "0.0.0.0:12345" }
session: { cookie_name: corp_zt }
`;
    const nginx = await config(yaml, "nginx");
    expect(nginx.code, nginx.stderr).toBe(0);
    // A wildcard listen address is reached on loopback.
    expect(nginx.stdout).toContain("upstream zt { server 127.0.0.1:8443; keepalive 32; }");
    expect(nginx.stdout).toContain(`"~^corp_zt=[^;]*(?:;\\s*)?(?<rest>.*)$" "$rest";`);
    expect(nginx.stdout).not.toContain("zt_session");
    const haproxy = await config(yaml, "haproxy");
    expect(haproxy.stdout).toContain("    server zt 127.0.0.1:12345");
    expect(haproxy.stdout).toContain("corp_zt\\s*=[^;,]*");
    expect(haproxy.stdout).toContain("{ req.cook_cnt(corp_zt) gt 0 }");
    expect(haproxy.stdout).not.toContain("zt_session");
    const spoe = await config(yaml, "haproxy-spoe");
    expect(spoe.stdout).toContain("session=req.cook(corp_zt) sessions=req.cook_cnt(corp_zt)");
    expect(spoe.stdout).not.toContain("zt_session");
    const lua = await config(yaml, "haproxy-lua");
    expect(lua.stdout).toContain("    setenv ZT_SESSION_COOKIE corp_zt");
    const caddy = await config(yaml, "caddy");
    expect(caddy.stdout).toContain(`header_up Cookie "(^|;\\s*)corp_zt=[^;]*(;\\s*|$)" "$1"`);
    const traefik = await config(yaml, "traefik");
    expect(traefik.stdout).toContain('address: "http://127.0.0.1:8443/.zt/authz"');
  });

  it("honours --zt, --bind and --route", async () => {
    const yaml = `${ONE_ROUTE}  - name: wiki
    from: http://wiki.example.com:8080
    to: http://127.0.0.1:9100
`;
    const r = await config(
      yaml,
      "nginx",
      "--zt",
      "10.0.0.7:8443",
      "--bind",
      "127.0.0.1",
      "--route",
      "wiki",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("upstream zt { server 10.0.0.7:8443; keepalive 32; }");
    expect(r.stdout).toContain("    listen 127.0.0.1:8080;");
    expect(r.stdout).toContain("server_name wiki.example.com;");
    expect(r.stdout).not.toContain("app.example.com");
    const both = await config(yaml, "caddy");
    expect(both.stdout).toContain("app.example.com {");
    expect(both.stdout).toContain("http://wiki.example.com:8080 {");
  });

  it("writes Traefik a dynamic configuration whose every reference resolves (Traefik itself is not run here)", async () => {
    const yaml = `${ONE_ROUTE}  - name: api
    from: https://app.example.com/api
    to: http://127.0.0.1:9100
  - name: other
    from: http://a-b.example.com
    to: http://127.0.0.1:9200
  - name: other2
    from: http://a.b.example.com
    to: http://127.0.0.1:9300
`;
    const r = await config(yaml, "traefik");
    expect(r.code, r.stderr).toBe(0);
    const doc = parseYaml(r.stdout) as {
      http: {
        middlewares: Record<string, unknown>;
        routers: Record<string, { rule: string; service: string; middlewares?: string[] }>;
        services: Record<string, { loadBalancer: { servers: { url: string }[] } }>;
      };
    };
    const { routers, services, middlewares } = doc.http;
    // One router per route and one for zt's pages per host: names never collide.
    expect(Object.keys(routers)).toHaveLength(4 + 3);
    for (const [name, router] of Object.entries(routers)) {
      expect(services[router.service], `${name} → ${router.service}`).toBeDefined();
      for (const m of router.middlewares ?? []) expect(middlewares[m], m).toBeDefined();
      if (name.startsWith("zt-route-"))
        expect(router.middlewares).toEqual(["zt-authz", "zt-strip-token"]);
    }
    expect(routers["zt-route-api"]!.rule).toBe(
      "Host(`app.example.com`) && (Path(`/api`) || PathPrefix(`/api/`))",
    );
    expect(services["zt-route-other2"]!.loadBalancer.servers[0]!.url).toBe("http://127.0.0.1:9300");
  });

  it("verifies an https app against its route's upstream_ca in every output, and refuses what a front proxy cannot do", async () => {
    const dir = tempDir("zt-fa-ca-");
    const ca = makePrivateCa(dir, "app.internal");
    const yaml = `${ONE_ROUTE}  - name: private
    from: https://app.example.com/private
    to: https://app.internal:8443
    upstream_ca: ${ca.caFile}
`;
    const out = async (kind: string, ...args: string[]) => {
      const r = await config(yaml, kind, ...args);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    const nginx = await out("nginx");
    expect(nginx).toContain(`proxy_ssl_trusted_certificate ${ca.caFile};`);
    expect(nginx).toMatch(/proxy_ssl_verify_depth 4;/);
    expect(await out("haproxy-lua")).toContain(
      `server app app.internal:8443 ssl verify required ca-file ${ca.caFile} sni str(app.internal)`,
    );
    expect(await out("caddy")).toContain(`tls_trusted_ca_certs ${ca.caFile}`);
    const doc = parseYaml(await out("traefik")) as {
      http: {
        services: Record<string, { loadBalancer: { serversTransport?: string } }>;
        serversTransports: Record<string, { rootCAs: string[] }>;
      };
    };
    const transport = doc.http.services["zt-route-private"]!.loadBalancer.serversTransport!;
    expect(doc.http.serversTransports[transport]!.rootCAs).toEqual([ca.caFile]);
    expect(doc.http.services["zt-route-app"]!.loadBalancer.serversTransport).toBeUndefined();
    // A path each proxy would have to quote its own way.
    const spaced = join(dir, "my ca.pem");
    writeFileSync(spaced, readFileSync(ca.caFile));
    expectUsageError(
      await config(yaml.replace(ca.caFile, JSON.stringify(spaced)), "nginx"),
      /route "private": upstream_ca .* is not an absolute path of letters/,
    );
    // Behind a front proxy zt does not connect to the app, so it cannot present its SVID.
    expectUsageError(
      await config(yaml.replace(`upstream_ca: ${ca.caFile}`, "upstream_mtls: true"), "caddy"),
      /route "private": upstream_mtls is on; behind a front proxy the proxy, not zt, connects/,
    );
    // --route leaves such a route to zt's own proxy.
    const mtls = yaml.replace(`upstream_ca: ${ca.caFile}`, "upstream_mtls: true");
    const rest = await config(mtls, "nginx", "--route", "app");
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stdout).toContain("zt_route_app");
    expect(rest.stdout).not.toContain("zt_route_private");
  });

  it("notes on stderr that a route's websocket_origins is not enforced behind a front proxy", async () => {
    const plain = await config(ONE_ROUTE, "nginx");
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toBe("");
    const listed = await config(
      `${ONE_ROUTE}    websocket_origins: ["https://portal.example.com"]\n`,
      "nginx",
    );
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toBe(plain.stdout);
    expect(listed.stderr).toMatch(
      /^zt: note: websocket_origins \(routes app\) is not enforced behind a front proxy: .*\n$/,
    );
  });

  it("refuses what it cannot write faithfully, naming the setting", async () => {
    expectUsageError(
      await config(ONE_ROUTE, "envoy"),
      /unknown proxy "envoy".*nginx, caddy, traefik, haproxy/,
    );
    expectUsageError(await config(ONE_ROUTE, "haproxy"), /forward_auth\.spoa_listen/);
    expectUsageError(
      await config(ONE_ROUTE, "nginx", "--print-lua"),
      /--print-lua goes with haproxy-lua/,
    );
    expectUsageError(
      await config(ONE_ROUTE, "nginx", "--route", "nope"),
      /no route named "nope" \(routes: app\)/,
    );
    expectUsageError(
      await config(ONE_ROUTE, "nginx", "--zt", "localhost"),
      /zt's address "localhost" \(--zt, or listen\.proxy\): expected host:port/,
    );
    expectUsageError(await config("routes: []\n", "nginx"), /no routes/);
    expectUsageError(
      await config(`${ONE_ROUTE}forward_auth: { enabled: false }\n`, "nginx"),
      /forward-auth is off in zt\.yaml \(forward_auth\.enabled: false\)/,
    );
    expectUsageError(
      await config(
        ONE_ROUTE.replace("http://127.0.0.1:9000", "http://127.0.0.1:9000/base"),
        "caddy",
      ),
      /route "app": to \(http:\/\/127\.0\.0\.1:9000\/base\) has a path/,
    );
    expectUsageError(
      await config(
        `${ONE_ROUTE}  - name: plain
    from: http://app.example.com:443/x
    to: http://127.0.0.1:9001
`,
        "nginx",
      ),
      /serve app\.example\.com:443 over both http and https/,
    );
    expectUsageError(
      await config(`${ONE_ROUTE}tls: { cert: /etc/zt/tls.crt, key: /etc/zt/tls.key }\n`, "nginx"),
      /PEP listener uses TLS/,
    );
    expectUsageError(
      await config(
        `routes:
  - name: v6
    from: http://[::1]:8080
    to: http://127.0.0.1:9000
`,
        "haproxy-lua",
      ),
      /IPv6 literal host/,
    );
    // Hosts and prefixes go into the proxies' languages unquoted: only plain ones.
    // (zt.yaml itself refuses a route host that is not a DNS name or an IP address.)
    const odd = await config(
      ONE_ROUTE.replace("https://app.example.com", 'https://app.example.com;}"'),
      "nginx",
    );
    expect(odd.code).not.toBe(0);
    expect(odd.stdout).toBe("");
    expect(odd.stderr).toMatch(/routes\[0\]\.from: route "app": host .* is not a DNS name/);
    expectUsageError(
      await config(
        ONE_ROUTE.replace("https://app.example.com", "https://app.example.com/a*"),
        "caddy",
      ),
      /route "app": the path prefix "\/a\*" holds characters/,
    );
    expectUsageError(
      await config(
        ONE_ROUTE.replace("https://app.example.com", "https://app.example.com/a%20b"),
        "nginx",
      ),
      /the path prefix "\/a%20b"/,
    );
    expectUsageError(
      await config(
        ONE_ROUTE.replace("http://127.0.0.1:9000", "http://app{x}.internal"),
        "haproxy-lua",
      ),
      /the host of to .* is not a plain DNS name/,
    );
    // Flags that would print a configuration the proxy rejects or misreads.
    expectUsageError(await config(ONE_ROUTE, "nginx", "--zt", "127.0.0.1:99999"), /--zt/);
    expectUsageError(await config(ONE_ROUTE, "nginx", "--bind", "::1]"), /--bind "::1\]"/);
    expectUsageError(await config(ONE_ROUTE, "nginx", "--bind", ""), /--bind ""/);
    expectUsageError(
      await config(ONE_ROUTE, "haproxy", "--spoa", "127.0.0.1:1", "--spoe-file", ""),
      /--spoe-file ""/,
    );
    expectUsageError(
      await config(ONE_ROUTE.replace("http://127.0.0.1:9000", "https://10.0.0.5:8443"), "nginx"),
      /https by IP address/,
    );
    // A config zt itself refuses is refused here with zt's own message.
    const bad = await config("routes: [{ name: app }]\n", "nginx");
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/routes\[0\]\.from/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
  }, 180_000); // about twenty CLI runs, one process start each
});
