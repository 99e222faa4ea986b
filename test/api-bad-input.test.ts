/**
 * Bad input over real HTTP, table-driven, for every route of the control-plane API of a
 * `zt up` running in process: wrong and missing content types, bodies that are not JSON
 * or not an object, each field of a valid request removed or replaced by a value of the
 * wrong type, size or character set, unknown fields, oversized bodies, odd query strings
 * and path parameters. Each answer is a 4xx with a stable `ZT_…` code (never a 5xx,
 * ZT_INTERNAL, a stack trace or a Fastify `FST_…` body), within a bounded time; a value
 * of the wrong type is refused with a message naming the field. On both storage engines
 * (PostgreSQL refuses a NUL in text, where SQLite stores it).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { opensslRequest } from "./helpers/tls.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ManualClock } from "../src/core/clock.js";
import type { RunningZt } from "../src/app/run-up.js";
import { createApiServer } from "../src/api/index.js";
import { pkiService } from "../src/pki/index.js";
import { DeviceService, generateDeviceKey } from "../src/device/index.js";
import { bounded } from "./helpers/bounded.js";
import { writeConfig } from "./helpers/zt-process.js";
import { engineConfigYaml, engines, type Engine, type EngineTarget } from "./store-fixture.js";
import { addUsers, runUpInProcess } from "./helpers/zt-up-in-process.js";
import { testSession } from "./helpers/test-session.js";

const POLICIES = `
permit (principal in Group::"eng", action == Action::"ssh:sign", resource == HostGroup::"prod");
`;

const ENGINES = await engines();

function listRoutes(tree: string): string[] {
  const out: string[] = [];
  const prefixes: string[] = [];
  for (const line of tree.split("\n")) {
    const m = /^((?:│ {3}| {4})*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    prefixes.length = m[1]!.length / 4;
    prefixes.push(m[2]!);
    for (const method of m[3]?.split(", ") ?? [])
      if (method !== "HEAD") out.push(`${method} ${prefixes.join("")}`);
  }
  return out.sort();
}

describe.each(ENGINES)(
  "the control-plane API on $name refuses bad input with a 4xx and a stable code",
  (engine: Engine) => {
    let zt: RunningZt;
    let target: EngineTarget;
    let base: string;
    /** Every route of the API, `METHOD /path`, as its router has them. */
    let routes: string[];
    let sessionToken: string;
    let deviceId: string;
    let pub: string;
    let csr: string;

    beforeAll(async () => {
      target = await engine.fresh();
      const dir = target.storeOptions.dataDir;
      zt = await runUpInProcess(
        writeConfig(
          dir,
          engineConfigYaml(
            target,
            "trust_domain: bad-input.test\ndevices:\n  auto_approve_groups: [eng]\n",
          ),
          { "ssh.cedar": POLICIES },
        ),
        new ManualClock(Date.now()),
      );
      base = `http://127.0.0.1:${zt.apiAddress.port}`;
      const users = await addUsers(zt, [["alice", ["eng"]]]);
      sessionToken = (await testSession(zt.services.sessions, users["alice"]!.id)).token;
      await (
        await pkiService(zt.ctx)
      ).addRegistration({ spiffeId: "spiffe://bad-input.test/w" }, "t");
      const key = generateDeviceKey();
      deviceId = (
        await new DeviceService(zt.ctx).enroll({
          userName: "alice",
          name: "laptop",
          publicKeyPem: key.publicPem,
        })
      ).device.id;
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
      pub = readFileSync(join(dir, "id.pub"), "utf8");
      csr = opensslRequest({
        keyOut: join(dir, "w.key"),
        out: join(dir, "w.csr"),
        subj: "/CN=w",
        san: "URI:spiffe://bad-input.test/w",
        csr: true,
      });
      // The routes as the router has them (an API of the same context, never listening), so
      // that a route added later without a row below fails this suite.
      const lister = await createApiServer(zt.ctx);
      routes = listRoutes(lister.printRoutes({ commonPrefix: false }));
      await lister.close();
    }, 60_000);

    afterAll(async () => {
      await zt?.close();
      await target?.cleanup();
    });

    interface Answer {
      status: number;
      text: string;
      code: string | undefined;
      message: string;
    }

    async function send(
      method: string,
      path: string,
      body?: string | Buffer,
      headers: Record<string, string> = {},
    ): Promise<Answer> {
      const what = `${method} ${path}`;
      return bounded(
        (async () => {
          const res = await fetch(base + path, {
            method,
            headers,
            ...(body !== undefined ? { body } : {}),
          });
          const text = await res.text();
          let code: string | undefined;
          let message = "";
          try {
            const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
            code = typeof e?.code === "string" ? e.code : undefined;
            message = typeof e?.message === "string" ? e.message : "";
          } catch {
            // not JSON: a success of another type (a CRL, a PEM bundle)
          }
          return { status: res.status, text, code, message };
        })(),
        `${what} did not answer`,
      );
    }

    /** A refusal in zt's shape: 4xx, a stable code, nothing internal. */
    function expectRefusal(a: Answer, what: string): void {
      expect(a.status, `${what}: ${a.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
      expect(a.status, `${what}: ${a.text.slice(0, 300)}`).toBeLessThan(500);
      expect(a.code, `${what}: ${a.text.slice(0, 300)}`).toMatch(/^ZT_[A-Z_]+$/);
      expect(a.code, what).not.toBe("ZT_INTERNAL");
      expect(a.text, what).not.toMatch(/FST_|\n\s+at |Error:/);
    }

    /** Never a 5xx; a refusal is in zt's shape. */
    function expectHandled(a: Answer, what: string): void {
      expect(a.status, `${what}: ${a.text.slice(0, 300)}`).toBeLessThan(500);
      if (a.status >= 400) expectRefusal(a, what);
    }

    const JSON_TYPE = { "content-type": "application/json" };

    /** Each POST route: the headers of an authenticated caller and a well-formed body. */
    function postRoutes(): Record<
      string,
      { path: string; headers: Record<string, string>; body: Record<string, unknown> }
    > {
      const session = { ...JSON_TYPE, authorization: `Bearer ${sessionToken}` };
      return {
        "POST /api/v1/svid": {
          path: "/api/v1/svid",
          headers: JSON_TYPE,
          body: {
            csr,
            spiffe_id: "spiffe://bad-input.test/w",
            dns: ["w.bad-input.test"],
            ttl: "1h",
            token: "ztjoin_unknown",
            // Read by the schema, though the token is what authenticates.
            renew: {
              cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
              proof: "AAAA",
            },
          },
        },
        "POST /api/v1/ssh/sign": {
          path: "/api/v1/ssh/sign",
          headers: session,
          body: {
            public_key: pub,
            principals: ["alice"],
            host_group: "prod",
            ttl: "1h",
            source_addresses: ["127.0.0.1/32"],
            force_command: "/bin/true",
            without_extensions: ["permit-pty"],
          },
        },
        "POST /v1/devices/:id/reports": {
          path: `/v1/devices/${deviceId}/reports`,
          headers: JSON_TYPE,
          body: { payload: "{}", signature: "AAAA" },
        },
        "POST /v1/devices/:id/bind": {
          path: `/v1/devices/${deviceId}/bind`,
          headers: session,
          body: { at: Date.now(), signature: "AAAA", session_id: "ses_AAAA" },
        },
      };
    }

    const GET_ROUTES = [
      "GET /healthz",
      "GET /readyz",
      "GET /metrics",
      "GET /pki/crl",
      "GET /pki/crl/:id",
      "GET /pki/bundle",
      "GET /pki/ssh/user-ca.pub",
      "GET /pki/ssh/known-hosts",
      "GET /pki/ssh/krl",
    ];

    /** Whole bodies that are not a JSON object, or not sent as JSON. */
    const BODIES: [
      what: string,
      body: string | Buffer | undefined,
      headers: Record<string, string>,
    ][] = [
      ["no body", undefined, JSON_TYPE],
      ["empty body", "", JSON_TYPE],
      ["no content type", "{}", { "content-type": "" }],
      ["text/plain", "{}", { "content-type": "text/plain" }],
      ["form", "a=1", { "content-type": "application/x-www-form-urlencoded" }],
      ["multipart", "--b\r\n\r\n--b--", { "content-type": "multipart/form-data; boundary=b" }],
      ["other JSON type", "{}", { "content-type": "application/merge-patch+json" }],
      ["invalid JSON", "{", JSON_TYPE],
      ["trailing garbage", "{}x", JSON_TYPE],
      ["null", "null", JSON_TYPE],
      ["array", "[]", JSON_TYPE],
      ["number", "1", JSON_TYPE],
      ["string", '"x"', JSON_TYPE],
      ["boolean", "true", JSON_TYPE],
      ["deeply nested", "[".repeat(50_000) + "]".repeat(50_000), JSON_TYPE],
      ["__proto__ key", '{"__proto__":{"admin":true}}', JSON_TYPE],
      ["constructor.prototype", '{"constructor":{"prototype":{"admin":true}}}', JSON_TYPE],
      ["NUL in a key", '{"a\\u0000b":1}', JSON_TYPE],
      ["not UTF-8", Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), JSON_TYPE],
      ["over 1 MiB", JSON.stringify({ x: "a".repeat(1024 * 1024 + 10) }), JSON_TYPE],
      [
        "many unknown keys",
        JSON.stringify(Object.fromEntries(range(5000).map((i) => [`k${i}`, i]))),
        JSON_TYPE,
      ],
    ];

    function range(n: number): number[] {
      return Array.from({ length: n }, (_, i) => i);
    }

    /** Values of the wrong JSON type for any field (every field here is a string, number or list). */
    const WRONG_TYPE: [string, unknown][] = [
      ["null", null],
      ["boolean", true],
      ["object", { a: 1 }],
    ];

    /** Values that may be of the right type but are out of range, oversized or odd. */
    const ODD_VALUES: [string, unknown][] = [
      ["empty string", ""],
      ["64 KiB string", "a".repeat(64 * 1024 + 1)],
      ["NUL", "\u0000"],
      ["control characters", "a\r\nb\u001b[31m"],
      ["RTL override", "\u202eevil"],
      ["emoji", "😀"],
      ["lone surrogate", "\ud800"],
      ["negative number", -1],
      ["fraction", 1.5],
      ["huge number", 1e308],
      ["unsafe integer", 2 ** 60],
      ["empty list", []],
      ["list of odd values", ["\u0000", 1, null]],
      ["long list", range(1000).map(String)],
    ];

    it("covers every route the API serves", () => {
      expect(routes).toEqual([...Object.keys(postRoutes()), ...GET_ROUTES].sort());
    });

    it("refuses a body that is not a JSON object, or not sent as JSON, on every POST route", async () => {
      for (const [route, r] of Object.entries(postRoutes()))
        for (const [what, body, headers] of BODIES) {
          const a = await send("POST", r.path, body, { ...r.headers, ...headers });
          expectRefusal(a, `${route}, ${what}`);
        }
    }, 120_000);

    it("refuses each field removed, of the wrong type, or replaced by an odd value, and an unknown field", async () => {
      for (const [route, r] of Object.entries(postRoutes())) {
        const send1 = (body: Record<string, unknown>) =>
          send("POST", r.path, JSON.stringify(body), r.headers);
        for (const field of Object.keys(r.body)) {
          const { [field]: _removed, ...without } = r.body;
          expectHandled(await send1(without), `${route} without ${field}`);
          for (const [what, value] of WRONG_TYPE) {
            const a = await send1({ ...r.body, [field]: value });
            const label = `${route}, ${field} = ${what}`;
            expectRefusal(a, label);
            expect(a.status, label).toBe(400);
            // Named, as the path of the schema issue ("renew.cert: …").
            expect(a.message, label).toMatch(new RegExp(`^${field}\\b`));
          }
          for (const [what, value] of ODD_VALUES) {
            const a = await send1({ ...r.body, [field]: value });
            expectHandled(a, `${route}, ${field} = ${what}`);
          }
        }
        const extra = await send1({ ...r.body, is_admin: true });
        expectRefusal(extra, `${route}, unknown field`);
        expect(extra.message, `${route}, unknown field`).toContain("is_admin");
      }
    }, 300_000);

    it("answers odd query strings and path parameters without a 5xx", async () => {
      const paths = [
        ...GET_ROUTES.map((r) => r.slice(4).replace(":id", "nope")),
        "/pki/bundle?format=pem&format=pem",
        "/pki/bundle?format=spiffe&format=spiffe",
        "/pki/bundle?format[]=pem",
        "/pki/bundle?format=%00",
        "/pki/bundle?format=%ff",
        `/pki/bundle?format=${"x".repeat(8000)}`,
        "/readyz?x=1&x=2",
        "/pki/crl/%E2%80%AE",
        "/pki/crl/..%2f..%2fetc%2fpasswd",
        "/pki/crl/%ff",
        `/pki/crl/${"a".repeat(513)}`,
      ];
      for (const path of paths) expectHandled(await send("GET", path), `GET ${path}`);
      for (const [route, r] of Object.entries(postRoutes()))
        if (route.includes(":id"))
          for (const id of ["nope", "%E2%80%AE", "..%2f..", "%00", "dev_" + "A".repeat(400)]) {
            const path = r.path.replace(deviceId, id);
            const a = await send("POST", path, JSON.stringify(r.body), r.headers);
            expectRefusal(a, `POST ${path}`);
          }
    }, 60_000);
  },
);
