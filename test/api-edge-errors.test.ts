/**
 * The control-plane API at its edge, over a real socket: requests Fastify's router
 * refuses before any handler runs still get zt's error shape with a stable code, and
 * `audit.metrics_token_file` is read the way every other path in zt.yaml is.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { opensslRequest } from "./helpers/tls.js";
import type { FastifyInstance } from "fastify";
import { validateConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { createApiServer } from "../src/api/index.js";
import { isZtError } from "../src/core/errors.js";
import { addBan, removeBan, startBanCache } from "../src/audit/index.js";
import { initPki, pkiService } from "../src/pki/index.js";
import { createTestDatabase, postgresAvailable } from "./store-fixture.js";

let dir: string;
const opened: AppContext[] = [];

/** An AppContext whose zt.yaml sits in `dir` (so relative paths resolve there). */
async function context(extra: Record<string, unknown> = {}): Promise<AppContext> {
  const config = validateConfig({ data_dir: join(dir, "data"), ...extra }, join(dir, "zt.yaml"));
  const ctx = await openAppContext(config, {
    env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
    create: true,
  });
  opened.push(ctx);
  return ctx;
}

async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ host: "127.0.0.1", port: 0 });
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
}

/**
 * The API over a fresh context, listening from the enclosing describe's beforeAll to its
 * afterAll: its base URL (http://127.0.0.1:<port>) once it listens.
 */
function serveApiForSuite(): { readonly base: string } {
  let api: FastifyInstance | undefined;
  const served = { base: "" };
  beforeAll(async () => {
    api = await createApiServer(await context());
    served.base = await listen(api);
  });
  afterAll(async () => api?.close());
  return served;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "zt-api-edge-"));
});

afterAll(async () => {
  for (const ctx of opened) await ctx.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("errors the router raises before a handler", () => {
  const api = serveApiForSuite();

  it("answers a malformed percent-escape in the path with ZT_BAD_REQUEST, not Fastify's FST_ERR_BAD_URL", async () => {
    const res = await fetch(`${api.base}/pki/crl/%ff%00`);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("ZT_BAD_REQUEST");
    expect(JSON.stringify(body)).not.toContain("FST_");
  });

  it("answers an over-long path parameter with ZT_BAD_REQUEST, not FST_ERR_MAX_PARAM_LENGTH", async () => {
    const res = await fetch(`${api.base}/v1/devices/${"a".repeat(600)}/reports`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ payload: "x", signature: "y" }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("ZT_BAD_REQUEST");
    expect(JSON.stringify(body)).not.toContain("FST_");
    // The 600-character parameter is not echoed back whole.
    expect(JSON.stringify(body).length).toBeLessThan(400);
  });
});

describe("API refusals, whichever part of the server writes them", () => {
  const api = serveApiForSuite();

  it("are never cached and never sniffed (Cache-Control: no-store, X-Content-Type-Options: nosniff)", async () => {
    for (const [what, path, init, status] of [
      ["not-found handler", "/no/such/endpoint", {}, 404],
      ["router (bad percent-escape)", "/pki/crl/%ff%00", {}, 400],
      ["error handler (no credentials)", "/api/v1/ssh/sign", { method: "POST" }, 401],
    ] as const) {
      const res = await fetch(`${api.base}${path}`, init);
      expect(res.status, what).toBe(status);
      expect(res.headers.get("content-type"), what).toContain("application/json");
      expect(res.headers.get("cache-control"), what).toBe("no-store");
      expect(res.headers.get("x-content-type-options"), what).toBe("nosniff");
    }
  });
});

describe("API answers that succeed", () => {
  it("are never cached and never sniffed either: an SVID and its key material, and a plain health check", async () => {
    // A data directory of its own: the CA made here is sealed under this context's master key.
    const ctx = await context({ data_dir: join(dir, "svid"), trust_domain: "edge.test" });
    await initPki(ctx);
    const svc = await pkiService(ctx);
    await svc.addRegistration({ spiffeId: "spiffe://edge.test/ns/api" }, "test");
    const { token } = await svc.createJoinToken("spiffe://edge.test/ns/api", "test");
    const csr = opensslRequest({
      keyOut: join(dir, "svid.key"),
      out: join(dir, "svid.csr"),
      subj: "/CN=api",
      san: "URI:spiffe://edge.test/ns/api",
      csr: true,
    });
    const api = await createApiServer(ctx);
    try {
      const base = await listen(api);
      const svid = await fetch(`${base}/api/v1/svid`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ csr }),
      });
      expect(svid.status, await svid.clone().text()).toBe(201);
      expect(String(((await svid.json()) as Record<string, unknown>)["cert_chain"])).toContain(
        "BEGIN CERTIFICATE",
      );
      const health = await fetch(`${base}/healthz`);
      expect(health.status).toBe(200);
      const crl = await fetch(`${base}/pki/crl`);
      expect(crl.status).toBe(200);
      for (const [what, res] of [
        ["SVID", svid],
        ["healthz", health],
        ["CRL", crl],
      ] as const) {
        expect(res.headers.get("cache-control"), what).toBe("no-store");
        expect(res.headers.get("x-content-type-options"), what).toBe("nosniff");
      }
    } finally {
      await api.close();
    }
  });
});

const PG = await postgresAvailable();

describe.runIf(PG)("path parameters on PostgreSQL", () => {
  it("answers a NUL or another control character in any path parameter with 404 ZT_NOT_FOUND, not a 500 (PostgreSQL text refuses NUL)", async () => {
    const db = await createTestDatabase();
    const logged: string[] = [];
    let api: FastifyInstance | undefined;
    let ctx: AppContext | undefined;
    try {
      ctx = await openAppContext(
        validateConfig({ data_dir: join(dir, "pg"), database_url: db.url }, join(dir, "zt.yaml")),
        { env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") }, create: true },
      );
      await initPki(ctx);
      api = await createApiServer(ctx, { log: (line) => logged.push(line) });
      const base = await listen(api);
      // Every route with a path parameter, as the router has them (so a new one is covered).
      const routes: [method: string, path: string][] = [];
      const prefixes: string[] = [];
      for (const line of api.printRoutes({ commonPrefix: false }).split("\n")) {
        const m = /^((?:│ {3}| {4})*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/.exec(line);
        if (!m) continue;
        prefixes.length = m[1]!.length / 4;
        prefixes.push(m[2]!);
        const path = prefixes.join("");
        if (path.includes(":"))
          for (const method of m[3]?.split(", ") ?? []) routes.push([method, path]);
      }
      expect(routes.map(([m, p]) => `${m} ${p}`)).toEqual(
        expect.arrayContaining([
          "GET /pki/crl/:id",
          "POST /v1/devices/:id/reports",
          "POST /v1/devices/:id/bind",
        ]),
      );
      for (const [method, route] of routes) {
        for (const value of ["%00", "x%00y", "%01", "%7f", "%c2%80"]) {
          const path = route.replace(/:[A-Za-z_]+/g, value);
          const res = await fetch(`${base}${path}`, {
            method,
            ...(method === "POST"
              ? {
                  headers: { "content-type": "application/json" },
                  body: JSON.stringify(
                    path.endsWith("/bind")
                      ? { at: 1, signature: "AAAA" }
                      : { payload: "{}", signature: "AAAA" },
                  ),
                }
              : {}),
          });
          const what = `${method} ${path}: ${await res.clone().text()}`;
          expect(res.status, what).toBe(404);
          if (method !== "HEAD")
            expect(((await res.json()) as { error: { code: string } }).error.code, what).toBe(
              "ZT_NOT_FOUND",
            );
        }
      }
      expect(logged.join("\n")).not.toContain("ZT_INTERNAL");
    } finally {
      await api?.close();
      await ctx?.close();
      await db.drop();
    }
  }, 60_000);
});

describe("audit.metrics_token_file", () => {
  it("is read relative to the config file's folder, not the working directory", async () => {
    writeFileSync(join(dir, "metrics.token"), "s3cret-scrape-token\n", { mode: 0o600 });
    // vitest runs in the repository root, where no metrics.token exists.
    const api = await createApiServer(
      await context({ audit: { metrics_token_file: "./metrics.token" } }),
    );
    try {
      const base = await listen(api);
      const none = await fetch(`${base}/metrics`);
      expect(none.status).toBe(401);
      expect(((await none.json()) as { error: { code: string } }).error.code).toBe(
        "ZT_AUTH_REQUIRED",
      );
      const ok = await fetch(`${base}/metrics`, {
        headers: { authorization: "Bearer s3cret-scrape-token" },
      });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("# HELP");
    } finally {
      await api.close();
    }
  });

  it("refuses to start with a missing or empty token file, naming the key (was ZT_INTERNAL ENOENT)", async () => {
    writeFileSync(join(dir, "empty.token"), "\n", { mode: 0o600 });
    for (const [file, why] of [
      ["./missing.token", /cannot read .*missing\.token/],
      ["./empty.token", /empty/],
    ] as const) {
      const ctx = await context({ audit: { metrics_token_file: file } });
      const err = await createApiServer(ctx).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isZtError(err) && err.code).toBe("ZT_CONFIG_INVALID");
      expect((err as Error).message).toMatch(/audit\.metrics_token_file/);
      expect((err as Error).message).toMatch(why);
    }
  });
});

describe("slow clients", () => {
  /** Connects, sends `head`, then one byte every 200 ms until the server closes the socket. */
  function trickle(base: string, head: string): Promise<{ closed: boolean; text: string }> {
    const { port } = new URL(base);
    const socket = net.connect(Number(port), "127.0.0.1");
    let text = "";
    return new Promise((resolve) => {
      const safety = setTimeout(() => finish(false), 30_000);
      const drip = setInterval(() => {
        if (socket.writable) socket.write("x");
      }, 200);
      const finish = (closed: boolean) => {
        clearInterval(drip);
        clearTimeout(safety);
        socket.destroy();
        resolve({ closed, text });
      };
      socket.on("connect", () => socket.write(head));
      socket.on("data", (d: Buffer) => (text += d.toString()));
      socket.on("close", () => finish(true));
      socket.on("error", () => finish(true));
    });
  }

  it("cuts a client trickling its body after limits.request_timeout (the API had no request timeout)", async () => {
    const api = await createApiServer(
      await context({ limits: { header_timeout: "1s", request_timeout: "2s" } }),
    );
    try {
      const base = await listen(api);
      const r = await trickle(
        base,
        "POST /api/v1/svid HTTP/1.1\r\nHost: zt\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
      );
      expect(r.closed).toBe(true);
      if (r.text) expect(r.text).toMatch(/^HTTP\/1\.1 408/);
    } finally {
      await api.close();
    }
  }, 40_000);

  it("cuts a client trickling its headers after limits.header_timeout", async () => {
    const api = await createApiServer(
      await context({ limits: { header_timeout: "1s", request_timeout: "2s" } }),
    );
    try {
      const base = await listen(api);
      const r = await trickle(base, "GET /healthz HTTP/1.1\r\nHost: zt\r\nX-Slow: ");
      expect(r.closed).toBe(true);
    } finally {
      await api.close();
    }
  }, 40_000);
});

describe("connection floods", () => {
  it("closes connections beyond limits.max_connections_per_source from one address (the API had no cap)", async () => {
    const api = await createApiServer(await context({ limits: { max_connections_per_source: 3 } }));
    const open: net.Socket[] = [];
    try {
      const base = await listen(api);
      const port = Number(new URL(base).port);
      for (let i = 0; i < 3; i++) {
        const s = net.connect(port, "127.0.0.1");
        await new Promise<void>((r) => s.once("connect", () => r()));
        open.push(s);
      }
      const extra = net.connect(port, "127.0.0.1");
      const closed = await new Promise<boolean>((resolve) => {
        extra.on("connect", () => extra.write("GET /healthz HTTP/1.1\r\nHost: zt\r\n\r\n"));
        extra.on("data", () => resolve(false));
        extra.on("close", () => resolve(true));
        extra.on("error", () => resolve(true));
      });
      expect(closed).toBe(true);
      // Once one closes, a new connection is served again.
      open.pop()!.destroy();
      await new Promise<void>((r) => setImmediate(r));
      let ok = false;
      for (let i = 0; i < 50 && !ok; i++) {
        const res = await fetch(`${base}/healthz`).catch(() => undefined);
        ok = res?.status === 200;
        if (!ok) await new Promise<void>((r) => setImmediate(r));
      }
      expect(ok).toBe(true);
    } finally {
      for (const s of open) s.destroy();
      await api.close();
    }
  });
});

describe("internal errors", () => {
  it("answer the stable code without the internal detail, which goes to the operator's log", async () => {
    const { initPki } = await import("../src/pki/index.js");
    // The CA keys sealed under one master key, the server started with another.
    const sealed = await context();
    await initPki(sealed);
    const config = validateConfig({ data_dir: join(dir, "data") }, join(dir, "zt.yaml"));
    const ctx = await openAppContext(config, {
      env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
    });
    opened.push(ctx);
    const logged: string[] = [];
    const api = await createApiServer(ctx, { log: (line) => logged.push(line) });
    try {
      const base = await listen(api);
      const res = await fetch(`${base}/pki/crl`);
      expect(res.status).toBe(500);
      const body = (await res.json()) as { error: Record<string, unknown> };
      expect(body.error["code"]).toBe("ZT_KEY_DECRYPT_FAILED");
      // The key ids and what failed stay on the server.
      expect(JSON.stringify(body)).not.toMatch(/pki-ca|ca_root|decrypt|master key/);
      expect(logged.join("\n")).toMatch(/GET \/pki\/crl.*ZT_KEY_DECRYPT_FAILED.*cannot decrypt/);
    } finally {
      await api.close();
    }
  });
});

describe("requests Node's HTTP parser refuses", () => {
  const api = serveApiForSuite();

  function raw(data: string): Promise<string> {
    return new Promise((resolve) => {
      const s = net.connect(Number(new URL(api.base).port), "127.0.0.1", () => s.write(data));
      let text = "";
      s.on("data", (d: Buffer) => (text += d.toString()));
      s.on("close", () => resolve(text));
      s.on("error", () => resolve(text));
    });
  }

  it("answers them in zt's error shape with a stable code, not Fastify's", async () => {
    for (const [data, status, code] of [
      ["GARBAGE\r\n\r\n", 400, "ZT_BAD_REQUEST"],
      [
        "POST /api/v1/svid HTTP/1.1\r\nHost: zt\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "ZT_BAD_REQUEST",
      ],
      [
        `GET /healthz HTTP/1.1\r\nHost: zt\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
        431,
        "ZT_HEADERS_TOO_LARGE",
      ],
    ] as const) {
      const text = await raw(data);
      expect(text).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const body = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)) as {
        error: { code: string };
      };
      expect(body.error.code).toBe(code);
      const head = text.slice(0, text.indexOf("\r\n\r\n")).toLowerCase();
      expect(head).toContain("\r\ncache-control: no-store\r\n");
      expect(head).toContain("\r\nx-content-type-options: nosniff\r\n");
    }
  });
});

describe("a banned source address", () => {
  it("is refused by the API as by the PEP (403 ZT_BANNED), until the ban is lifted", async () => {
    const ctx = await context();
    const stopBans = await startBanCache(ctx.store, ctx.events, () => ctx.clock.now());
    const api = await createApiServer(ctx);
    try {
      const base = await listen(api);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      await addBan(ctx, "127.0.0.1", 3_600_000, "test", "test");
      for (const path of ["/healthz", "/api/v1/ssh/sign"]) {
        const res = await fetch(`${base}${path}`, { method: path === "/healthz" ? "GET" : "POST" });
        expect(res.status, path).toBe(403);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe("ZT_BANNED");
      }
      await removeBan(ctx, "127.0.0.1", "test");
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
    } finally {
      await api.close();
      stopBans();
    }
  });
});
