/**
 * Regressions from the identity-provider and sign-in security review, each named after
 * what it stops. Real sockets throughout: a real zt PEP, real upstream servers, and
 * codes from the real `oathtool`.
 */
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loginRequest, request } from "./helpers/http-client.js";
import { oathtoolCode } from "./helpers/totp-code.js";
import { raw, startPep, type PepFixture } from "./pep-fixture.js";

const HOST = "app.localhost";

/** The Set-Cookie lines an upstream that wants the browser's zt session sends. */
const HOSTILE_COOKIES = [
  "zt_session=attacker-session-token-from-the-app; Path=/; HttpOnly",
  "zt_session=tossed; Path=/deep; Domain=localhost",
  " zt_session =spaced; Path=/",
  // A cookie with an empty name is sent as its bare value: `zt_session=nameless`.
  "=zt_session=nameless; Path=/",
  "app_pref=dark; Path=/",
];

/** An upstream that answers every request, and every upgrade's 101, with HOSTILE_COOKIES. */
async function startCookieSettingUpstream(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "set-cookie": HOSTILE_COOKIES });
    res.end("hello");
  });
  const sockets = new Set<net.Socket>();
  server.on("upgrade", (req, socket: net.Socket) => {
    sockets.add(socket);
    socket.on("error", () => socket.destroy());
    const key = String(req.headers["sec-websocket-key"] ?? "");
    const accept = createHash("sha1")
      .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest("base64");
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n` +
        HOSTILE_COOKIES.map((c) => `Set-Cookie: ${c}\r\n`).join("") +
        "\r\n",
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The cookie names a list of Set-Cookie values sets, as a browser reads them (trimmed). */
function cookieNames(setCookie: readonly string[]): string[] {
  return setCookie.map((c) => c.slice(0, c.indexOf("=")).trim());
}

describe("proxy mode: an upstream setting zt's session cookie", () => {
  let zt: PepFixture;
  let upstream: Awaited<ReturnType<typeof startCookieSettingUpstream>>;
  let cookie: string;

  beforeAll(async () => {
    upstream = await startCookieSettingUpstream();
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [
        {
          name: "app",
          from: `http://${HOST}`,
          to: `http://127.0.0.1:${upstream.port}`,
          websockets: true,
        },
      ],
    });
    await zt.addUser("alice", ["eng"]);
    cookie = (await zt.session("alice")).cookie;
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    await upstream?.close();
  });

  it("stops an app behind the PEP from replacing the browser's zt session (it could sign the user in as the app's choice, on every app of the host)", async () => {
    const r = await request(zt.port, { host: HOST, path: "/", headers: { cookie } });
    expect(r.status).toBe(200);
    expect(r.body).toBe("hello");
    const set = r.headers["set-cookie"] ?? [];
    // The app's own cookies pass; none naming the session cookie does.
    expect(cookieNames(set)).toEqual(["app_pref"]);
  });

  it("stops the same through a WebSocket upgrade's 101 answer", async () => {
    const r = await raw(
      zt.port,
      [
        `GET /ws HTTP/1.1\r\nHost: ${HOST}\r\nCookie: ${cookie}\r\nUpgrade: websocket\r\n` +
          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      ],
      { until: (t) => t.includes("\r\n\r\n") },
    );
    expect(r.status).toBe(101);
    const head = r.text.slice(0, r.text.indexOf("\r\n\r\n"));
    const set = head
      .split("\r\n")
      .filter((l) => /^set-cookie:/i.test(l))
      .map((l) => l.slice(l.indexOf(":") + 1).trim());
    expect(cookieNames(set)).toEqual(["app_pref"]);
  });
});

describe("sign-in and sign-out from a browser that sends no Origin", () => {
  let zt: PepFixture;
  let alice: { password: string; totpSecret: string };

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
    });
    alice = await zt.addUser("alice", ["eng"]);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  /** A POST as a browser without Origin or Sec-Fetch-Site (Firefox before 70) sends it. */
  const post = (path: string, headers: Record<string, string>, body = "") =>
    request(zt.port, {
      host: `${HOST}:${zt.port}`,
      path,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
      body,
    });
  const code = (r: { status: number; body: string }) =>
    r.status === 403 ? (JSON.parse(r.body) as { error: { code: string } }).error.code : r.status;

  it("stops a cross-site form from signing out the user when only the Referer tells where it came from", async () => {
    const { cookie, token } = await zt.session("alice");
    const r = await post("/.zt/logout", { cookie, referer: "http://evil.localhost/page" });
    expect(code(r)).toBe("ZT_CSRF");
    expect((await zt.services.sessions.check(token)).ok).toBe(true);
  });

  it("stops a cross-site form from signing the browser in (login CSRF) when only the Referer tells where it came from", async () => {
    const body = new URLSearchParams({
      username: "alice",
      password: alice.password,
      totp: "123456",
    }).toString();
    for (const referer of [
      "http://evil.localhost/",
      `http://${HOST}:${zt.port + 1}/`,
      "not a url",
    ]) {
      expect(code(await post("/.zt/login", { referer }, body)), referer).toBe("ZT_CSRF");
    }
    // zt's own page as the Referer, and no Referer at all (a CLI client), pass the check:
    // 401 here, as the code is wrong.
    expect(
      (await post("/.zt/login", { referer: `http://${HOST}:${zt.port}/.zt/login?rd=%2F` }, body))
        .status,
    ).toBe(401);
    expect((await post("/.zt/login", {}, body)).status).toBe(401);
  });
});

describe("passwords with text that has no UTF-8 encoding", () => {
  let zt: PepFixture;

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
    });
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  it("stops a lone surrogate signing in as the U+FFFD it becomes in UTF-8 (two different passwords were one)", async () => {
    const password = "correct-horse-\uFFFD-battery";
    const added = await zt.services.identity.addUser({ name: "uma", groups: [], password });
    await zt.services.snapshot.refreshUser(added.user.id);
    const code = oathtoolCode(added.totpSecret);
    const forged = await loginRequest(zt.port, HOST, {
      username: "uma",
      password: "correct-horse-\uD800-battery", // sent as the JSON escape \ud800
      totp: code,
    });
    expect(forged.status).toBe(401);
    expect(forged.json<{ error: { code: string } }>().error.code).toBe("ZT_AUTH_FAILED");
    // The real password with the same code (not consumed by the refusal) signs in.
    const real = await loginRequest(zt.port, HOST, { username: "uma", password, totp: code });
    expect(real.status).toBe(200);
  });

  it("refuses to set a password holding a lone surrogate (it could never be typed back)", async () => {
    await expect(
      zt.services.identity.addUser({ name: "vic", groups: [], password: "abc\uDC00defghij" }),
    ).rejects.toMatchObject({ code: "ZT_BAD_REQUEST", context: { field: "password" } });
  });
});

describe("a __Host- session cookie over plain http", () => {
  let zt: PepFixture;
  let alice: { password: string; totpSecret: string };

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
      extra: { session: { cookie_name: "__Host-zt_session" } },
    });
    alice = await zt.addUser("alice", ["eng"]);
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  it("stops a sign-in over http from spending the code on a cookie every browser drops (a login loop): refused before any credential is checked", async () => {
    const code = oathtoolCode(alice.totpSecret);
    const body = { username: "alice", password: alice.password, totp: code };
    const plain = await loginRequest(zt.port, HOST, body);
    expect(plain.status).toBe(400);
    expect(plain.json<{ error: { code: string; reason: string } }>().error).toMatchObject({
      code: "ZT_BAD_REQUEST",
      reason: "cookie-needs-https",
    });
    expect(plain.headers["set-cookie"]).toBeUndefined();
    // The code was not spent: over https (a trusted proxy says so) the same one signs in,
    // with a cookie a browser keeps.
    const tls = await loginRequest(zt.port, HOST, body, {
      headers: { "x-forwarded-proto": "https", origin: `https://${HOST}:${zt.port}` },
    });
    expect(tls.status).toBe(200);
    expect(tls.headers["set-cookie"]?.[0]).toMatch(/^__Host-zt_session=[^;]+; Path=\/;.*; Secure$/);
    expect(tls.headers["set-cookie"]?.[0]).not.toMatch(/Domain=/i);
  });
});

describe("a compressed sign-in body", () => {
  let zt: PepFixture;

  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: `http://${HOST}`, to: "http://127.0.0.1:9" }],
    });
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
  });

  it("is refused as 415 naming Content-Encoding (it was read as text: 'not valid JSON', or a form with no fields)", async () => {
    const json = JSON.stringify({ username: "alice", password: "x", totp: "123456" });
    for (const [type, body, encoding] of [
      ["application/json", gzipSync(json), "gzip"],
      ["application/x-www-form-urlencoded", gzipSync("username=alice&password=x"), "GZIP"],
      ["application/json", Buffer.from(json), "identity, br"],
    ] as const) {
      const r = await rawRequest(zt.port, type, body, encoding);
      expect(r.status, encoding).toBe(415);
      expect(r.body.error.code).toBe("ZT_UNSUPPORTED_MEDIA_TYPE");
      expect(r.body.error.message).toMatch(/content-encoding/i);
    }
    // "identity" is no coding at all: read as usual (401: wrong credentials).
    expect(
      (await rawRequest(zt.port, "application/json", Buffer.from(json), "identity")).status,
    ).toBe(401);
  });

  /** A POST to /.zt/login from zt's own origin, body as given, with Content-Encoding. */
  function rawRequest(
    port: number,
    type: string,
    body: Buffer,
    encoding: string,
  ): Promise<{ status: number; body: { error: { code: string; message: string } } }> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/.zt/login",
          agent: false,
          headers: {
            host: `${HOST}:${port}`,
            origin: `http://${HOST}:${port}`,
            "content-type": type,
            "content-encoding": encoding,
            "content-length": body.length,
          },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (text += d));
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              body: JSON.parse(text) as { error: { code: string; message: string } },
            }),
          );
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }
});
