/**
 * The front proxies' configurations as `zt forward-auth config` writes them
 * (src/proxy/front-proxy-config.ts), made runnable on loopback for the tests and
 * bench:pep: the generated part is used as is, wrapped only in what an operator's own
 * main file already has (nginx's http block, Caddy's global options, HAProxy's global
 * and defaults). So the tests run what operators get, not a second copy of it.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  frontProxyConfig,
  type FrontProxyKind,
  type FrontProxyOptions,
  type FrontRoute,
} from "../src/proxy/front-proxy-config.js";

export interface LoopbackFront {
  /** zt's routes (a resolved config's `routes`). */
  routes: readonly FrontRoute[];
  /** The port the front proxy listens on (127.0.0.1), for every route. */
  listen: number;
  /** zt's PEP listener port on 127.0.0.1. */
  zt: number;
  /** zt's SPOE agent port on 127.0.0.1 (haproxy). */
  spoa?: number;
  cookieName?: string;
}

/** The generated configuration of `kind` for these routes, served on 127.0.0.1:listen. */
export function generated(
  kind: FrontProxyKind,
  o: LoopbackFront,
  extra: Partial<FrontProxyOptions> = {},
): string {
  return frontProxyConfig(kind, {
    routes: o.routes.map((r) => ({ ...r, port: o.listen })),
    zt: `127.0.0.1:${o.zt}`,
    ...(o.spoa ? { spoa: `127.0.0.1:${o.spoa}` } : {}),
    cookieName: o.cookieName ?? "zt_session",
    bind: "127.0.0.1",
    ...extra,
  });
}

/** A whole nginx.conf around an http-context part (nginx runs with `-p dir`). */
export function nginxMain(o: {
  dir: string;
  runAsRoot: boolean;
  http: string;
  workers?: number;
}): string {
  return `
${o.runAsRoot ? "user nobody nogroup;" : ""}
worker_processes ${o.workers ?? 1};
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${o.dir}/tmp/body;
  proxy_temp_path ${o.dir}/tmp/proxy;
  fastcgi_temp_path ${o.dir}/tmp/fastcgi;
  uwsgi_temp_path ${o.dir}/tmp/uwsgi;
  scgi_temp_path ${o.dir}/tmp/scgi;
${o.http}
}
`;
}

/** A whole Caddyfile around site blocks: no admin endpoint, no automatic HTTPS. */
export function caddyMain(sites: string): string {
  return `{
  admin off
  auto_https off
}

${sites}`;
}

/** A whole haproxy.cfg around frontends and backends (and any global sections of their own). */
export function haproxyMain(body: string): string {
  return `global
    log stderr format raw local0 warning

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

${body}`;
}

/**
 * HAProxy with zt as its SPOE agent: writes `dir/zt-spoe.conf` and `dir/haproxy.cfg`
 * (both generated) and returns the haproxy.cfg path.
 */
export function writeHaproxySpoe(dir: string, o: LoopbackFront): string {
  const spoeFile = join(dir, "zt-spoe.conf");
  writeFileSync(spoeFile, generated("haproxy-spoe", o));
  const cfg = join(dir, "haproxy.cfg");
  writeFileSync(cfg, haproxyMain(generated("haproxy", o, { spoeFile })));
  return cfg;
}
