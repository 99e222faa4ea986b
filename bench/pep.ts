/**
 * `npm run bench:pep`: what zt's PEP costs, against baselines measured in the same run.
 *
 *   (a) upstream direct
 *   (b) nginx proxy_pass → upstream
 *   (c) zt proxy (session cookie, Cedar decision, assertion, audit) → upstream
 *   (d) nginx auth_request → zt /.zt/authz, then nginx → upstream
 *   (e) zt /.zt/authz alone (decisions/s on one core: zt is one Node process)
 *   (i) HAProxy alone, and HAProxy asking zt as its SPOE agent (forward-auth without Lua)
 *   (n) a bare Node proxy: node:http in front of zt's upstream client and nothing else (no
 *       session, decision, assertion or audit), in its own process — the ceiling any
 *       proxy on Node's HTTP server reaches here, to read (c)/(b) against
 *   (u) the upstream leg alone: zt's keep-alive pool against undici's (the client it replaced)
 *
 * Load generator: wrk (Debian package `wrk`), else autocannon. The upstream runs in its
 * own process; nginx with one worker. Not a test: nothing here asserts a time.
 *
 * Options (env): BENCH_DURATION=10 (seconds per run), BENCH_CONNECTIONS=32,
 * BENCH_ROUNDS=3 (every case runs once per round, the rounds interleaved: a ratio is
 * taken between runs minutes apart at most, and the median of the rounds is reported —
 * this machine's speed drifts by up to 1.6× over minutes), BENCH_ONLY=a,c,… (cases).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig } from "../src/config/index.js";
import { openAppContext } from "../src/app/index.js";
import { createServices } from "../src/app/services.js";
import { canonicalizeRequest, createPep } from "../src/proxy/index.js";
import { readOriginalRequest } from "../src/proxy/forwarded-headers.js";
import { UpstreamPool } from "../src/proxy/upstream-pool.js";
import { writeHaproxySpoe } from "./front-proxies.js";
import { Pool as UndiciPool } from "undici";

const DURATION = Number(process.env["BENCH_DURATION"] ?? 10);
const CONNECTIONS = Number(process.env["BENCH_CONNECTIONS"] ?? 32);
const ROUNDS = Math.max(1, Number(process.env["BENCH_ROUNDS"] ?? 3));
/** PEP worker processes for the every-core runs (g): default one per CPU. */
const WORKERS = Number(process.env["BENCH_WORKERS"] ?? Math.max(2, cpus().length));
const HOST = "app.localhost";

interface Result {
  name: string;
  rps: number;
  p50ms: number;
  p99ms: number;
  non2xx: number;
  requests: number;
  /** CPU time of the zt process per request (µs), when zt served the run. */
  ztCpuUs?: number;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

const UPSTREAM_JS = `
const http = require("node:http");
const body = Buffer.from('{"ok":true}');
http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { "content-type": "application/json", "content-length": body.length });
  res.end(body);
}).listen(Number(process.argv[2]), "127.0.0.1", () => process.stdout.write("ready\\n"));
`;

/**
 * (n): node:http + zt's own upstream client, one process, nothing else. Argument: the
 * listen port, the upstream port, the compiled upstream-pool module's URL.
 */
const BARE_PROXY_JS = `
import http from "node:http";
const { UpstreamPool } = await import(process.argv[4]);
const pool = new UpstreamPool({ host: "127.0.0.1", port: Number(process.argv[3]), timeoutMs: 30000 });
http.createServer((req, res) => {
  const head = req.method + " " + req.url + " HTTP/1.1\\r\\nhost: " + req.headers.host +
    "\\r\\nx-forwarded-for: " + req.socket.remoteAddress + "\\r\\n\\r\\n";
  pool.request({ method: req.method, head }, {
    onHead(h) { res.writeHead(h.status, h.headers); },
    onData(c) { res.write(c); return true; },
    onEnd() { res.end(); },
    onError() { res.destroy(); },
  });
}).listen(Number(process.argv[2]), "127.0.0.1");
`;

function fetchStatus(
  port: number,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path, headers: { host: HOST, ...headers }, agent: false },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function toMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
}

function hasWrk(): boolean {
  return spawnSync("wrk", ["--version"]).error === undefined;
}

async function load(
  name: string,
  port: number,
  path: string,
  headers: Record<string, string>,
  connections = CONNECTIONS,
): Promise<Result> {
  if (hasWrk()) {
    const args = ["-t1", `-c${connections}`, `-d${DURATION}s`, "--latency"];
    // "Host" capitalised: wrk adds its own Host header unless this one matches exactly.
    for (const [k, v] of Object.entries({ Host: HOST, ...headers })) args.push("-H", `${k}: ${v}`);
    args.push(`http://127.0.0.1:${port}${path}`);
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn("wrk", args);
      let text = "";
      c.stdout.on("data", (d: Buffer) => (text += d.toString()));
      c.stderr.on("data", (d: Buffer) => (text += d.toString()));
      c.on("error", reject);
      c.on("close", () => resolve(text));
    });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
    const p50 = toMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? "");
    const p99 = toMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? "");
    const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
    return { name, rps, p50ms: p50, p99ms: p99, non2xx, requests };
  }
  // @ts-expect-error -- autocannon ships no types; the shape used is declared here
  const { default: autocannon } = (await import("autocannon")) as unknown as {
    default: (o: Record<string, unknown>) => Promise<{
      requests: { average: number; total: number };
      latency: { p50: number; p99: number };
      non2xx: number;
    }>;
  };
  const r = await autocannon({
    url: `http://127.0.0.1:${port}${path}`,
    connections,
    duration: DURATION,
    headers: { host: HOST, ...headers },
  });
  return {
    name,
    rps: r.requests.average,
    p50ms: r.latency.p50,
    p99ms: r.latency.p99,
    non2xx: r.non2xx,
    requests: r.requests.total,
  };
}

function nginxConf(
  dir: string,
  p: { proxy: number; authreq: number; upstream: number; zt: number },
  runAsRoot: boolean,
  workers = 1,
): string {
  return `
${runAsRoot ? "user nobody nogroup;" : ""}
worker_processes ${workers};
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi; uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  upstream app { server 127.0.0.1:${p.upstream}; keepalive 64; }
  upstream zt  { server 127.0.0.1:${p.zt}; keepalive 64; }
  server {
    listen 127.0.0.1:${p.proxy};
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:${p.authreq};
    location = /.zt/authz {
      internal;
      proxy_pass http://zt; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-URL $scheme://$host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-Uri ""; proxy_set_header X-Forwarded-Method "";
      proxy_set_header X-Forwarded-Host "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }
    location / {
      auth_request /.zt/authz;
      auth_request_set $zt_assertion $upstream_http_x_zt_assertion;
      auth_request_set $zt_user $upstream_http_x_zt_user;
      proxy_set_header X-Zt-Assertion $zt_assertion;
      proxy_set_header X-Zt-User $zt_user;
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
}`;
}

/** HAProxy alone in front of the upstream (the baseline for the SPOE case). */
function haproxyConf(p: { listen: number; upstream: number }): string {
  return `
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend app
    bind 127.0.0.1:${p.listen}
    default_backend app
backend app
    server app 127.0.0.1:${p.upstream}
`;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "zt-bench-pep-"));
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, "tmp"));
  mkdirSync(join(dir, "policies"));
  const children: ChildProcess[] = [];
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  };
  process.on("exit", cleanup);
  try {
    const upstreamPort = await freePort();
    writeFileSync(join(dir, "upstream.cjs"), UPSTREAM_JS);
    const up = spawn(process.execPath, [join(dir, "upstream.cjs"), String(upstreamPort)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(up);
    await waitForPort(upstreamPort);

    writeFileSync(
      join(dir, "policies", "main.cedar"),
      `@id("eng-app")\n@reason("eng-may-use-app")\npermit (principal in Group::"eng", action == Action::"GET", resource == App::"app")\nwhen { context.mfa_age_seconds < 3600 };\n`,
    );
    const config = validateConfig(
      {
        data_dir: join(dir, "data"),
        trust_domain: "bench.test",
        policies: join(dir, "policies"),
        routes: [{ name: "app", from: `http://${HOST}`, to: `http://127.0.0.1:${upstreamPort}` }],
        limits: { max_connections_per_source: 100_000 },
      },
      join(dir, "zt.yaml"),
    );
    const ctx = await openAppContext(config, { create: true });
    const services = await createServices(ctx);
    const pep = createPep(services);
    const ztPort = (await pep.listen("127.0.0.1", 0)).port;
    const user = await services.identity.addUser({
      name: "alice",
      groups: ["eng"],
      password: "bench-password-correct-horse",
    });
    await services.snapshot.refreshUser(user.user.id);
    const { token } = await services.sessions.create({
      userId: user.user.id,
      sourceIp: "127.0.0.1",
      userAgent: "bench",
    });
    const cookie = `${config.session.cookie_name}=${token}`;

    let nginx: ChildProcess | undefined;
    const nginxBin = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p));
    const ports = {
      proxy: await freePort(),
      authreq: await freePort(),
      upstream: upstreamPort,
      zt: ztPort,
    };
    const startNginx = async (
      name: string,
      p: { proxy: number; authreq: number; upstream: number; zt: number },
      workers: number,
    ): Promise<ChildProcess> => {
      const conf = join(dir, `${name}.conf`);
      writeFileSync(conf, nginxConf(dir, p, process.getuid?.() === 0, workers));
      const child = spawn(
        nginxBin!,
        [
          "-p",
          dir,
          "-c",
          conf,
          "-e",
          "stderr",
          "-g",
          `daemon off; pid ${dir}/${name}.pid; error_log stderr;`,
        ],
        { stdio: ["ignore", "inherit", "inherit"] },
      );
      children.push(child);
      await waitForPort(p.proxy);
      await waitForPort(p.authreq);
      return child;
    };
    if (nginxBin) nginx = await startNginx("nginx", ports, 1);
    else process.stderr.write("nginx not found: skipping (b) and (d)\n");

    /** Every run of every case, by name, in round order. */
    const runs = new Map<string, Result[]>();
    const warmed = new Set<string>();
    const only = process.env["BENCH_ONLY"];
    const run = async (
      name: string,
      port: number,
      path: string,
      headers: Record<string, string> = {},
      connections = CONNECTIONS,
    ) => {
      if (only && !only.split(",").some((o) => name.startsWith(`(${o}`))) return;
      const probe = await fetchStatus(port, path, headers);
      if (probe.status < 200 || probe.status > 299)
        throw new Error(`${name}: probe answered ${probe.status}: ${probe.body.slice(0, 300)}`);
      if (!warmed.has(name)) {
        warmed.add(name);
        await load(`${name} (warm-up)`, port, path, headers, connections).catch(() => undefined);
      }
      const cpu0 = process.cpuUsage();
      const r = await load(name, port, path, headers, connections);
      const cpu = process.cpuUsage(cpu0);
      if (port === ztPort || port === ports.authreq || (port !== 0 && port === haPorts.spoe))
        r.ztCpuUs = (cpu.user + cpu.system) / r.requests;
      if (!runs.has(name)) runs.set(name, []);
      runs.get(name)!.push(r);
      process.stdout.write(
        `${r.name.padEnd(36)} ${r.rps.toFixed(0).padStart(8)} req/s  p50 ${r.p50ms.toFixed(2)} ms  p99 ${r.p99ms.toFixed(2)} ms  non-2xx ${r.non2xx}${r.ztCpuUs !== undefined ? `  zt CPU ${r.ztCpuUs.toFixed(0)} us/req` : ""}\n`,
      );
    };
    process.stdout.write(
      `bench:pep  ${DURATION}s per run, ${CONNECTIONS} connections, ${hasWrk() ? "wrk -t1" : "autocannon"}\n`,
    );
    // HAProxy (its default: a thread per CPU; with one thread it idles here), alone and
    // with zt as its SPOE agent (forward-auth, no Lua).
    const haproxyBin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => existsSync(p));
    const haPorts = { plain: 0, spoe: 0 };
    if (haproxyBin && (!only || only.includes("i"))) {
      const spoa = (await pep.listenSpoa("127.0.0.1", 0)).port;
      for (const name of ["plain", "spoe"] as const) {
        const listen = await freePort();
        const haDir = join(dir, `haproxy-${name}`);
        mkdirSync(haDir);
        // The SPOE case runs what `zt forward-auth config haproxy` writes, as the tests do.
        const cfg =
          name === "spoe"
            ? writeHaproxySpoe(haDir, {
                routes: config.routes,
                listen,
                zt: ztPort,
                spoa,
              })
            : join(haDir, "haproxy.cfg");
        if (name === "plain") writeFileSync(cfg, haproxyConf({ listen, upstream: upstreamPort }));
        const child = spawn(haproxyBin, ["-db", "-f", cfg], {
          stdio: ["ignore", "ignore", "inherit"],
        });
        children.push(child);
        await waitForPort(listen);
        haPorts[name] = listen;
      }
    }
    let barePort = 0;
    if (!only || only.includes("n")) {
      barePort = await freePort();
      writeFileSync(join(dir, "bare-proxy.mjs"), BARE_PROXY_JS);
      const bare = spawn(
        process.execPath,
        [
          join(dir, "bare-proxy.mjs"),
          String(barePort),
          String(upstreamPort),
          new URL("../src/proxy/upstream-pool.js", import.meta.url).href,
        ],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      children.push(bare);
      await waitForPort(barePort);
    }
    for (let round = 1; round <= ROUNDS; round++) {
      if (ROUNDS > 1) process.stdout.write(`round ${round} of ${ROUNDS}\n`);
      await run("(a) upstream direct", upstreamPort, "/");
      if (nginx) await run("(b) nginx proxy_pass", ports.proxy, "/");
      await run("(c) zt proxy", ztPort, "/", { cookie });
      if (barePort)
        await run("(n) bare Node proxy (node:http + zt's upstream client only)", barePort, "/");
      if (nginx) await run("(d) nginx auth_request + zt", ports.authreq, "/", { cookie });
      await run("(e) zt /.zt/authz alone", ztPort, "/.zt/authz", {
        cookie,
        "x-original-url": `http://${HOST}/`,
        "x-original-method": "GET",
      });
      if (haPorts.plain) await run("(i1) HAProxy alone", haPorts.plain, "/");
      if (haPorts.spoe) await run("(i2) HAProxy + zt SPOE agent", haPorts.spoe, "/", { cookie });
    }

    // Every core: zt with listen.proxy_workers = WORKERS worker processes (a real `zt up`
    // on the same store), against nginx with as many workers: like for like.
    if (!only || only.includes("g")) {
      const apiPort = await freePort();
      const proxyPort = await freePort();
      writeFileSync(
        join(dir, "zt-workers.yaml"),
        JSON.stringify({
          data_dir: join(dir, "data"),
          trust_domain: "bench.test",
          policies: join(dir, "policies"),
          listen: {
            proxy: `127.0.0.1:${proxyPort}`,
            api: `127.0.0.1:${apiPort}`,
            proxy_workers: WORKERS,
          },
          routes: [{ name: "app", from: `http://${HOST}`, to: `http://127.0.0.1:${upstreamPort}` }],
          limits: { max_connections_per_source: 100_000 },
        }),
      );
      const up = spawn(
        process.execPath,
        [join(process.cwd(), "bin", "zt"), "--config", join(dir, "zt-workers.yaml"), "up"],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      children.push(up);
      await waitForPort(proxyPort);
      await new Promise((r) => setTimeout(r, 1_000)); // every worker listening
      const p2port = { proxy: 0 };
      if (nginxBin) {
        const p2 = {
          proxy: await freePort(),
          authreq: await freePort(),
          upstream: upstreamPort,
          zt: proxyPort,
        };
        p2port.proxy = p2.proxy;
        await startNginx("nginx-workers", p2, WORKERS);
      }
      for (let round = 1; round <= ROUNDS; round++) {
        if (nginxBin) await run(`(g1) nginx proxy_pass, ${WORKERS} workers`, p2port.proxy, "/");
        await run(`(g2) zt proxy, ${WORKERS} worker processes`, proxyPort, "/", { cookie });
      }
      up.kill("SIGTERM");
    }

    // Added latency without queueing: one connection, one request at a time.
    if (!only || only.includes("h")) {
      for (let round = 1; round <= ROUNDS; round++) {
        await run("(h1) upstream direct, 1 connection", upstreamPort, "/", {}, 1);
        await run("(h2) zt proxy, 1 connection", ztPort, "/", { cookie }, 1);
      }
    }

    const median = (xs: number[]) => {
      const v = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
      if (v.length === 0) return NaN;
      const m = Math.floor(v.length / 2);
      return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
    };
    // (u) the upstream leg alone: zt's keep-alive pool against undici's Pool (the client it
    // replaced) on the same upstream, closed loop, 32 requests in flight, interleaved rounds.
    let upstreamLeg: { zt: number; undici: number } | undefined;
    if (!only || only.includes("u")) {
      const head =
        `GET / HTTP/1.1\r\nhost: ${HOST}\r\nx-zt-assertion: ${"a".repeat(600)}\r\n` +
        `x-forwarded-for: 127.0.0.1\r\nuser-agent: wrk\r\n\r\n`;
      const N = 50_000;
      const closedLoop = (start: (done: () => void) => void) =>
        new Promise<number>((resolve) => {
          let started = 0;
          let finished = 0;
          const cpu0 = process.cpuUsage();
          const next = () => {
            if (started >= N) return;
            started++;
            start(() => {
              if (++finished === N) {
                const cpu = process.cpuUsage(cpu0);
                resolve((cpu.user + cpu.system) / N);
              } else next();
            });
          };
          for (let i = 0; i < CONNECTIONS; i++) next();
        });
      const ztLeg = async () => {
        const pool = new UpstreamPool({ host: "127.0.0.1", port: upstreamPort, timeoutMs: 30_000 });
        const us = await closedLoop((done) =>
          pool.request(
            { method: "GET", head },
            {
              onHead() {},
              onData: () => true,
              onEnd: done,
              onError: (e) => {
                throw e;
              },
            },
          ),
        );
        pool.destroy();
        return us;
      };
      const undiciLeg = async () => {
        const pool = new UndiciPool(`http://127.0.0.1:${upstreamPort}`, {
          connections: 1024,
          pipelining: 1,
        });
        const headers = {
          host: HOST,
          "x-zt-assertion": "a".repeat(600),
          "x-forwarded-for": "127.0.0.1",
          "user-agent": "wrk",
        };
        const us = await closedLoop((done) => {
          pool.dispatch(
            { path: "/", method: "GET", headers },
            {
              onRequestStart() {},
              onResponseStart() {},
              onResponseData() {},
              onResponseEnd: done,
              onResponseError: (_c, e) => {
                throw e;
              },
            },
          );
        });
        await pool.close();
        return us;
      };
      await ztLeg();
      await undiciLeg();
      const zt: number[] = [];
      const und: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        und.push(await undiciLeg());
        zt.push(await ztLeg());
      }
      upstreamLeg = { zt: median(zt), undici: median(und) };
      process.stdout.write(
        `(u) upstream leg, CPU per request: zt pool ${upstreamLeg.zt.toFixed(1)} µs, undici ${upstreamLeg.undici.toFixed(1)} µs (rounds: zt ${zt.map((x) => x.toFixed(0)).join(", ")}; undici ${und.map((x) => x.toFixed(0)).join(", ")})\n`,
      );
    }

    // (f) the decision pipeline without HTTP or the kernel: what zt itself adds per
    // request (canonicalise, session check, Cedar decision + audit record, assertion).
    let pipelineUs: number | undefined;
    if (!only || only.includes("f")) {
      const route = config.routes[0]!;
      const snapshotUser = services.snapshot.user(user.user.id)!;
      const once = async () => {
        const o = readOriginalRequest({
          "x-original-url": [`http://${HOST}/a/b?x=1`],
          "x-original-method": ["GET"],
        });
        if (!o.ok) throw new Error("pipeline: original request refused");
        const c = canonicalizeRequest("/a/./b?x=1", HOST);
        if (!c.ok) throw new Error("pipeline: canonicalisation refused");
        const check = await services.sessions.check(token);
        if (!check.ok) throw new Error("pipeline: session refused");
        const d = services.decisions.decide({
          principal: { type: "User", id: snapshotUser.name },
          subject: snapshotUser.name,
          action: "GET",
          route: route.name,
          sourceIp: "127.0.0.1",
          host: c.host,
          path: c.path,
          method: "GET",
          mfaAgeSeconds: 10,
          authenticatedBy: "session",
          sessionId: check.session.id,
          pep: "bench",
        });
        if (d.result.verdict !== "allow") throw new Error(`pipeline: ${d.result.reason}`);
        await services.assertions.sign({
          sub: snapshotUser.name,
          name: snapshotUser.name,
          groups: snapshotUser.groups,
          aud: route.name,
          decisionId: d.decisionId,
          sessionId: check.session.id,
        });
      };
      for (let i = 0; i < 2_000; i++) await once();
      await ctx.audit.flush();
      const n = 20_000;
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) await once();
      await ctx.audit.flush();
      const wall = Number(process.hrtime.bigint() - t0) / 1000 / n;
      const cpu = process.cpuUsage(cpu0);
      pipelineUs = (cpu.user + cpu.system) / n;
      process.stdout.write(
        `(f) decision pipeline in process        ${pipelineUs.toFixed(1)} µs CPU/request (${wall.toFixed(1)} µs wall), audit writes included\n`,
      );
    }

    const seriesOf = (prefix: string) =>
      [...runs.entries()].find(([name]) => name.startsWith(prefix))?.[1];
    /** A case's median over the rounds, field by field. */
    const get = (prefix: string): Result | undefined => {
      const rs = seriesOf(prefix);
      if (!rs) return undefined;
      const cpu = rs.map((r) => r.ztCpuUs ?? NaN);
      return {
        name: rs[0]!.name,
        rps: median(rs.map((r) => r.rps)),
        p50ms: median(rs.map((r) => r.p50ms)),
        p99ms: median(rs.map((r) => r.p99ms)),
        non2xx: rs.reduce((n, r) => n + r.non2xx, 0),
        requests: rs.reduce((n, r) => n + r.requests, 0),
        ...(cpu.some((x) => Number.isFinite(x)) ? { ztCpuUs: median(cpu) } : {}),
      };
    };
    /** The median over the rounds of a ratio taken within each round (runs a minute apart at most). */
    const ratio = (num: string, den: string, f: (n: Result, d: Result) => number) => {
      const n = seriesOf(num) ?? [];
      const d = seriesOf(den) ?? [];
      return median(n.slice(0, d.length).map((r, i) => f(r, d[i]!)));
    };
    const spread = (prefix: string) => {
      const v = (seriesOf(prefix) ?? []).map((r) => r.rps);
      return v.length > 1 ? ` (rounds: ${v.map((x) => x.toFixed(0)).join(", ")})` : "";
    };
    const results = [...runs.keys()].map((name) => get(name)!);
    const a = get("(a)");
    const b = get("(b)");
    const c = get("(c)");
    const d = get("(d)");
    const e = get("(e)");
    const lines: string[] = [];
    if (!a || !c || !e) {
      process.stdout.write("(partial run: no ratios)\n");
      await pep.close();
      services.close();
      await ctx.close();
      return;
    }
    const g1 = get("(g1)");
    const g2 = get("(g2)");
    const h1 = get("(h1)");
    const h2 = get("(h2)");
    if (b)
      lines.push(
        `zt proxy / nginx proxy_pass throughput, one process each: ${ratio("(c)", "(b)", (x, y) => x.rps / y.rps).toFixed(2)}x (target >= 0.5x)`,
      );
    if (b && get("(n)"))
      lines.push(
        `bare Node proxy (node:http + zt's upstream client, no session, decision, assertion or audit) / nginx proxy_pass: ${ratio("(n)", "(b)", (x, y) => x.rps / y.rps).toFixed(2)}x — the ceiling of a proxy on Node's HTTP server here; zt proxy / bare Node proxy: ${ratio("(c)", "(n)", (x, y) => x.rps / y.rps).toFixed(2)}x`,
      );
    if (g1 && g2)
      lines.push(
        `zt proxy / nginx proxy_pass throughput, ${WORKERS} workers each: ${ratio("(g2)", "(g1)", (x, y) => x.rps / y.rps).toFixed(2)}x (target >= 0.5x)`,
      );
    if (h1 && h2)
      lines.push(
        `zt proxy p50 added over direct, 1 connection (no queueing): ${ratio("(h2)", "(h1)", (x, y) => x.p50ms - y.p50ms).toFixed(3)} ms (target <= 0.5 ms)`,
      );
    lines.push(
      `zt proxy p50 added over direct at ${CONNECTIONS} connections (includes queueing at saturation): ${ratio("(c)", "(a)", (x, y) => x.p50ms - y.p50ms).toFixed(3)} ms`,
    );
    if (d && b)
      lines.push(
        `nginx+auth_request / nginx proxy_pass throughput: ${ratio("(d)", "(b)", (x, y) => x.rps / y.rps).toFixed(2)}x`,
      );
    if (get("(i1)") && get("(i2)"))
      lines.push(
        `HAProxy + zt SPOE agent / HAProxy alone throughput: ${ratio("(i2)", "(i1)", (x, y) => x.rps / y.rps).toFixed(2)}x; req/s${spread("(i2)")} (forward-auth without Lua; nginx auth_request: ${d ? d.rps.toFixed(0) : "-"} req/s)`,
      );
    lines.push(
      `forward-auth decisions/s (one zt process): ${e.rps.toFixed(0)}${spread("(e)")} (target >= 15000)`,
    );
    if (b) lines.push(`zt proxy req/s${spread("(c)")}; nginx proxy_pass req/s${spread("(b)")}`);
    if (e.ztCpuUs) {
      lines.push(
        `forward-auth capacity of one core from its CPU cost: ${(1e6 / e.ztCpuUs).toFixed(0)} decisions/s (${e.ztCpuUs.toFixed(0)} µs each)`,
      );
    }
    for (const l of lines) process.stdout.write(l + "\n");

    await ctx.audit.flush();
    const decisions = await ctx.store.db
      .selectFrom("audit_events")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("kind", "=", "decision")
      .executeTakeFirst();
    process.stdout.write(`audit: ${decisions?.n ?? 0} decision records written\n`);

    const cpu = cpus()[0]?.model ?? "unknown";
    const md = [
      "# bench:pep results",
      "",
      `Date: ${new Date().toISOString()}  `,
      `Machine: ${cpus().length} CPUs (nproc), ${cpu}, Node ${process.version}, nginx ${nginxBin ? spawnSync(nginxBin, ["-v"]).stderr.toString().trim().replace("nginx version: ", "") : "absent"}  `,
      `Load: ${hasWrk() ? "wrk -t1" : "autocannon"}, ${CONNECTIONS} connections, ${DURATION}s per run (after a warm-up run), ${ROUNDS} interleaved round(s), all on loopback on the same machine. Figures are medians over the rounds; ratios are the median of the ratios taken within each round.`,
      "",
      `Load average at the end: ${loadavg()
        .map((l) => l.toFixed(1))
        .join(
          " ",
        )} (other work on the machine skews absolute numbers; zt CPU µs/request is the steadiest figure).`,
      "",
      "| run | req/s | p50 ms | p99 ms | non-2xx | zt CPU µs/req |",
      "|---|---:|---:|---:|---:|---:|",
      ...results.map(
        (r) =>
          `| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50ms.toFixed(2)} | ${r.p99ms.toFixed(2)} | ${r.non2xx} | ${r.ztCpuUs !== undefined ? r.ztCpuUs.toFixed(0) : "-"} |`,
      ),
      "",
      ...lines.map((l) => `- ${l}`),
      ...(upstreamLeg !== undefined
        ? [
            `- (u) upstream leg alone (closed loop, ${CONNECTIONS} in flight, upstream process's CPU not counted): zt's pool ${upstreamLeg.zt.toFixed(1)} µs of CPU per request, undici's Pool ${upstreamLeg.undici.toFixed(1)} µs: ${(upstreamLeg.undici / upstreamLeg.zt).toFixed(2)}× less with zt's`,
          ]
        : []),
      ...(pipelineUs !== undefined
        ? [
            `- (f) decision pipeline in process (canonicalise, session, Cedar decision + audit record, assertion; no HTTP): ${pipelineUs.toFixed(1)} µs CPU per request → ${(1e6 / pipelineUs).toFixed(0)} decisions/s per core before HTTP costs`,
          ]
        : []),
      "",
    ].join("\n");
    writeFileSync(join(process.cwd(), "bench", "pep.results.md"), md);
    process.stdout.write(`wrote bench/pep.results.md\n`);
    await pep.close();
    services.close();
    await ctx.close();
  } finally {
    cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:pep failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
