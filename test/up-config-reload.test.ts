/**
 * SIGHUP reloads zt.yaml in a running `zt up` (it reloaded the policy set only: an edit
 * of zt.yaml changed nothing until a restart). A route added, moved to another upstream
 * or removed applies to new requests without a restart; requests in flight, streaming
 * responses (Server-Sent Events) and WebSockets on a removed or moved route are cut,
 * trusted_proxies, limits.max_body_bytes and forward_auth.headers apply at once, an invalid file
 * keeps the last good config and says why, a key only a restart applies is named and not
 * applied, a listener certificate from zt's CA names a host added by the reload, and with
 * PEP workers every worker — one started after the reload too — runs the reloaded routes.
 *
 * Real `zt up` processes, real upstreams over real sockets; waits poll for observable
 * state, never for time.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { writeFileSync } from "node:fs";
import * as OTPAuth from "otpauth";
import WebSocket from "ws";
import { login, request } from "./helpers/http-client.js";
import {
  OPERATOR_AUTH,
  runZt,
  startZtUp,
  tempDir,
  withOperatorToken,
  workerPids,
  writeConfig,
  type UpProcess,
} from "./helpers/zt-process.js";
import { waitFor } from "./store-fixture.js";
import { freePort } from "./helpers/free-port.js";
import { startRecordingUpstream } from "./helpers/upstream.js";

// Every App the policy sees has its `name` attribute: a route whose App entity were
// missing (the entity snapshot not following the reload) would be denied.
const POLICY = `@id("eng")
permit (principal in Group::"eng", action, resource is App) when { resource.name != "" };
`;

/** A real upstream that answers with its own name, and holds `/hold` until released. */
async function namedUpstream(name: string) {
  const seen: string[] = [];
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  const server = http.createServer((req, res) => {
    seen.push(req.url ?? "");
    const answer = () => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`${name} ${req.url}`);
    };
    if (req.url === "/hold") void held.then(answer);
    else answer();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    release: () => release(),
    close: () =>
      new Promise<void>((r) => {
        release();
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
type Upstream = Awaited<ReturnType<typeof namedUpstream>>;

function yaml(routes: Array<[name: string, host: string, port: number]>, extra = ""): string {
  return `data_dir: ./data
trust_domain: reload.test
policies: ./policies
mfa: { max_failures: 50 }
routes:
${routes.map(([n, h, p]) => `  - { name: ${n}, from: "http://${h}", to: "http://127.0.0.1:${p}" }`).join("\n")}
${extra}`;
}

interface Readyz {
  status: string;
  config_version: string;
  config_error: string | null;
  config_restart_required: string[];
  proxy_worker_status?: Array<{
    worker: number;
    state: string;
    config_version?: string;
    config_error?: string | null;
  }>;
}

async function readyz(zt: UpProcess): Promise<{ status: number; body: Readyz }> {
  const api = new URL(zt.apiUrl);
  const r = await request(Number(api.port), {
    host: api.host,
    path: "/readyz",
    headers: OPERATOR_AUTH,
  });
  return { status: r.status, body: r.json<Readyz>() };
}

/** Starts zt with one user (alice, in eng) and signs her in; returns the session cookie. */
async function startWithUser(
  config: string,
  env: Record<string, string>,
): Promise<{ zt: UpProcess; port: number; cookie: string; signIn: () => Promise<string[]> }> {
  expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
  const add = await runZt(
    ["--config", config, "user", "add", "alice", "--group", "eng", "--password-stdin", "--json"],
    { env, input: "pw-alice-correct-horse\n" },
  );
  expect(add.code, add.stderr).toBe(0);
  const secret = (JSON.parse(add.stdout) as { totp_secret: string }).totp_secret;
  // The operator token opens /readyz's detail (and /metrics).
  const zt = await startZtUp(["--config", config, "up"], { env: withOperatorToken(env) });
  const port = Number(new URL(zt.pepUrl).port);
  // TOTP codes are single-use and accepted ±1 step: each sign-in uses the next step.
  let step = -1;
  const code = () =>
    new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret) }).generate({
      timestamp: Date.now() + step++ * 30_000,
    });
  const l = await login(port, "app.localhost", "alice", "pw-alice-correct-horse", code());
  expect(l.status, JSON.stringify(l.body)).toBe(200);
  const signIn = async () => {
    const r = await request(port, {
      host: "app.localhost",
      path: "/.zt/login",
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "alice", password: "pw-alice-correct-horse", totp: code() }),
    });
    expect(r.status, r.body).toBe(200);
    return ([] as string[]).concat(r.headers["set-cookie"] ?? []);
  };
  return { zt, port, cookie: l.cookie!, signIn };
}

/** Polls until `f` holds, then returns its last value. */
async function until<T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  let last: T | undefined;
  try {
    await waitFor(async () => ok((last = await f())), what, 20_000);
  } catch (e) {
    throw new Error(`${(e as Error).message}; last: ${JSON.stringify(last)}`);
  }
  return last!;
}

const running: UpProcess[] = [];
const upstreams: Upstream[] = [];
afterEach(async () => {
  for (const z of running.splice(0)) await z.stop();
});
afterAll(async () => {
  for (const u of upstreams.splice(0)) await u.close();
});

describe("zt up reloads zt.yaml on SIGHUP (one process)", () => {
  let a: Upstream;
  let b: Upstream;
  beforeAll(async () => {
    upstreams.push((a = await namedUpstream("a")), (b = await namedUpstream("b")));
  });

  it("adds, moves and removes routes live, keeps the last good config on an invalid file, and names keys that need a restart", async () => {
    const dir = tempDir();
    const config = writeConfig(dir, yaml([["app", "app.localhost", a.port]]), {
      "main.cedar": POLICY,
    });
    const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
    const { zt, port, cookie, signIn } = await startWithUser(config, env);
    running.push(zt);
    const get = async (host: string, path = "/") => {
      const r = await request(port, { host, path, headers: { cookie } });
      return `${r.status} ${r.status === 200 ? r.body : (r.json() as { error?: { code?: string } }).error?.code}`;
    };
    // Resolves once zt has logged this reload's outcome (applied or refused): a probe sent
    // before that could be in flight on a route the reload changes, and be cut with it.
    const outcomes = () => zt.output().match(/zt: config reload(ed \(| refused)/g)?.length ?? 0;
    const reload = async (text: string) => {
      const before = outcomes();
      writeFileSync(config, text);
      zt.child.kill("SIGHUP");
      await waitFor(() => outcomes() > before, "the reload's outcome in zt's log", 20_000);
    };
    expect(await get("app.localhost", "/one")).toBe("200 a /one");
    expect(await get("new.localhost")).toBe("404 ZT_ROUTE_NOT_FOUND");
    const first = (await readyz(zt)).body;
    expect(first.config_error).toBeNull();

    // Added: the new host is proxied to its upstream, and the policy sees its App.
    await reload(
      yaml([
        ["app", "app.localhost", a.port],
        ["new", "new.localhost", b.port],
      ]),
    );
    expect(await get("new.localhost", "/n")).toBe("200 b /n");
    expect(zt.output()).toMatch(/zt: config reloaded \(routes added: new\)/);
    expect(await get("app.localhost", "/two")).toBe("200 a /two");
    const added = (await readyz(zt)).body;
    expect(added.config_version).not.toBe(first.config_version);

    // Moved: new requests go to the new upstream; one in flight on the old is left to
    // finish there within limits.reload_grace (10s by default).
    const inFlight = request(port, {
      host: "app.localhost",
      path: "/hold",
      headers: { cookie },
    }).then(
      (r) => `${r.status} ${r.body}`,
      (e: NodeJS.ErrnoException) => `cut: ${e.code ?? e.message}`,
    );
    await waitFor(() => a.seen.includes("/hold"), "the held request at upstream a");
    await reload(
      yaml([
        ["app", "app.localhost", b.port],
        ["new", "new.localhost", b.port],
      ]),
    );
    expect(await get("app.localhost", "/m")).toBe("200 b /m");
    expect(zt.output()).toMatch(
      /zt: config reloaded \(routes changed: app; 1 connection left to finish within limits\.reload_grace\)/,
    );
    a.release();
    expect(await inFlight).toBe("200 a /hold");

    // Removed: its host has no route any more; the others are untouched.
    await reload(yaml([["app", "app.localhost", b.port]]));
    expect(await get("new.localhost")).toBe("404 ZT_ROUTE_NOT_FOUND");
    expect(zt.output()).toMatch(/zt: config reloaded \(routes removed: new\)/);

    // Invalid: refused, named, audited, counted, shown in /readyz; the last good config stays.
    await reload(`${yaml([["app", "app.localhost", a.port]])}routes_typo: []\n`);
    const refused = await until(
      "the refused reload in /readyz",
      () => readyz(zt),
      (r) => r.body.config_error !== null,
    );
    expect(refused.status).toBe(200);
    expect(refused.body.config_error).toMatch(/zt\.yaml: unknown key\(s\) "routes_typo"/);
    expect(zt.output()).toMatch(
      /zt: config reload refused, keeping the last good config: .*zt\.yaml: unknown key\(s\) "routes_typo"/,
    );
    expect(await get("app.localhost", "/kept")).toBe("200 b /kept");
    expect(await get("new.localhost")).toBe("404 ZT_ROUTE_NOT_FOUND");
    const api = new URL(zt.apiUrl);
    const metrics = await request(Number(api.port), {
      host: api.host,
      path: "/metrics",
      headers: OPERATOR_AUTH,
    });
    expect(metrics.body).toMatch(/^zt_config_reloads_total\{outcome="refused"\} 1$/m);
    expect(metrics.body).toMatch(/^zt_config_reloads_total\{outcome="applied"\} 3$/m);

    // Forward-auth from this (loopback, trusted) peer: answered.
    const authz = async () => {
      const r = await request(port, {
        host: "app.localhost",
        path: "/.zt/authz",
        headers: {
          cookie,
          accept: "application/json",
          "x-forwarded-proto": "http",
          "x-forwarded-host": "app.localhost",
          "x-forwarded-uri": "/fa",
          "x-forwarded-method": "GET",
        },
      });
      return r.status === 200
        ? "200"
        : `${r.status} ${r.json<{ error: { code: string } }>().error.code}`;
    };
    expect(await authz()).toBe("200");

    // Restart-only keys: named, not applied; the reloadable rest is applied.
    await reload(
      yaml(
        [
          ["app", "app.localhost", b.port],
          ["late", "late.localhost", a.port],
        ],
        'session: { ttl: 1h }\ntrusted_proxies: ["10.9.0.0/16"]\n',
      ),
    );
    const warned = await until(
      "the restart-only key in /readyz",
      () => readyz(zt),
      (r) => r.body.config_restart_required.length > 0,
    );
    expect(warned.body.config_restart_required).toEqual(["session.ttl"]);
    expect(warned.body.config_error).toBeNull();
    // Logged right after the outcome line, possibly in a later chunk of zt's output.
    await waitFor(
      () =>
        /zt: config: session\.ttl changed in zt\.yaml: not applied, only a restart applies it/.test(
          zt.output(),
        ),
      "the restart-only warning in zt's log",
    );
    expect(await get("late.localhost", "/l")).toBe("200 a /l");
    // trusted_proxies no longer holds loopback: forward-auth refuses this peer.
    expect(await authz()).toBe("403 ZT_FORWARD_AUTH_UNTRUSTED");
    // Sessions still get the lifetime zt started with (12h), not the edited 1h.
    expect((await signIn()).join("\n")).toMatch(/zt_session=[^;]+;.*Max-Age=43200/);

    const audit = await runZt(["--config", config, "audit", "tail", "--json", "-n", "200"], {
      env,
    });
    expect(audit.code, audit.stderr).toBe(0);
    const reloads = audit.stdout
      .trim()
      .split("\n")
      .map(
        (l) =>
          JSON.parse(l) as { kind: string; outcome: string; reason: string | null; data: object },
      )
      .filter((e) => e.kind === "config.reload");
    expect(reloads.map((e) => [e.outcome, e.reason, e.data])).toEqual([
      [
        "success",
        null,
        expect.objectContaining({ routes_added: ["new"], routes_removed: [], routes_changed: [] }),
      ],
      ["success", null, expect.objectContaining({ routes_changed: ["app"] })],
      ["success", null, expect.objectContaining({ routes_removed: ["new"] })],
      [
        "failure",
        "config-invalid",
        { error: expect.stringMatching(/unknown key\(s\) "routes_typo"/) },
      ],
      [
        "success",
        null,
        expect.objectContaining({
          routes_added: ["late"],
          changed: ["trusted_proxies"],
          restart_required: ["session.ttl"],
        }),
      ],
    ]);
  }, 120_000);
});

describe("zt up reloads zt.yaml on SIGHUP (live WebSockets)", () => {
  it("with limits.reload_grace 0s, cuts at once the WebSockets of a route the reload removes or moves to another upstream, and keeps the others", async () => {
    const one = await startRecordingUpstream();
    const two = await startRecordingUpstream();
    const wsYaml = (routes: Array<[name: string, port: number]>) =>
      yaml([], "limits: { reload_grace: 0s }\n").replace(
        /routes:\n/,
        `routes:\n${routes
          .map(
            ([n, p]) =>
              `  - { name: ${n}, from: "http://${n}.localhost", to: "http://127.0.0.1:${p}", websockets: true }\n`,
          )
          .join("")}`,
      );
    const dir = tempDir();
    const config = writeConfig(
      dir,
      wsYaml([
        ["app", one.port],
        ["gone", one.port],
        ["moved", one.port],
      ]),
      { "main.cedar": POLICY },
    );
    const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
    const { zt, port, cookie } = await startWithUser(config, env);
    running.push(zt);
    try {
      /** A WebSocket through zt to `name`'s route, proven live by an echo. */
      const open = async (name: string) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
          headers: { host: `${name}.localhost`, cookie },
        });
        const state = { closed: false };
        ws.on("close", () => (state.closed = true));
        ws.on("error", () => undefined);
        await new Promise<void>((resolve, reject) => {
          ws.once("open", () => resolve());
          ws.once("unexpected-response", (_q, res) =>
            reject(new Error(`${name}: upgrade refused: ${res.statusCode}`)),
          );
        });
        const echo = async (text: string) => {
          const got = new Promise<string>((r) =>
            ws.once("message", (m: Buffer) => r(m.toString())),
          );
          ws.send(text);
          return got;
        };
        expect(await echo(`hello ${name}`)).toBe(`hello ${name}`);
        return { ws, state, echo };
      };
      const kept = await open("app");
      const gone = await open("gone");
      const moved = await open("moved");

      writeFileSync(
        config,
        wsYaml([
          ["app", one.port],
          ["moved", two.port],
        ]),
      );
      zt.child.kill("SIGHUP");
      await waitFor(
        () => /zt: config reloaded \(routes removed: gone; routes changed: moved/.test(zt.output()),
        "the reload",
      );
      await until(
        "the WebSockets of the removed and the moved route closed",
        async () => ({ gone: gone.state.closed, moved: moved.state.closed }),
        (v) => v.gone && v.moved,
      );
      expect(zt.output()).toMatch(/routes changed: moved; 2 connections cut\)/);
      // Each cut is audited once, naming its route and the reload that caused it.
      const cuts = async () => {
        const r = await runZt(["--config", config, "audit", "tail", "--json", "-n", "200"], {
          env,
        });
        expect(r.code, r.stderr).toBe(0);
        return r.stdout
          .trim()
          .split("\n")
          .map(
            (l) =>
              JSON.parse(l) as {
                kind: string;
                route: string | null;
                reason: string | null;
                data: Record<string, unknown>;
              },
          )
          .filter((e) => e.kind === "session.cut")
          .map((e) => [e.route, e.reason, e.data["cause"]]);
      };
      expect(await until("the cuts in the audit log", cuts, (v) => v.length >= 2)).toEqual([
        ["gone", "route-removed", "config-reload"],
        ["moved", "route-changed", "config-reload"],
      ]);
      // The unchanged route's WebSocket runs on.
      expect(kept.state.closed).toBe(false);
      expect(await kept.echo("still here")).toBe("still here");
      // The moved route's new WebSockets reach its new upstream.
      const again = await open("moved");
      expect(two.seen.some((r) => r.method === "UPGRADE")).toBe(true);
      again.ws.close();
      kept.ws.close();
    } finally {
      await one.close();
      await two.close();
    }
  }, 120_000);
});

/** A real upstream whose every answer is a Server-Sent Events stream that never ends. */
async function streamingUpstream(name: string) {
  const streams = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    res.write(`data: ${name} ${req.url}\n\n`);
    streams.add(res);
    res.on("close", () => streams.delete(res));
  });
  // An event a tick on every open stream, for as long as the upstream runs.
  const tick = setInterval(() => {
    for (const res of streams) res.write("data: tick\n\n");
  }, 50);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        clearInterval(tick);
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

describe("zt up reloads zt.yaml on SIGHUP (streaming responses)", () => {
  it("ends the never-ending responses of a route the reload removes or moves once limits.reload_grace is over, and keeps the others flowing", async () => {
    const one = await streamingUpstream("one");
    const two = await streamingUpstream("two");
    const dir = tempDir();
    const routes = (r: Array<[string, number]>) =>
      yaml(
        r.map(([n, p]) => [n, `${n}.localhost`, p] as [string, string, number]),
        "limits: { reload_grace: 1s }\n",
      );
    const config = writeConfig(
      dir,
      routes([
        ["app", one.port],
        ["gone", one.port],
        ["moved", one.port],
      ]),
      { "main.cedar": POLICY },
    );
    const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
    const { zt, port, cookie } = await startWithUser(config, env);
    running.push(zt);
    try {
      /** An event stream through zt on `name`'s route, proven flowing by its first event. */
      const open = async (name: string) => {
        const state = { ended: false, bytes: 0, text: "" };
        await new Promise<void>((resolve, reject) => {
          const req = http.get(
            {
              port,
              host: "127.0.0.1",
              path: "/events",
              headers: { host: `${name}.localhost`, cookie },
            },
            (res) => {
              if (res.statusCode !== 200) reject(new Error(`${name}: ${res.statusCode}`));
              res.on("data", (d: Buffer) => {
                state.bytes += d.length;
                if (state.text.length < 100) state.text += d.toString();
                resolve();
              });
              res.on("close", () => (state.ended = true));
              res.on("error", () => undefined);
            },
          );
          req.on("error", (e) => {
            state.ended = true;
            reject(e);
          });
        });
        return state;
      };
      const kept = await open("app");
      const gone = await open("gone");
      const moved = await open("moved");

      writeFileSync(
        config,
        routes([
          ["app", one.port],
          ["moved", two.port],
        ]),
      );
      zt.child.kill("SIGHUP");
      await waitFor(
        () => /zt: config reloaded \(routes removed: gone; routes changed: moved/.test(zt.output()),
        "the reload",
      );
      expect(zt.output()).toMatch(
        /routes changed: moved; 2 connections left to finish within limits\.reload_grace\)/,
      );
      await until(
        "the streams of the removed and the moved route ended",
        async () => ({ gone: gone.ended, moved: moved.ended }),
        (v) => v.gone && v.moved,
      );
      await waitFor(
        () =>
          /zt: config reload: 2 connections on a removed or changed route still open after limits\.reload_grace: cut/.test(
            zt.output(),
          ),
        "the cut after the grace in zt's log",
      );
      // The unchanged route's stream flows on.
      const before = kept.bytes;
      await until(
        "more events on the kept stream",
        async () => kept.bytes,
        (n) => n > before,
      );
      expect(kept.ended).toBe(false);
      // The moved route's new streams come from its new upstream.
      const again = await open("moved");
      expect(again.text).toMatch(/^data: two \/events\n/);
      expect(moved.text).toMatch(/^data: one \/events\n/);
    } finally {
      await one.close();
      await two.close();
    }
  }, 120_000);
});

describe("zt up reloads zt.yaml on SIGHUP (limits.max_body_bytes, forward_auth.headers)", () => {
  it("applies a new body limit and forward-auth header convention to the next requests", async () => {
    const up = await namedUpstream("u");
    upstreams.push(up);
    const conf = (limit: number, convention: string) =>
      yaml(
        [["app", "app.localhost", up.port]],
        `limits: { max_body_bytes: ${limit} }\nforward_auth: { headers: ${convention} }\n`,
      );
    const dir = tempDir();
    const config = writeConfig(dir, conf(1_000, "x-original"), { "main.cedar": POLICY });
    const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
    const { zt, port, cookie } = await startWithUser(config, env);
    running.push(zt);
    const post = async (bytes: number) => {
      const r = await request(port, {
        host: "app.localhost",
        path: "/upload",
        method: "POST",
        headers: { cookie, "content-type": "text/plain" },
        body: "x".repeat(bytes),
      });
      return r.status === 200
        ? "200"
        : `${r.status} ${r.json<{ error: { code: string } }>().error.code}`;
    };
    /** A forward-auth check naming the original request in one convention. */
    const authz = async (convention: "x-original" | "x-forwarded") => {
      const r = await request(port, {
        host: "app.localhost",
        path: "/.zt/authz",
        headers: {
          cookie,
          accept: "application/json",
          ...(convention === "x-original"
            ? { "x-original-url": "http://app.localhost/fa", "x-original-method": "GET" }
            : {
                "x-forwarded-proto": "http",
                "x-forwarded-host": "app.localhost",
                "x-forwarded-uri": "/fa",
                "x-forwarded-method": "GET",
              }),
        },
      });
      return r.status === 200
        ? "200"
        : `${r.status} ${r.json<{ error: { reason: string } }>().error.reason}`;
    };
    expect(await post(900)).toBe("200");
    expect(await post(5_000)).toBe("413 ZT_PAYLOAD_TOO_LARGE");
    expect(await authz("x-original")).toBe("200");
    expect(await authz("x-forwarded")).toMatch(/^4\d\d forwarded-missing$/);

    writeFileSync(config, conf(100_000, "x-forwarded"));
    zt.child.kill("SIGHUP");
    await waitFor(
      () =>
        /zt: config reloaded \(limits\.max_body_bytes, forward_auth\.headers changed\)/.test(
          zt.output(),
        ),
      "the reload",
    );
    expect(await post(5_000)).toBe("200");
    expect(await post(200_000)).toBe("413 ZT_PAYLOAD_TOO_LARGE");
    expect(await authz("x-forwarded")).toBe("200");
    expect(await authz("x-original")).toMatch(/^4\d\d forwarded-missing$/);
    expect((await readyz(zt)).body.config_restart_required).toEqual([]);
  }, 120_000);
});

describe("zt up reloads zt.yaml on SIGHUP (listener certificate from zt's CA)", () => {
  it("re-issues the PEP's certificate to name a host added by the reload", async () => {
    const dir = tempDir();
    const tlsBlock = "tls: { from_ca: true, client_certs: off }\n";
    const config = writeConfig(dir, yaml([["app", "app.localhost", 9]], tlsBlock), {
      "main.cedar": POLICY,
    });
    const env = { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" };
    expect((await runZt(["--config", config, "init"], { env })).code).toBe(0);
    const bundle = await runZt(["--config", config, "ca", "bundle"], { env });
    expect(bundle.code, bundle.stderr).toBe(0);
    const zt = await startZtUp(["--config", config, "up"], { env });
    running.push(zt);
    const port = Number(new URL(zt.pepUrl).port);
    /** The TLS handshake for this name, verified against zt's CA: "ok" or the error code. */
    const handshake = (servername: string) =>
      new Promise<string>((resolve) => {
        const s = tls.connect({ host: "127.0.0.1", port, servername, ca: bundle.stdout }, () => {
          s.end();
          resolve("ok");
        });
        s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
    expect(await handshake("app.localhost")).toBe("ok");
    expect(await handshake("new.localhost")).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
    writeFileSync(
      config,
      yaml(
        [
          ["app", "app.localhost", 9],
          ["new", "new.localhost", 9],
        ],
        tlsBlock,
      ),
    );
    zt.child.kill("SIGHUP");
    await waitFor(() => /zt: config reloaded \(routes added: new\)/.test(zt.output()), "reload");
    // Applied together with the route: the first handshake after the reload verifies.
    expect(await handshake("new.localhost")).toBe("ok");
    expect(await handshake("app.localhost")).toBe("ok");
  }, 120_000);
});

describe("zt up reloads zt.yaml on SIGHUP (listen.proxy_workers: 2)", () => {
  it("applies the reload in every worker, and a worker started after it runs the reloaded routes", async () => {
    const up = await namedUpstream("w");
    upstreams.push(up);
    const dir = tempDir();
    const config = writeConfig(dir, yaml([["app", "app.localhost", up.port]]), {
      "main.cedar": POLICY,
    });
    // A fixed port: once no worker holds it, port 0 would be a new one.
    const free = await freePort();
    const env = {
      ZT_LISTEN__PROXY: `127.0.0.1:${free}`,
      ZT_LISTEN__API: "127.0.0.1:0",
      ZT_LISTEN__PROXY_WORKERS: "2",
    };
    const { zt, port, cookie } = await startWithUser(config, env);
    running.push(zt);
    const everyWorkerOn = async (what: string) => {
      const r = await until(
        what,
        () => readyz(zt),
        (x) =>
          x.status === 200 &&
          (x.body.proxy_worker_status ?? []).length === 2 &&
          x.body.proxy_worker_status!.every(
            (w) => w.state === "listening" && w.config_version === x.body.config_version,
          ),
      );
      return r.body.config_version;
    };
    const before = await everyWorkerOn("both workers listening");
    expect((await request(port, { host: "new.localhost", headers: { cookie } })).status).toBe(404);

    writeFileSync(
      config,
      yaml([
        ["app", "app.localhost", up.port],
        ["new", "new.localhost", up.port],
      ]),
    );
    zt.child.kill("SIGHUP");
    await waitFor(() => /zt: config reloaded \(routes added: new\)/.test(zt.output()), "reload");
    const after = await everyWorkerOn("both workers on the reloaded config");
    expect(after).not.toBe(before);
    for (const w of [1, 2])
      expect(zt.output()).toMatch(
        new RegExp(`zt\\[w${w}\\]: config reloaded \\(routes added: new\\)`),
      );
    // Fresh connections, spread over both workers: every one has the route.
    for (let i = 0; i < 20; i++) {
      const r = await request(port, { host: "new.localhost", path: `/n${i}`, headers: { cookie } });
      expect(`${r.status} ${r.body}`).toBe(`200 w /n${i}`);
    }

    // A worker started after the reload (a crash, replaced) runs the reloaded config.
    const pids = workerPids(zt.child.pid!);
    for (const pid of pids) process.kill(pid, "SIGKILL");
    await waitFor(() => {
      const now = workerPids(zt.child.pid!);
      return now.length === 2 && pids.every((p) => !now.includes(p));
    }, "the replacement workers");
    expect(await everyWorkerOn("both replacements on the reloaded config")).toBe(after);
    for (let i = 0; i < 10; i++) {
      const r = await request(port, { host: "new.localhost", path: `/r${i}`, headers: { cookie } });
      expect(`${r.status} ${r.body}`).toBe(`200 w /r${i}`);
    }
  }, 120_000);
});
