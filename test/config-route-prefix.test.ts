/**
 * Route prefixes are matched in the same canonical form as request paths: a prefix
 * written as the WHATWG URL parser leaves it (`/api[v2]`, lowercase `%xx`) must not let
 * its requests fall through to a shorter prefix with another route's policy.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfigText, validateConfig } from "../src/config/index.js";
import { canonicalPath, RouteTable } from "../src/proxy/index.js";
import { isZtError, type ZtError } from "../src/core/errors.js";
import { auditRows } from "./helpers/audit-rows.js";
import { raw, type PepFixture } from "./pep-fixture.js";
import { startPepWithUpstream, type PepAppRoute, type Upstream } from "./helpers/pep-app-route.js";

const HOST = "h.localhost";

function configWith(from: string) {
  return validateConfig(
    {
      data_dir: "/srv/zt/data",
      trust_domain: "t.test",
      policies: "/srv/zt/policies",
      routes: [
        { name: "open", from: `http://${HOST}/`, to: "http://127.0.0.1:1" },
        { name: "locked", from, to: "http://127.0.0.1:1" },
      ],
    },
    "/srv/zt/zt.yaml",
  );
}

function refused(from: string): ZtError {
  try {
    configWith(from);
  } catch (e) {
    if (isZtError(e)) return e;
    throw e;
  }
  throw new Error(`route from ${from} was accepted`);
}

/** The route a request path is matched to, after the PEP's canonicalisation. */
function routeFor(table: RouteTable, requestPath: string): string | undefined {
  const c = canonicalPath(requestPath);
  if (!c.ok) throw new Error(`request path ${requestPath} refused: ${c.detail}`);
  return table.match(HOST, c.path)?.name;
}

describe("route prefixes at config load", () => {
  it("stops requests falling through to a broader route when the prefix holds [ ] | ^ or lowercase %xx", () => {
    const cases: [string, string, string[]][] = [
      [
        `http://${HOST}/api[v2]`,
        "/api%5Bv2%5D",
        ["/api[v2]/users", "/api%5Bv2%5D/users", "/api[v2]"],
      ],
      [`http://${HOST}/caf%c3%a9/`, "/caf%C3%A9", ["/caf%c3%a9/x", "/café/x", "/caf%C3%A9"]],
      [`http://${HOST}/a|b^c`, "/a%7Cb%5Ec", ["/a|b^c/d", "/a%7cb%5ec/d"]],
      [`http://${HOST}/a%20b//c/`, "/a%20b/c", ["/a%20b/c/d", "/a%20b//c"]],
    ];
    for (const [from, prefix, paths] of cases) {
      const c = configWith(from);
      const locked = c.routes.find((r) => r.name === "locked")!;
      expect(locked.pathPrefix, from).toBe(prefix);
      const table = new RouteTable(c.routes);
      for (const p of paths) expect(routeFor(table, p), `${from} ${p}`).toBe("locked");
      expect(routeFor(table, "/elsewhere")).toBe("open");
    }
  });

  it("leaves already-canonical prefixes as they were", () => {
    for (const [from, prefix] of [
      // (on another host: a second root route of HOST would be refused as a duplicate)
      ["http://other.localhost", "/"],
      ["http://other.localhost/", "/"],
      [`http://${HOST}/app/`, "/app"],
      [`http://${HOST}/a/b-c_d.e~f`, "/a/b-c_d.e~f"],
      [`http://${HOST}/caf%C3%A9`, "/caf%C3%A9"],
    ] as const) {
      expect(configWith(from).routes[1]!.pathPrefix).toBe(prefix);
    }
  });

  it("refuses a prefix the PEP would refuse as a request path, naming the route and the field", () => {
    for (const from of [
      `http://${HOST}/a%2fb`, // encoded slash
      `http://${HOST}/a%5Cb`, // encoded backslash
      `http://${HOST}/a%00`, // encoded NUL
      `http://${HOST}/a;v=1`, // path parameter
      `http://${HOST}/%zz`, // malformed percent-encoding
      `http://${HOST}/a%2541`, // double encoding
      `http://${HOST}/%ff`, // not UTF-8
    ]) {
      const e = refused(from);
      expect(e.code, from).toBe("ZT_CONFIG_INVALID");
      expect(e.message, from).toMatch(/routes\[1\]\.from: route "locked"/);
    }
  });

  it("reports the refusal through zt.yaml parsing too", () => {
    expect(() =>
      parseConfigText(
        `routes:\n  - { name: api, from: "http://${HOST}/v1%2Fadmin", to: "http://127.0.0.1:1" }\n`,
        "/srv/zt/zt.yaml",
      ),
    ).toThrow(/routes\[0\]\.from: route "api".*encoded slash/);
  });

  it("a route table refuses a prefix that is not canonical (routes built without the config loader)", () => {
    const c = configWith(`http://${HOST}/app`);
    for (const bad of ["/api[v2]", "/caf%c3%a9", "/app/", "/a/../b"]) {
      const routes = c.routes.map((r) => (r.name === "locked" ? { ...r, pathPrefix: bad } : r));
      expect(() => new RouteTable(routes), bad).toThrow(/not in canonical form/);
    }
  });
});

describe("route prefixes through a real PEP", () => {
  let fixture: PepAppRoute;
  let zt: PepFixture;
  let upstream: Upstream;
  let cookie: string;

  beforeAll(async () => {
    fixture = await startPepWithUpstream({
      // Everyone in eng may use the open site; nothing permits the locked API.
      policies: `
@id("open-site")
@reason("open-site")
permit (principal in Group::"eng", action, resource == App::"open");
`,
      routes: (to) => [
        { name: "open", from: `http://${HOST}/`, to },
        { name: "locked", from: `http://${HOST}/api[v2]`, to },
        { name: "locked-cafe", from: `http://${HOST}/caf%c3%a9`, to },
      ],
    });
    ({ pep: zt, upstream } = fixture);
    await zt.addUser("alice", ["eng"]);
    cookie = (await zt.session("alice")).cookie;
  }, 60_000);

  afterAll(async () => {
    await fixture?.close();
  });

  const get = (target: string) =>
    raw(zt.port, [
      `GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${cookie}\r\nConnection: close\r\n\r\n`,
    ]);

  it("stops a request under a [ ] or lowercase-%xx prefix from taking the broader route's policy", async () => {
    for (const target of [
      "/api[v2]/users",
      "/api%5Bv2%5D/users",
      "/caf%c3%a9/menu",
      "/caf%C3%A9",
    ]) {
      const r = await get(target);
      expect(r.status, target).toBe(403);
      expect(r.text, target).toContain("ZT_POLICY_DENIED");
    }
    expect(upstream.seen).toEqual([]);
    // The broader route still answers for what is really under it.
    const ok = await get("/apiv2/users");
    expect(ok.status).toBe(200);
    expect(upstream.seen.map((s) => s.url)).toEqual(["/apiv2/users"]);
  });

  it("records the decision against the route the prefix names", async () => {
    const rows = await auditRows(zt.ctx, "decision", ["route", "outcome", "data"]);
    const byPath = rows.map((r) => [JSON.parse(r.data).path, r.route, r.outcome]);
    expect(byPath).toContainEqual(["/api%5Bv2%5D/users", "locked", "deny"]);
    expect(byPath).toContainEqual(["/caf%C3%A9/menu", "locked-cafe", "deny"]);
  });
});
