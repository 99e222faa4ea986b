import { describe, expect, it } from "vitest";
import { parseConfigText } from "./load-config.js";
import { isZtError } from "../core/errors.js";

function configError(text: string, env: Record<string, string> = {}): string {
  try {
    parseConfigText(text, "/etc/zt/zt.yaml", { env });
  } catch (e) {
    if (isZtError(e)) {
      expect(e.code).toBe("ZT_CONFIG_INVALID");
      return e.message;
    }
    throw e;
  }
  throw new Error("config was accepted");
}

describe("zt.yaml", () => {
  it("accepts the documented example and resolves paths relative to the file", () => {
    const c = parseConfigText(
      `data_dir: ./data
trust_domain: example.test
listen: { proxy: "127.0.0.1:8443", api: "127.0.0.1:8400" }
routes:
  - name: whoami
    from: http://Whoami.Localhost.:8443/app/
    to: http://127.0.0.1:9000
policies: ./policies
`,
      "/etc/zt/zt.yaml",
    );
    expect(c.data_dir).toBe("/etc/zt/data");
    expect(c.policies).toBe("/etc/zt/policies");
    expect(c.routes[0]).toMatchObject({
      name: "whoami",
      host: "whoami.localhost",
      port: 8443,
      pathPrefix: "/app",
    });
    expect(c.sessionTtlMs).toBe(12 * 3600 * 1000);
  });

  it("names the key path and what was expected", () => {
    expect(configError("listen: { proxy: 8443 }")).toMatch(/listen\.proxy/);
    expect(
      configError("routes:\n  - name: Bad Name\n    from: http://a\n    to: http://b"),
    ).toMatch(/routes\[0\]\.name/);
    expect(configError("routes:\n  - name: a\n    from: ftp://a\n    to: http://b")).toMatch(
      /routes\[0\]\.from.*http/,
    );
    // A host the PEP refuses in a Host header could never match: refused at load.
    for (const host of ["app;x.example.com", "a_b.example.com", 'a"b']) {
      expect(
        configError(`routes:\n  - { name: a, from: 'http://${host}/', to: 'http://b' }`),
      ).toMatch(/routes\[0\]\.from: route "a": host .* is not a DNS name or IP address/);
    }
    // Routes are told apart by host and path only: a second port or scheme is no new route.
    expect(
      configError(
        "routes:\n  - { name: a, from: 'http://app.test:8081', to: 'http://b' }\n  - { name: s, from: 'https://APP.test:8082/', to: 'http://c' }",
      ),
    ).toMatch(/routes "a" and "s" have the same host and path prefix \(app\.test\)/);
    expect(configError("trust_domian: x")).toMatch(/unknown key.*trust_domian/);
    expect(configError("session: { ttl: forever }")).toMatch(/session\.ttl/);
    expect(configError("forward_auth: { headers: traefik }")).toMatch(
      /forward_auth\.headers.*x-original.*x-forwarded/,
    );
    expect(
      configError(
        "routes:\n  - { name: a, from: 'http://a', to: 'http://b' }\n  - { name: a, from: 'http://c', to: 'http://d' }",
      ),
    ).toMatch(/duplicate route name/);
  });

  it("does not echo a file that is not a config: --config /etc/shadow printed every line's hash", () => {
    const shadow = [
      "root:$6$Qx3FsaltSALT$hashhashhashhashhashhash:20228:0:99999:7:::",
      "daemon:*:20228:0:99999:7:::",
    ].join("\n");
    const message = configError(`${shadow}\ndata_dirr: x\n`);
    expect(message).toMatch(/unknown key\(s\) "data_dirr", 2 that are not setting names/);
    expect(message).not.toMatch(/\$6\$|hash|daemon/);
    const many = configError(
      ["a1", "a2", "a3", "a4", "a5", "a6", "a7"].map((k) => `${k}: 1`).join("\n"),
    );
    expect(many).toMatch(/unknown key\(s\) "a1", "a2", "a3", "a4", "a5", 2 more$/);
  });

  it("refuses a malformed CIDR instead of reading it as /0 (trust every address)", () => {
    // "10.0.0.1/" once parsed as 10.0.0.1/0: every client a trusted proxy.
    for (const bad of [
      "10.0.0.1/",
      "10.0.0.0/8/9",
      "10.0.0.0/33",
      "::1/129",
      "10.0.0.0/+8",
      "10.0.0.0/0x8",
      "host.example",
    ]) {
      expect(configError(`trusted_proxies: ["${bad}"]`)).toMatch(
        /trusted_proxies\[0\]: .*IP address or CIDR/,
      );
      expect(configError(`network_labels: { office: ["${bad}"] }`)).toMatch(
        /network_labels\.office\[0\]: .*IP address or CIDR/,
      );
      expect(configError(`api: { trusted_proxies: ["10.0.0.0/8", "${bad}"] }`)).toMatch(
        /api\.trusted_proxies\[1\]: .*IP address or CIDR/,
      );
    }
    // The API trusts no proxy unless told: X-Forwarded-For is read from nobody by default.
    expect(parseConfigText("", "/etc/zt/zt.yaml").api.trusted_proxies).toEqual([]);
    const c = parseConfigText(
      `trusted_proxies: ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]\nnetwork_labels: { any: ["0.0.0.0/0"] }\n`,
      "/etc/zt/zt.yaml",
    );
    expect(c.trusted_proxies).toEqual(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
  });

  it("refuses an SPOE agent with forward-auth switched off", () => {
    expect(configError('forward_auth: { enabled: false, spoa_listen: "127.0.0.1:12345" }')).toMatch(
      /forward_auth\.spoa_listen: .*needs forward_auth\.enabled: true/,
    );
    expect(parseConfigText("{}", "/etc/zt/zt.yaml").forward_auth.enabled).toBe(true);
  });

  it("reports YAML syntax errors with a line number", () => {
    expect(configError("routes: [\n  {")).toMatch(/zt\.yaml:\d+:\d+/);
    expect(configError("- just\n- a list")).toMatch(/mapping/);
  });

  it("lets ZT_ environment variables override keys", () => {
    const c = parseConfigText("data_dir: ./data\n", "/srv/zt.yaml", {
      env: {
        ZT_DATA_DIR: "/var/lib/zt",
        ZT_LISTEN__PROXY: "127.0.0.1:0",
        ZT_CONFIG: "ignored",
        ZT_UNKNOWN_THING: "x",
      },
    });
    expect(c.data_dir).toBe("/var/lib/zt");
    expect(c.listen.proxy).toBe("127.0.0.1:0");
    expect(configError("{}", { ZT_LISTEN__API: "nope" })).toMatch(/listen\.api/);
  });
});

describe("zt.yaml values the runtime cannot use are refused at load, naming the key", () => {
  it("refuses a time_zone Intl does not know (zt up once failed with ZT_INTERNAL)", () => {
    expect(configError("time_zone: Mars/Olympus")).toMatch(/time_zone: .*time zone/);
    expect(parseConfigText("time_zone: Europe/Paris", "/etc/zt/zt.yaml").time_zone).toBe(
      "Europe/Paris",
    );
  });

  it("refuses zero durations that switch a timeout off or kill every session", () => {
    // 0 would disable Node's slowloris timeouts, the upstream socket timeout, make every
    // session expire or idle out at birth, and make the PEP deny everything as stale.
    for (const [yaml, key] of [
      ["limits: { header_timeout: 0 }", "limits.header_timeout"],
      ["limits: { request_timeout: 0s }", "limits.request_timeout"],
      ["session: { ttl: 0 }", "session.ttl"],
      ["session: { idle_timeout: 0m }", "session.idle_timeout"],
      ["session: { recheck_interval: 0 }", "session.recheck_interval"],
      ["max_staleness: 0", "max_staleness"],
      [
        "routes:\n  - { name: a, from: 'http://a', to: 'http://b', timeout: 0 }",
        "routes[0].timeout",
      ],
    ] as const) {
      expect(configError(yaml)).toMatch(new RegExp(`${key.replace(/[.[\]]/g, "\\$&")}: .*above 0`));
    }
  });

  it("keeps events 24h by default, and refuses a retention below max_staleness", () => {
    expect(parseConfigText("{}", "/etc/zt/zt.yaml").eventRetentionMs).toBe(86_400_000);
    expect(parseConfigText("events: { retention: 7d }", "/etc/zt/zt.yaml").eventRetentionMs).toBe(
      7 * 86_400_000,
    );
    expect(configError("events: { retention: 0 }")).toMatch(/events\.retention: .*above 0/);
    // A process briefly cut off (still deciding) would routinely lose its place.
    expect(configError("events: { retention: 1m }")).toMatch(
      /events\.retention: expected at least max_staleness/,
    );
    expect(configError("events: { keep: 1d }")).toMatch(/events/);
  });

  it("refuses timer durations past what a Node timer holds (it would fire after 1 ms)", () => {
    for (const [yaml, key] of [
      ["limits: { header_timeout: 30d, request_timeout: 30d }", "limits.header_timeout"],
      ["session: { recheck_interval: 25d }", "session.recheck_interval"],
      [
        "routes:\n  - { name: a, from: 'http://a', to: 'http://b', timeout: 90d }",
        "routes[0].timeout",
      ],
    ] as const) {
      expect(configError(yaml)).toMatch(
        new RegExp(`${key.replace(/[.[\]]/g, "\\$&")}: .*at most 24d`),
      );
    }
    // A number too large to be a duration at all.
    expect(configError(`session: { ttl: "${"9".repeat(400)}d" }`)).toMatch(/session\.ttl/);
  });

  it("takes limits.reload_grace of 0s (cut at once) up to 24d, and names it otherwise", () => {
    expect(parseConfigText("", "/z.yaml").limits.reload_grace).toBe("10s");
    expect(parseConfigText("limits: { reload_grace: 0s }", "/z.yaml").limits.reload_grace).toBe(
      "0s",
    );
    expect(configError("limits: { reload_grace: soon }")).toMatch(/limits\.reload_grace/);
    expect(configError("limits: { reload_grace: 30d }")).toMatch(
      /limits\.reload_grace: .*at most 24d/,
    );
    expect(configError("limits: { reload_grace: -5 }")).toMatch(/limits\.reload_grace/);
  });

  it("checks limits.header_timeout and request_timeout at load (they were parsed only by the PEP)", () => {
    expect(configError("limits: { header_timeout: abc }")).toMatch(/limits\.header_timeout/);
    // Node throws ERR_OUT_OF_RANGE at listen when headers may take longer than the request.
    expect(configError("limits: { header_timeout: 2m, request_timeout: 1m }")).toMatch(
      /limits\.header_timeout: .*at most limits\.request_timeout/,
    );
    const c = parseConfigText("limits: { header_timeout: 5s, request_timeout: 5s }", "/z.yaml");
    expect(c.limits.header_timeout).toBe("5s");
  });

  it("says which environment variable set a refused value", () => {
    expect(configError("{}", { ZT_LISTEN__API: "nope" })).toMatch(/listen\.api.*ZT_LISTEN__API/);
    expect(configError("{}", { ZT_SESSION__TTL: "0" })).toMatch(/session\.ttl.*ZT_SESSION__TTL/);
  });
});

describe("the config file itself", () => {
  it("names a config path that is a directory instead of failing with ZT_INTERNAL", async () => {
    const { mkdtempSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { loadConfig } = await import("./load-config.js");
    const dir = mkdtempSync(`${tmpdir()}/zt-cfg-`);
    try {
      loadConfig(dir);
      throw new Error("accepted");
    } catch (e) {
      expect(isZtError(e) && e.code).toBe("ZT_CONFIG_INVALID");
      expect((e as Error).message).toContain(`cannot read config file ${dir}`);
    }
  });
});

describe("listen addresses and the cookie domain", () => {
  it("refuses a port above 65535 at load (zt up failed with ZT_INTERNAL ERR_SOCKET_BAD_PORT)", () => {
    expect(configError('listen: { api: "127.0.0.1:99999" }')).toMatch(/listen\.api: .*port/);
    expect(configError('listen: { proxy: "[::1]:65536" }')).toMatch(/listen\.proxy: .*port/);
    expect(configError('forward_auth: { spoa_listen: "127.0.0.1:70000" }')).toMatch(
      /forward_auth\.spoa_listen: .*port/,
    );
    expect(parseConfigText('listen: { api: "[::1]:65535" }', "/z.yaml").listen.api).toBe(
      "[::1]:65535",
    );
  });

  it("refuses a cookie_domain that is not a domain name (it is written into Set-Cookie as is)", () => {
    for (const bad of [
      "a b; SameSite=None",
      "example.test; Secure",
      "https://example.test",
      "x\\r\\ny",
    ])
      expect(configError(`session: { cookie_domain: "${bad}" }`)).toMatch(/session\.cookie_domain/);
    for (const ok of [".example.test", "example.test", "apps.example-1.test"])
      expect(
        parseConfigText(`session: { cookie_domain: "${ok}" }`, "/z.yaml").session.cookie_domain,
      ).toBe(ok);
  });
});

describe("session.cookie_name prefixes", () => {
  it("stops a __Host- cookie_name with a cookie_domain (browsers drop every such cookie: each sign-in 'succeeded' into a login loop)", () => {
    for (const name of ["__Host-zt_session", "__host-zt"])
      expect(
        configError(`session: { cookie_name: "${name}", cookie_domain: ".example.test" }`),
      ).toMatch(/session\.cookie_name: .*__Host-.*cookie_domain/);
    // Either alone is fine, and so is __Secure- with a domain.
    expect(
      parseConfigText('session: { cookie_name: "__Host-zt_session" }', "/z.yaml").session
        .cookie_name,
    ).toBe("__Host-zt_session");
    expect(
      parseConfigText(
        'session: { cookie_name: "__Secure-zt", cookie_domain: ".example.test" }',
        "/z.yaml",
      ).session.cookie_domain,
    ).toBe(".example.test");
  });
});

describe("routes[].websocket_origins", () => {
  const route = (origins: string) =>
    `routes:\n  - { name: chat, from: "https://chat.example.test", to: "http://127.0.0.1:9000", websocket_origins: ${origins} }\n`;

  it("takes serialised http(s) origins, in the one spelling the PEP compares", () => {
    const c = parseConfigText(
      route(
        '["https://App.Example.Test", "https://app.example.test:443", "http://a.test:8080", "http://[::1]:80", "https://b.test.:8443"]',
      ),
      "/z.yaml",
    );
    expect(c.routes[0]!.websocket_origins).toEqual([
      "https://app.example.test",
      "https://app.example.test",
      "http://a.test:8080",
      "http://[::1]",
      "https://b.test:8443",
    ]);
    expect(parseConfigText(route("[]"), "/z.yaml").routes[0]!.websocket_origins).toEqual([]);
  });

  it("refuses an entry that is not a plain origin, naming routes[i].websocket_origins[j]", () => {
    for (const bad of [
      "https://app.example.test/",
      "https://app.example.test/path",
      "https://app.example.test?x=1",
      "https://user@app.example.test",
      "https://*.example.test",
      "*",
      "app.example.test",
      "ftp://app.example.test",
      "wss://app.example.test",
      "https://app.example.test:99999",
      "https://app.example.test:",
      "",
      " https://app.example.test",
    ]) {
      let e: unknown;
      try {
        parseConfigText(route(`["https://ok.test", ${JSON.stringify(bad)}]`), "/etc/zt/zt.yaml");
      } catch (err) {
        e = err;
      }
      expect(isZtError(e) && e.code, bad).toBe("ZT_CONFIG_INVALID");
      expect((e as Error).message, bad).toMatch(
        /^\/etc\/zt\/zt\.yaml: routes\[0\]\.websocket_origins\[1\]: route "chat": expected an origin scheme:\/\/host\[:port\]/,
      );
      expect(isZtError(e) && e.context["key"]).toBe("routes[0].websocket_origins[1]");
    }
    // The null origin: any page can send it.
    expect(configError(route('["null"]'))).toMatch(
      /routes\[0\]\.websocket_origins\[0\]: route "chat": the null origin is refused/,
    );
    // Not a list of strings: the schema names the entry.
    expect(configError(route("[42]"))).toMatch(/routes\[0\]\.websocket_origins\[0\]: /);
    expect(configError(route('"https://a.test"'))).toMatch(/routes\[0\]\.websocket_origins: /);
  });
});

describe("YAML the loader must not take as is", () => {
  it("refuses an alias bomb as ZT_CONFIG_INVALID (it was ZT_INTERNAL)", () => {
    let text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (let i = 1; i < 12; i++)
      text += `a${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(", ")}]\n`;
    expect(configError(text)).toMatch(/alias/);
  });

  it("refuses a tag it does not know instead of dropping it silently", () => {
    expect(configError("data_dir: !vault secret/zt\n")).toMatch(/zt\.yaml:1:\d+: .*!vault/);
  });
});
