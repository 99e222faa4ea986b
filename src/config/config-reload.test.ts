import { describe, expect, it } from "vitest";
import { parseConfigText } from "./load-config.js";
import { adoptConfigReload, planConfigReload, reloadableConfigVersion } from "./config-reload.js";

const BASE = `data_dir: ./data
listen: { proxy: "127.0.0.1:8443", api: "127.0.0.1:8400" }
routes:
  - { name: a, from: "http://a.test", to: "http://127.0.0.1:9001" }
  - { name: b, from: "http://b.test", to: "http://127.0.0.1:9002" }
`;
const load = (text: string) => parseConfigText(text, "/etc/zt/zt.yaml");

describe("planConfigReload", () => {
  it("sorts routes into added, removed and changed, keeping the unchanged route's object", () => {
    const current = load(BASE);
    const next = load(`data_dir: ./data
listen: { proxy: "127.0.0.1:8443", api: "127.0.0.1:8400" }
routes:
  - { name: a, from: "http://a.test", to: "http://127.0.0.1:9001" }
  - { name: c, from: "http://c.test", to: "http://127.0.0.1:9003" }
  - { name: b, from: "http://b.test", to: "http://127.0.0.1:9999", timeout: 5s }
`);
    const plan = planConfigReload(current, next);
    expect(plan.routes).toEqual({ added: ["c"], removed: [], changed: ["b"] });
    expect(plan.applied).toEqual(["routes"]);
    expect(plan.restartRequired).toEqual([]);
    expect(plan.config.routes.map((r) => r.name)).toEqual(["a", "c", "b"]);
    expect(plan.config.routes[0]).toBe(current.routes[0]);
    expect(plan.config.routes[2]!.to).toBe("http://127.0.0.1:9999");
    const removed = planConfigReload(current, load(BASE.split("\n  - { name: b")[0]!));
    expect(removed.routes).toEqual({ added: [], removed: ["b"], changed: [] });
  });

  it("takes a changed websocket_origins list as a changed route, and a respelling of it as none", () => {
    const withOrigins = (list: string) =>
      load(
        BASE.replace(
          'to: "http://127.0.0.1:9001" }',
          `to: "http://127.0.0.1:9001", websocket_origins: ${list} }`,
        ),
      );
    const current = withOrigins('["https://x.test"]');
    const same = planConfigReload(current, withOrigins('["HTTPS://X.test:443"]'));
    expect(same.routes).toEqual({ added: [], removed: [], changed: [] });
    const changed = planConfigReload(current, withOrigins('["https://x.test", "https://y.test"]'));
    expect(changed.routes).toEqual({ added: [], removed: [], changed: ["a"] });
    expect(changed.config.routes[0]!.websocket_origins).toEqual([
      "https://x.test",
      "https://y.test",
    ]);
    expect(planConfigReload(current, load(BASE)).routes.changed).toEqual(["a"]);
  });

  it("applies the reloadable keys and names every other changed key as needing a restart", () => {
    const current = load(BASE);
    const next =
      load(`${BASE.replace("127.0.0.1:8443", "127.0.0.1:9443")}trusted_proxies: ["10.0.0.0/8"]
limits: { max_body_bytes: 1024, max_header_bytes: 4096 }
session: { ttl: 1h }
forward_auth: { headers: x-original }
api: { trusted_proxies: ["192.0.2.0/24"] }
`);
    const plan = planConfigReload(current, next);
    expect(plan.applied).toEqual([
      "trusted_proxies",
      "limits.max_body_bytes",
      "forward_auth.headers",
      "api.trusted_proxies",
    ]);
    expect(plan.restartRequired.sort()).toEqual([
      "limits.max_header_bytes",
      "listen.proxy",
      "session.ttl",
    ]);
    // Not applied: the restart-only keys keep their value in force.
    expect(plan.config.listen.proxy).toBe("127.0.0.1:8443");
    expect(plan.config.limits.max_header_bytes).toBe(current.limits.max_header_bytes);
    expect(plan.config.sessionTtlMs).toBe(current.sessionTtlMs);
    expect(plan.config.limits.max_body_bytes).toBe(1024);
    expect(plan.config.trusted_proxies).toEqual(["10.0.0.0/8"]);
    expect(plan.config.forward_auth.headers).toBe("x-original");
    expect(plan.config.api.trusted_proxies).toEqual(["192.0.2.0/24"]);
    // The plan never modifies the config in force; adopting it does, reloadable keys only.
    expect(current.limits.max_body_bytes).not.toBe(1024);
    adoptConfigReload(current, plan);
    expect(current.limits.max_body_bytes).toBe(1024);
    expect(current.listen.proxy).toBe("127.0.0.1:8443");
    expect(current.sessionTtlMs).toBe(12 * 3600 * 1000);
  });

  it("finds no change in the same file read again, and the same version after a JSON round trip", () => {
    const a = load(BASE);
    const plan = planConfigReload(a, load(BASE));
    expect(plan.applied).toEqual([]);
    expect(plan.restartRequired).toEqual([]);
    const overIpc = JSON.parse(JSON.stringify(a)) as typeof a;
    expect(reloadableConfigVersion(overIpc)).toBe(reloadableConfigVersion(a));
    expect(
      reloadableConfigVersion(planConfigReload(a, load(`${BASE}trusted_proxies: []\n`)).config),
    ).not.toBe(reloadableConfigVersion(a));
  });
});
