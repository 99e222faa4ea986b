/**
 * What the PEP does to a request it allows, checked over real sockets against a real
 * upstream: bodies arrive intact (declared and chunked), large responses stream through
 * whole, hop-by-hop headers stop at zt, several Set-Cookie survive, and a dead, slow or
 * truncating upstream becomes a clear 502/504 or a cut connection, never a hang.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import { createHash, randomBytes } from "node:crypto";
import net, { type AddressInfo } from "node:net";
import { freePort, raw, startPep, type PepFixture } from "./pep-fixture.js";

const POLICY = `permit (principal in Group::"eng", action, resource);`;
const BIG = randomBytes(6 * 1024 * 1024);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

async function startTestUpstream(): Promise<{ port: number; seen: Seen[]; close(): void }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/big") {
        res.writeHead(200, { "content-type": "application/octet-stream" });
        // Written in pieces so the PEP sees many chunks (and must respect backpressure).
        let off = 0;
        const more = () => {
          while (off < BIG.length) {
            const piece = BIG.subarray(off, off + 64 * 1024);
            off += piece.length;
            if (!res.write(piece)) return void res.once("drain", more);
          }
          res.end();
        };
        more();
        return;
      }
      if (path === "/slow") return; // never answers
      if (path === "/empty") {
        res.writeHead(204, { "x-empty": "yes" });
        res.end();
        return;
      }
      if (path === "/truncated") {
        res.writeHead(200, { "content-length": "1000" });
        res.write("only-part-of-it");
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      }
      if (path === "/headers") {
        res.setHeader("set-cookie", ["a=1; Path=/", "b=2; Path=/"]);
        res.setHeader("keep-alive", "timeout=99");
        res.setHeader("x-upstream", "yes");
        res.writeHead(201, { "content-type": "text/plain" });
        res.end("made");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ sha: sha(body), length: body.length }));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** A request through the PEP with a body; collects the raw response body. */
function send(
  port: number,
  o: {
    path: string;
    cookie: string;
    method?: string;
    body?: Buffer;
    chunked?: boolean;
    headers?: Record<string, string>;
  },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path: o.path,
        method: o.method ?? "GET",
        agent: false,
        headers: {
          host: "app.localhost",
          cookie: `${o.cookie}; theme=dark`,
          ...(o.body && !o.chunked ? { "content-length": String(o.body.length) } : {}),
          ...o.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (o.body && o.chunked) {
      // Several writes: Node sends Transfer-Encoding: chunked.
      for (let i = 0; i < o.body.length; i += 1000) req.write(o.body.subarray(i, i + 1000));
      req.end();
    } else req.end(o.body);
  });
}

describe("PEP forwarding (keep-alive upstream pool)", () => {
  let zt: PepFixture;
  let up: Awaited<ReturnType<typeof startTestUpstream>>;
  let deadPort: number;
  let alice: { cookie: string };

  beforeAll(async () => {
    up = await startTestUpstream();
    deadPort = await freePort();
    zt = await startPep({
      policies: POLICY,
      routes: [
        {
          name: "app",
          from: "http://app.localhost",
          to: `http://127.0.0.1:${up.port}`,
          timeout: "1500ms",
        },
        { name: "dead", from: "http://dead.localhost", to: `http://127.0.0.1:${deadPort}` },
      ],
      limits: { max_body_bytes: 64 * 1024 },
    });
    await zt.addUser("alice", ["eng"]);
    alice = await zt.session("alice");
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    up?.close();
  });

  it("forwards a declared-length body intact, and the session cookie never reaches the upstream", async () => {
    const body = randomBytes(40_000);
    const r = await send(zt.port, { path: "/echo", method: "POST", body, cookie: alice.cookie });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toEqual({ sha: sha(body), length: body.length });
    const seen = up.seen.at(-1)!;
    expect(seen.headers["content-length"]).toBe(String(body.length));
    expect(seen.headers["cookie"]).toBe("theme=dark");
    expect(seen.headers["x-zt-assertion"]).toMatch(/^ey/);
  });

  it("forwards a chunked body intact under the limit, and refuses one over it with 413", async () => {
    const body = randomBytes(30_000);
    const ok = await send(zt.port, {
      path: "/echo",
      method: "POST",
      body,
      chunked: true,
      cookie: alice.cookie,
    });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body.toString())).toEqual({ sha: sha(body), length: body.length });
    const over = await send(zt.port, {
      path: "/echo-over",
      method: "POST",
      body: randomBytes(200_000),
      chunked: true,
      cookie: alice.cookie,
    }).catch((e: Error) => ({ status: 0, body: Buffer.from(e.message), headers: {} }));
    // Either the 413 arrives, or zt cuts the connection mid-upload; never a 200.
    expect([413, 0]).toContain(over.status);
    expect(up.seen.some((s) => s.url === "/echo-over" && s.body.length === 200_000)).toBe(false);
  });

  it("passes Expect: 100-continue uploads through", async () => {
    const body = Buffer.from("hello upstream");
    const r = await send(zt.port, {
      path: "/echo",
      method: "PUT",
      body,
      cookie: alice.cookie,
      headers: { expect: "100-continue" },
    });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toEqual({ sha: sha(body), length: body.length });
  });

  it("streams a large response through whole", async () => {
    const r = await send(zt.port, { path: "/big", cookie: alice.cookie });
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(BIG.length);
    expect(sha(r.body)).toBe(sha(BIG));
  });

  it("relays status and end-to-end headers, keeps every Set-Cookie, drops hop-by-hop ones", async () => {
    const r = await send(zt.port, { path: "/headers", cookie: alice.cookie });
    expect(r.status).toBe(201);
    expect(r.body.toString()).toBe("made");
    expect(r.headers["set-cookie"]).toEqual(["a=1; Path=/", "b=2; Path=/"]);
    expect(r.headers["x-upstream"]).toBe("yes");
    expect(r.headers["keep-alive"]).not.toBe("timeout=99");
  });

  it("relays HEAD and 204 answers without inventing a body", async () => {
    const head = await raw(zt.port, [
      `HEAD /big HTTP/1.1\r\nHost: app.localhost\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(head.status).toBe(200);
    expect(head.text.endsWith("\r\n\r\n")).toBe(true);
    const empty = await send(zt.port, { path: "/empty", cookie: alice.cookie });
    expect(empty.status).toBe(204);
    expect(empty.headers["x-empty"]).toBe("yes");
    expect(empty.body.length).toBe(0);
  });

  it("answers 502 ZT_UPSTREAM_UNAVAILABLE when the upstream is down", async () => {
    const r = await raw(zt.port, [
      `GET / HTTP/1.1\r\nHost: dead.localhost\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(r.status).toBe(502);
    expect(r.text).toContain("ZT_UPSTREAM_UNAVAILABLE");
    expect(r.text).not.toMatch(/at .*\.js:\d+/);
  });

  it("answers 504 ZT_UPSTREAM_TIMEOUT when the upstream does not answer within the route timeout", async () => {
    const r = await raw(zt.port, [
      `GET /slow HTTP/1.1\r\nHost: app.localhost\r\nCookie: ${alice.cookie}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(r.status).toBe(504);
    expect(r.text).toContain("ZT_UPSTREAM_TIMEOUT");
  });

  it("cuts the client connection when the upstream dies mid-response (no hang, no padding)", async () => {
    const r = await raw(zt.port, [
      `GET /truncated HTTP/1.1\r\nHost: app.localhost\r\nCookie: ${alice.cookie}\r\n\r\n`,
    ]);
    expect(r.closed).toBe(true);
    expect(r.status).toBe(200);
    expect(r.text).toContain("only-part-of-it");
    const bodyStart = r.text.indexOf("\r\n\r\n") + 4;
    expect(r.text.length - bodyStart).toBeLessThan(1000);
  });

  it("fails closed while the audit log cannot keep up: 503 audit-backlog, then serves again", async () => {
    // Half of the writer's buffer (200,000 by default) queued at once: more than the
    // writer can commit before the next request arrives.
    for (let i = 0; i < 150_000; i++)
      zt.ctx.audit.record({ kind: "test.load", outcome: "info", data: { i } });
    expect(zt.ctx.audit.backlogged).toBe(true);
    const before = up.seen.length;
    const r = await send(zt.port, { path: "/echo", cookie: alice.cookie });
    expect(r.status).toBe(503);
    expect(r.headers["retry-after"]).toBe("1");
    expect(JSON.parse(r.body.toString()).error).toMatchObject({
      code: "ZT_UNAVAILABLE",
      reason: "audit-backlog",
    });
    expect(up.seen.length).toBe(before);
    await zt.ctx.audit.flush();
    expect(zt.ctx.audit.backlogged).toBe(false);
    expect((await send(zt.port, { path: "/echo", cookie: alice.cookie })).status).toBe(200);
  });

  it("keeps serving after all of the above (the pool recovers)", async () => {
    const body = Buffer.from("still here");
    const r = await send(zt.port, { path: "/echo", method: "POST", body, cookie: alice.cookie });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString()).sha).toBe(sha(body));
  });
});

/**
 * A raw upstream that misbehaves on purpose: it answers as soon as a request head has
 * arrived (without reading any body), `extra` glued after its answer. It keeps every byte
 * each connection sent it, and whether zt closed that connection.
 */
async function startRawUpstream(extra: string): Promise<{
  port: number;
  conns: { received: string; ended: boolean }[];
  close(): void;
}> {
  const conns: { received: string; ended: boolean }[] = [];
  const server = net.createServer((socket) => {
    const c = { received: "", ended: false };
    conns.push(c);
    let answered = 0;
    socket.on("data", (d: Buffer) => {
      c.received += d.toString("latin1");
      // One answer per request head seen (a head ends with an empty line).
      const heads = c.received.split("\r\n\r\n").length - 1;
      while (answered < heads) {
        answered++;
        socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst${extra}`);
      }
    });
    socket.on("end", () => (c.ended = true));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    conns,
    close: () => server.close(),
  };
}

describe("PEP upstream desync (a misbehaving upstream, raw sockets)", () => {
  let zt: PepFixture;
  let glued: Awaited<ReturnType<typeof startRawUpstream>>;
  let early: Awaited<ReturnType<typeof startRawUpstream>>;
  let alice: { cookie: string };

  beforeAll(async () => {
    glued = await startRawUpstream("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\ninjected");
    early = await startRawUpstream("");
    zt = await startPep({
      policies: POLICY,
      routes: [
        { name: "glued", from: "http://glued.localhost", to: `http://127.0.0.1:${glued.port}` },
        { name: "early", from: "http://early.localhost", to: `http://127.0.0.1:${early.port}` },
      ],
    });
    await zt.addUser("alice", ["eng"]);
    alice = await zt.session("alice");
  }, 60_000);

  afterAll(async () => {
    await zt?.close();
    glued?.close();
    early?.close();
  });

  it("stops response desync: an answer glued after the first never reaches the next client", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await send(zt.port, {
        path: `/n${i}`,
        cookie: alice.cookie,
        headers: { host: "glued.localhost" },
      });
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe("first");
    }
    // Each request had a connection of its own: the one that carried stray bytes was dropped.
    expect(glued.conns.length).toBe(3);
  });

  it("stops smuggling through an early answer: the rest of the body is not sent, the connection is closed", async () => {
    const smuggled = "GET /admin HTTP/1.1\r\nhost: early.localhost\r\nx-zt-user: admin\r\n\r\n";
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1",
          port: zt.port,
          path: "/upload",
          method: "POST",
          agent: false,
          headers: {
            host: "early.localhost",
            cookie: alice.cookie,
            "content-length": String(10 + smuggled.length),
          },
        },
        (res) => {
          res.resume();
          // The answer came before the body was complete: only now send the rest,
          // which holds what a desynchronised upstream would read as a request of its own.
          req.end(smuggled);
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.write("0123456789");
    });
    expect(status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    expect(early.conns.length).toBe(1);
    const c = early.conns[0]!;
    expect(c.received).not.toContain("/admin");
    expect(c.received).not.toContain("x-zt-user");
    expect(c.ended).toBe(true);
    // The next request is answered on a new connection, whole.
    const next = await send(zt.port, {
      path: "/after",
      cookie: alice.cookie,
      headers: { host: "early.localhost" },
    });
    expect(next.body.toString()).toBe("first");
    expect(early.conns.length).toBe(2);
  });
});
