/**
 * One regression test per attack class against the PEP, driven through real sockets
 * (raw `net.connect` requests, so nothing in a client library tidies the attack up).
 * Each test is named after what it stops. Both modes: the proxy and forward-auth.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import net from "node:net";
import { join } from "node:path";
import * as OTPAuth from "otpauth";
import { request } from "./helpers/http-client.js";
import { runZt } from "./helpers/zt-process.js";
import { raw, startPep, startUpstream, type PepFixture } from "./pep-fixture.js";

const POLICY = `
@id("eng-app")
@reason("eng-may-use-app")
permit (principal in Group::"eng", action in [Action::"GET", Action::"POST"], resource == App::"app");

@id("no-admin")
@reason("admin-area-closed")
forbid (principal, action, resource == App::"app") when { context.path like "/admin*" };

@id("fresh-mfa")
@step_up("")
@reason("mfa-too-old")
forbid (principal, action, resource == App::"app") when { context.path like "/stepup*" };
`;

const HOST = "app.localhost";

describe("PEP hardening (proxy mode, trusted_proxies without loopback)", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let alice: { cookie: string; sessionId: string };
  let bob: { cookie: string };
  let bobEnrolment: { password: string; totpSecret: string };

  beforeAll(async () => {
    upstream = await startUpstream();
    zt = await startPep({
      policies: POLICY,
      routes: [{ name: "app", from: `http://${HOST}`, to: `http://127.0.0.1:${upstream.port}` }],
      trusted_proxies: ["10.99.0.0/16"],
      limits: {
        max_header_bytes: 4096,
        max_body_bytes: 1024,
        header_timeout: "1s",
        request_timeout: "3s",
        max_connections_per_source: 6,
      },
    });
    await zt.addUser("alice", ["eng"]);
    bobEnrolment = await zt.addUser("bob", ["ops"]);
    alice = await zt.session("alice");
    bob = await zt.session("bob");
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });

  const reached = (needle: string) => upstream.seen.some((s) => s.url.includes(needle));
  const get = (target: string, extra = "") =>
    raw(zt.port, [
      `GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n${extra}\r\n`,
    ]);

  it("stops path traversal: the policy sees the canonical path, and so does the upstream", async () => {
    const r = await get("/public/./x/../../admin/keys");
    expect(r.status).toBe(403);
    expect(r.text).toContain("admin-area-closed");
    const ok = await get("/public/./x/..//y?q=1");
    expect(ok.status).toBe(200);
    expect(upstream.seen.at(-1)!.url).toBe("/public/y?q=1");
    expect(reached("admin")).toBe(false);
  });

  it("stops encoded traversal, encoded slashes, backslashes, ; parameters and double encoding", async () => {
    for (const target of [
      "/public/%2e%2e/admin",
      "/a/%2e%2e/%2e%2e/etc/passwd",
      "/public%2f..%2fadmin",
      "/public/..%5cadmin",
      "/public\\..\\admin",
      "/admin;x=1",
      "/public/..;/admin",
      "/%252e%252e/admin",
      "/%2561dmin",
      "/a%00b",
      "/%c0%ae%c0%ae/admin",
      "/..",
    ]) {
      const r = await get(target);
      if (target === "/public/%2e%2e/admin") {
        // decodes once to /admin: refused by the policy, not reached either way
        expect(r.status, target).toBe(403);
        continue;
      }
      expect(r.status, target).toBe(400);
      expect(r.text, target).not.toMatch(/at .*\.js:\d+/);
    }
    expect(reached("admin")).toBe(false);
    expect(reached("etc")).toBe(false);
  });

  it("stops host confusion: absolute-form naming another host, duplicate Host, malformed Host", async () => {
    const abs = await raw(zt.port, [
      `GET http://other.localhost/ HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(abs.status).toBe(400);
    expect(abs.text).toContain("host-mismatch");
    const dup = await raw(zt.port, [
      `GET / HTTP/1.1\r\nHost: ${HOST}\r\nHost: other.localhost\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(dup.status).toBe(400);
    const bad = await raw(zt.port, [
      `GET / HTTP/1.1\r\nHost: evil.com@${HOST}\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(bad.status).toBe(400);
    // Case and a trailing dot name the same host: same route, same decision.
    const same = await raw(zt.port, [
      `GET http://APP.LocalHost./ok HTTP/1.1\r\nHost: App.Localhost.\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(same.status).toBe(200);
  });

  it("stops request smuggling: Content-Length with Transfer-Encoding", async () => {
    const before = upstream.seen.length;
    const r = await raw(zt.port, [
      `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    ]);
    expect(r.status).toBe(400);
    expect(r.closed).toBe(true);
    expect(upstream.seen.length).toBe(before);
    expect(reached("smuggled")).toBe(false);
  });

  it("stops request smuggling: duplicate Content-Length and obfuscated Transfer-Encoding", async () => {
    const before = upstream.seen.length;
    const dup = await raw(zt.port, [
      `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhelloGET /admin/smuggled HTTP/1.1\r\n\r\n`,
    ]);
    expect(dup.status).toBe(400);
    const same = await raw(zt.port, [
      `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    ]);
    expect(same.status).toBe(400);
    const te = await raw(zt.port, [
      `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    ]);
    expect(te.status).toBe(400);
    expect(upstream.seen.length).toBe(before);
  });

  it("stops a transfer coding zt would drop: gzip, chunked is refused, not forwarded as plain chunked", async () => {
    // Node's parser accepts it (chunked last) and de-chunks it, leaving the gzip; the
    // upstream would have read the compressed bytes as the body.
    const before = upstream.seen.length;
    for (const coding of ["gzip, chunked", "deflate,chunked", "x-custom, chunked"]) {
      const r = await raw(zt.port, [
        `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nTransfer-Encoding: ${coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      ]);
      expect(r.status, coding).toBe(400);
      expect(r.text).toContain("transfer-encoding-unsupported");
      expect(r.closed).toBe(true);
    }
    expect(upstream.seen.length).toBe(before);
    // Plain chunked is forwarded (as zt's own chunked framing).
    const ok = await raw(zt.port, [
      `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    ]);
    expect(ok.status).toBe(200);
    expect(upstream.seen.length).toBe(before + 1);
  });

  it("stops oversized headers (431) and oversized bodies (413), declared or chunked", async () => {
    const big = await get("/public", `X-Big: ${"a".repeat(8000)}\r\n`);
    expect(big.status).toBe(431);
    const before = upstream.seen.length;
    const declared = await raw(zt.port, [
      `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n`,
    ]);
    expect(declared.status).toBe(413);
    expect(upstream.seen.length).toBe(before);
    const chunk = "x".repeat(600);
    const chunked = await raw(
      zt.port,
      [
        `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nTransfer-Encoding: chunked\r\n\r\n`,
        `258\r\n${chunk}\r\n`,
        `258\r\n${chunk}\r\n`,
        `258\r\n${chunk}\r\n`,
      ],
      { until: (t) => t.includes("\r\n\r\n{") && t.includes("}") },
    );
    expect(chunked.status).toBe(413);
    expect(upstream.seen.some((s) => s.body.length > 1024)).toBe(false);
  });

  it("stops slowloris: a client trickling headers is cut by header_timeout", async () => {
    const socket = net.connect(zt.port, "127.0.0.1");
    let text = "";
    let writes = 0;
    const result = await new Promise<{ closed: boolean }>((resolve) => {
      const safety = setTimeout(() => resolve({ closed: false }), 30_000);
      const trickle = setInterval(() => {
        if (socket.writable) socket.write(`X-Slow-${writes++}: y\r\n`);
      }, 200);
      socket.on("connect", () => socket.write(`GET /public HTTP/1.1\r\nHost: ${HOST}\r\n`));
      socket.on("data", (d: Buffer) => (text += d.toString()));
      const done = () => {
        clearInterval(trickle);
        clearTimeout(safety);
        resolve({ closed: true });
      };
      socket.on("close", done);
      socket.on("error", done);
    });
    socket.destroy();
    expect(result.closed).toBe(true);
    if (text) expect(text).toMatch(/^HTTP\/1\.1 408/);
  }, 40_000);

  it("stops a slow body: a client trickling its body is cut by request_timeout", async () => {
    const socket = net.connect(zt.port, "127.0.0.1");
    const result = await new Promise<{ closed: boolean }>((resolve) => {
      const safety = setTimeout(() => resolve({ closed: false }), 30_000);
      const trickle = setInterval(() => {
        if (socket.writable) socket.write("x");
      }, 200);
      socket.on("connect", () =>
        socket.write(
          `POST /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nContent-Length: 1000\r\n\r\n`,
        ),
      );
      socket.on("data", () => undefined);
      const done = () => {
        clearInterval(trickle);
        clearTimeout(safety);
        resolve({ closed: true });
      };
      socket.on("close", done);
      socket.on("error", done);
    });
    socket.destroy();
    expect(result.closed).toBe(true);
  }, 40_000);

  it("stops connection floods: more than max_connections_per_source connections from one address", async () => {
    const open: net.Socket[] = [];
    for (let i = 0; i < 6; i++) {
      const s = net.connect(zt.port, "127.0.0.1");
      await new Promise<void>((r) => s.once("connect", () => r()));
      open.push(s);
    }
    const extra = await raw(zt.port, [
      `GET /public HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(extra.closed).toBe(true);
    expect(extra.status).toBeUndefined();
    for (const s of open) s.destroy();
    // Once they are gone, the source may connect again.
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) {
      const again = await get("/public");
      ok = again.status === 200;
      if (!ok) await new Promise((r) => setTimeout(r, 50));
    }
    expect(ok).toBe(true);
  });

  it("asks for step-up: browsers to the login page, API clients a 401 with the decision id", async () => {
    const browser = await get("/stepup/page", "Accept: text/html\r\n");
    expect(browser.status).toBe(302);
    expect(browser.text).toContain("location: /.zt/login?step_up=1&rd=%2Fstepup%2Fpage");
    const api = await get("/stepup/page");
    expect(api.status).toBe(401);
    expect(api.text).toContain("ZT_STEP_UP_REQUIRED");
    expect(api.text).toMatch(/x-zt-decision-id: dec_/);
  });

  it("stops identity spoofing: client X-Zt-* and X-Forwarded-For from an untrusted peer never reach the upstream", async () => {
    const r = await get(
      "/public/who",
      "X-Zt-User: root\r\nX-Zt-Assertion: forged\r\nX-Forwarded-For: 10.99.0.7\r\nX-Real-IP: 10.99.0.7\r\n",
    );
    expect(r.status).toBe(200);
    const seen = upstream.seen.at(-1)!;
    expect(seen.headers["x-zt-user"]).toBeUndefined();
    expect(seen.headers["x-zt-assertion"]).not.toBe("forged");
    expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.headers["x-real-ip"]).toBeUndefined();
    expect(seen.headers.cookie).toBeUndefined();
  });

  it("stops forwarded-header spoofing at login: an untrusted peer's X-Forwarded-Proto and -For are ignored", async () => {
    const r = await login(zt.port, bobEnrolment, "bob", {
      "x-forwarded-proto": "https",
      "x-forwarded-for": "10.99.0.1",
    });
    expect(r.status, r.body).toBe(200);
    expect(r.headers["set-cookie"]![0]).not.toContain("Secure");
    await zt.ctx.audit.flush();
    const row = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("kind", "=", "login")
      .where("subject", "=", "bob")
      .executeTakeFirst();
    expect(row?.source_ip).toBe("127.0.0.1");
  });

  it("stops forward-auth from an untrusted peer: its forwarded headers are ignored", async () => {
    const r = await request(zt.port, {
      host: HOST,
      path: "/.zt/authz",
      headers: {
        cookie: alice.cookie,
        "x-original-url": `http://${HOST}/public`,
        "x-original-method": "GET",
      },
    });
    expect(r.status).toBe(403);
    expect(r.json<{ error: { code: string } }>().error.code).toBe("ZT_FORWARD_AUTH_UNTRUSTED");
  });

  it("decides WebSocket upgrades like any request and cuts them when the session is revoked", async () => {
    const upgrade = (cookie: string, path = "/ws") =>
      raw(
        zt.port,
        [
          `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${cookie ? `Cookie: ${cookie}\r\n` : ""}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
        ],
        {
          until: (t) => t.includes("\r\n\r\n"),
        },
      );
    expect((await upgrade("")).status).toBe(401);
    const denied = await upgrade(bob.cookie);
    expect(denied.status).toBe(403);
    expect(denied.text).toMatch(/dec_/);
    expect((await upgrade(alice.cookie, "/admin/ws")).status).toBe(403);

    const fresh = await zt.session("alice");
    const socket = net.connect(zt.port, "127.0.0.1");
    let text = "";
    const opened = new Promise<void>((resolve) =>
      socket.on("data", (d: Buffer) => {
        text += d.toString();
        if (text.includes("\r\n\r\n")) resolve();
      }),
    );
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${fresh.cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    );
    await opened;
    expect(text).toMatch(/^HTTP\/1\.1 101/);
    expect(zt.pep.live.count(fresh.sessionId)).toBe(1);
    expect(upstream.upgraded.size).toBe(1);
    const [upstreamSide] = [...upstream.upgraded];
    const upstreamClosed = new Promise<boolean>((resolve) => {
      const safety = setTimeout(() => resolve(false), 15_000);
      upstreamSide!.once("close", () => {
        clearTimeout(safety);
        resolve(true);
      });
    });
    await zt.services.sessions.revoke([fresh.sessionId], "test");
    await closed;
    expect(zt.pep.live.count(fresh.sessionId)).toBe(0);
    // The PEP's leg to the upstream is cut too, not left open.
    expect(await upstreamClosed).toBe(true);
  });
});

describe("forward-auth hardening (loopback is a trusted proxy)", () => {
  let zt: PepFixture;
  let alice: { cookie: string };
  let aliceEnrolment: { password: string; totpSecret: string };

  beforeAll(async () => {
    zt = await startPep({
      policies: POLICY,
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
    });
    aliceEnrolment = await zt.addUser("alice", ["eng"]);
    alice = await zt.session("alice");
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  const authz = (headers: string) =>
    raw(zt.port, [
      `GET /.zt/authz HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n${headers}\r\n`,
    ]);

  it("decides on the original URL only when the front proxy forwards it as decided (canonical)", async () => {
    const allowed = await authz(
      `X-Original-URL: http://${HOST}/public/a/b\r\nX-Original-Method: GET\r\n`,
    );
    expect(allowed.status).toBe(200);
    expect(allowed.text).toMatch(/x-zt-assertion: ey/i);
    // The front proxy would forward "/public/x/../../admin" as sent: refused, not decided.
    for (const u of ["/public/./a/../b", "/public/x/../../admin", "/public//b", "/%61dmin"]) {
      const r = await authz(`X-Original-URL: http://${HOST}${u}\r\nX-Original-Method: GET\r\n`);
      expect(r.status, u).toBe(400);
      expect(r.text).toContain("path-not-canonical");
    }
    for (const u of [
      "/public%2f..%2fadmin",
      "/admin;x",
      "/%252e%252e/admin",
      "/public\\..\\admin",
    ]) {
      const r = await authz(`X-Original-URL: http://${HOST}${u}\r\nX-Original-Method: GET\r\n`);
      expect(r.status, u).toBe(400);
      expect(r.text).toContain("ZT_REQUEST_AMBIGUOUS");
    }
  });

  it("stops ambiguous forwarded headers: duplicates, lists, missing method, bad scheme", async () => {
    const cases = [
      `X-Original-URL: http://${HOST}/public\r\nX-Original-URL: http://${HOST}/admin\r\nX-Original-Method: GET\r\n`,
      `X-Original-URL: http://${HOST}/public\r\nX-Original-Method: GET\r\nX-Original-Method: POST\r\n`,
      `X-Original-URL: http://${HOST}/public\r\n`,
      `X-Original-URL: javascript://${HOST}/public\r\nX-Original-Method: GET\r\n`,
      `X-Original-URL: http://${HOST}/public\r\nX-Original-Method: get\r\n`,
      `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ${HOST}, other.localhost\r\nX-Forwarded-Uri: /public\r\n`,
      `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ${HOST}\r\nX-Forwarded-Host: other.localhost\r\nX-Forwarded-Uri: /public\r\n`,
      `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ${HOST}\r\n`,
      `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: gopher\r\nX-Forwarded-Host: ${HOST}\r\nX-Forwarded-Uri: /public\r\n`,
    ];
    for (const c of cases) {
      const r = await authz(c);
      expect(r.status, c).toBe(400);
      expect(r.text, c).toContain("ZT_REQUEST_AMBIGUOUS");
    }
  });

  it("answers the Caddy/Traefik convention: 302 to login for browsers, 401 + login URL for APIs", async () => {
    const fwd = `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ${HOST}:8443\r\nX-Forwarded-Uri: /public?a=1\r\n`;
    const browser = await raw(zt.port, [
      `GET /.zt/authz HTTP/1.1\r\nHost: ${HOST}\r\nAccept: text/html\r\nConnection: close\r\n${fwd}\r\n`,
    ]);
    expect(browser.status).toBe(302);
    expect(browser.text).toContain(`location: https://${HOST}:8443/.zt/login?rd=%2Fpublic%3Fa%3D1`);
    const api = await raw(zt.port, [
      `GET /.zt/authz HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n${fwd}\r\n`,
    ]);
    expect(api.status).toBe(401);
    expect(api.text).toContain(`x-zt-login-url: https://${HOST}:8443/.zt/login?rd=`);
    const allowed = await authz(fwd);
    expect(allowed.status).toBe(200);
    expect(allowed.text).toMatch(/x-zt-user: alice/i);
    expect(allowed.text).toMatch(/x-zt-groups: eng/i);
    expect(allowed.text).toMatch(/x-zt-decision-id: dec_/i);
  });

  it("asks for step-up in both conventions, with the decision id", async () => {
    const nginx = await authz(
      `X-Original-URL: https://${HOST}/stepup/x\r\nX-Original-Method: GET\r\nAccept: text/html\r\n`,
    );
    expect(nginx.status).toBe(401);
    expect(nginx.text).toContain(
      `x-zt-login-url: https://${HOST}/.zt/login?step_up=1&rd=%2Fstepup%2Fx`,
    );
    expect(nginx.text).toMatch(/x-zt-decision-id: dec_/);
    expect(nginx.text).toContain("ZT_STEP_UP_REQUIRED");
    const caddy = await authz(
      `X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ${HOST}\r\nX-Forwarded-Uri: /stepup\r\nAccept: text/html\r\n`,
    );
    expect(caddy.status).toBe(302);
    expect(caddy.text).toContain(`location: http://${HOST}/.zt/login?step_up=1&rd=%2Fstepup`);
  });

  it("shows the explained denial page for a recent decision id, and nothing for an unknown one", async () => {
    const denied = await authz(
      `X-Original-URL: http://${HOST}/admin\r\nX-Original-Method: GET\r\n`,
    );
    const id = /x-zt-decision-id: (dec_[\w-]+)/i.exec(denied.text)![1]!;
    const page = await request(zt.port, {
      host: HOST,
      path: `/.zt/denied?decision=${id}`,
      headers: { accept: "text/html" },
    });
    expect(page.status).toBe(403);
    expect(page.body).toContain(id);
    expect(page.body).toContain("admin-area-closed");
    expect(page.body).not.toContain("forbid (");
    const unknown = await request(zt.port, {
      host: HOST,
      path: "/.zt/denied?decision=dec_nope<script>",
    });
    expect(unknown.status).toBe(403);
    expect(unknown.json<{ error: { reason: string } }>().error.reason).toBe("unknown-decision");
    expect(unknown.body).not.toContain("<script>");
  });

  it("sets a Secure cookie at login when a trusted TLS proxy says the client used https", async () => {
    const r = await login(zt.port, aliceEnrolment, "alice", {
      "x-forwarded-proto": "https",
      "x-forwarded-for": "198.51.100.4",
    });
    expect(r.status, r.body).toBe(200);
    expect(r.headers["set-cookie"]![0]).toContain("; Secure");
  });

  it("uses the client address from X-Forwarded-For of a trusted proxy for the decision", async () => {
    const r = await authz(
      `X-Original-URL: http://${HOST}/admin\r\nX-Original-Method: GET\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n`,
    );
    expect(r.status).toBe(403);
    const id = /x-zt-decision-id: (dec_[\w-]+)/i.exec(r.text)![1]!;
    await zt.ctx.audit.flush();
    const row = await zt.ctx.store.db
      .selectFrom("audit_events")
      .selectAll()
      .where("decision_id", "=", id)
      .executeTakeFirst();
    expect(row?.source_ip).toBe("203.0.113.9");
    const data = JSON.parse(row!.data) as {
      determining: { id: string; reason: string | null }[];
      network: string;
      path: string;
    };
    expect(data.determining).toEqual([
      { id: "no-admin", effect: "forbid", reason: "admin-area-closed" },
    ]);
    expect(data.path).toBe("/admin");
    expect(data.network).toBe("unknown");
    // The operator's view: the real CLI explains the decision from the audit log.
    const cli = await runZt(["--config", join(zt.dir, "zt.yaml"), "audit", "explain", id]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(id);
    expect(cli.stdout).toContain("admin-area-closed");
    expect(cli.stdout).toContain("no-admin");
    expect(cli.stdout).toContain("203.0.113.9");
  });
});

describe("PEP with forward-auth switched off (forward_auth.enabled: false)", () => {
  it("stops a client behind a trusted TLS terminator from asking /.zt/authz for decisions or an assertion", async () => {
    // Loopback is trusted (the default), as for a TLS terminator on the same host: with
    // forward-auth on, any signed-in user could ask about any path through it.
    const upstream = await startUpstream();
    const zt = await startPep({
      policies: POLICY,
      routes: [{ name: "app", from: `http://${HOST}`, to: `http://127.0.0.1:${upstream.port}` }],
      extra: { forward_auth: { enabled: false } },
    });
    try {
      await zt.addUser("alice", ["eng"]);
      const { cookie } = await zt.session("alice");
      const r = await request(zt.port, {
        host: HOST,
        path: "/.zt/authz",
        headers: { cookie, "x-original-url": `http://${HOST}/public`, "x-original-method": "GET" },
      });
      expect(r.status, r.body).toBe(404);
      expect(r.headers["x-zt-assertion"]).toBeUndefined();
      expect(r.json<{ error: { code: string; reason: string } }>().error).toMatchObject({
        code: "ZT_NOT_FOUND",
        reason: "forward-auth-disabled",
      });
      // The proxy itself is unaffected.
      const ok = await request(zt.port, { host: HOST, path: "/public", headers: { cookie } });
      expect(ok.status, ok.body).toBe(200);
    } finally {
      await zt.close();
      await upstream.close();
    }
  });
});

async function login(
  port: number,
  u: { password: string; totpSecret: string },
  name: string,
  headers: Record<string, string>,
) {
  const totp = new OTPAuth.TOTP({
    secret: OTPAuth.Secret.fromBase32(u.totpSecret),
    digits: 6,
    period: 30,
    algorithm: "SHA1",
  }).generate();
  return request(port, {
    host: HOST,
    path: "/.zt/login",
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ username: name, password: u.password, totp }),
  });
}
