/**
 * `zt forward-auth config KIND`: the configuration a front proxy needs to ask zt about
 * every request (forward-auth), written for this deployment's routes, zt's address and
 * session cookie name. One source for the CLI, docs/forward-auth.md (a test keeps the
 * documented blocks equal to this output) and the tests, which run the output in the
 * real nginx, Caddy and HAProxy.
 *
 * Pure: text in, text out. Anything it cannot express faithfully is refused with a
 * ZT_USAGE error naming the route or setting, never written half-right.
 */
import { ZtError } from "../core/errors.js";
import { JSON_SECURITY_HEADERS, PAGE_SECURITY_HEADERS } from "../web/index.js";

export const FRONT_PROXY_KINDS = [
  "nginx",
  "caddy",
  "traefik",
  "haproxy",
  "haproxy-spoe",
  "haproxy-lua",
] as const;
export type FrontProxyKind = (typeof FRONT_PROXY_KINDS)[number];

/** What each kind prints, for `--help` and errors. */
export const FRONT_PROXY_DESCRIPTIONS: Record<FrontProxyKind, string> = {
  nginx: "nginx auth_request: an http-context file (e.g. /etc/nginx/conf.d/zt.conf)",
  caddy: "Caddy forward_auth: site blocks for the Caddyfile",
  traefik: "Traefik forwardAuth: a dynamic-configuration file (not run in zt's tests)",
  haproxy: "HAProxy with zt as SPOE agent (no Lua): frontends and backends for haproxy.cfg",
  "haproxy-spoe": "HAProxy: the SPOE engine file the haproxy output names (zt-spoe.conf)",
  "haproxy-lua": "HAProxy with zt's Lua action: global lines, frontends and backends",
};

/** A route as the front proxy serves it (the fields of a resolved zt route it needs). */
export interface FrontRoute {
  name: string;
  /** The public address: scheme, host, optional port and path prefix. */
  from: string;
  /** The app. */
  to: string;
  /** Lowercase host of `from`. */
  host: string;
  /** Port of `from` (explicit or the scheme's default). */
  port: number;
  /** Canonical path prefix of `from`: "/" or "/x" (no trailing slash). */
  pathPrefix: string;
  preserve_host: boolean;
  websockets: boolean;
  /** `upstream_mtls`: only zt's own proxy can present zt's SVID; refused here. */
  upstream_mtls?: boolean;
  /** `upstream_ca` (absolute path): the CAs that verify an https upstream. */
  upstream_ca?: string | undefined;
}

export interface FrontProxyOptions {
  routes: readonly FrontRoute[];
  /** host:port where the front proxy reaches zt's PEP listener (plain HTTP). */
  zt: string;
  /** host:port of zt's SPOE agent (`forward_auth.spoa_listen`); required for `haproxy`. */
  spoa?: string;
  /** `session.cookie_name`. */
  cookieName: string;
  /** Address the front proxy listens on; all addresses when absent. */
  bind?: string;
  /** Where the haproxy output expects the SPOE engine file. */
  spoeFile?: string;
  /** Where the haproxy-lua output expects zt-authz.lua. */
  luaFile?: string;
}

export const DEFAULT_SPOE_FILE = "/etc/haproxy/zt-spoe.conf";
export const DEFAULT_LUA_FILE = "/etc/haproxy/zt-authz.lua";
const ZT_PAGES = ["/.zt/login", "/.zt/logout", "/.zt/denied"];
const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
/** HAProxy: X-Forwarded-Proto for zt's pages, the scheme the client used. */
const HAPROXY_PROTO = "%[ssl_fc,iif(https,http)]";

function usage(message: string, details: Record<string, unknown> = {}): ZtError {
  return new ZtError("ZT_USAGE", message, details);
}

/** A site: what one server block / frontend host serves (one scheme, host and port). */
interface Site {
  scheme: "http" | "https";
  host: string;
  port: number;
  /** Its routes, longest path prefix first (the order zt matches them in). */
  routes: FrontRoute[];
}

interface Upstream {
  scheme: "http" | "https";
  /** host:port as a proxy's server line takes it ([v6] bracketed). */
  hostPort: string;
  /** Host name for SNI and verification (no brackets, no port). */
  name: string;
  /** PEM file of the CAs that verify an https upstream: the route's own, else the system's. */
  caFile: string;
  /** The route's own CA file (`upstream_ca`, https only): proxies told of it explicitly. */
  ownCa: string | undefined;
}

/** A file path every proxy's configuration language takes unquoted, as zt gives it. */
const PLAIN_FILE = /^\/[A-Za-z0-9._@+/-]+$/;

/**
 * Host names and path prefixes go into other programs' configuration languages
 * unquoted, so only what means the same in all of them is accepted: DNS names (and
 * underscores), IPv4 and bracketed IPv6 literals; path segments of unreserved characters
 * (no `%`: nginx matches locations on the decoded path, zt on the encoded one).
 */
const PLAIN_HOST =
  /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$|^\[[0-9a-f:.]+\]$/;
const PLAIN_PREFIX = /^(?:\/[A-Za-z0-9._~-]+)*$|^\/$/;

function plainHost(r: FrontRoute, host: string, key: "from" | "to"): void {
  if (!PLAIN_HOST.test(host))
    throw usage(
      `route "${r.name}": the host of ${key} (${JSON.stringify(host)}) is not a plain DNS name or IP address; the generated configurations would have to quote it differently for each proxy`,
      { route: r.name },
    );
}

function upstreamOf(r: FrontRoute): Upstream {
  const u = new URL(r.to);
  plainHost(r, u.hostname.toLowerCase(), "to");
  if ((u.pathname !== "/" && u.pathname !== "") || u.search !== "")
    throw usage(
      `route "${r.name}": to (${r.to}) has a path or query; a front proxy passes the client's path to the app unchanged, so give the app's origin only (scheme://host:port)`,
      { route: r.name },
    );
  const scheme = u.protocol === "https:" ? "https" : "http";
  if (scheme === "https" && (/^[0-9.]+$/.test(u.hostname) || u.hostname.startsWith("[")))
    throw usage(
      `route "${r.name}": to (${r.to}) is https by IP address; nginx and HAProxy verify an upstream certificate by its DNS name, so give the name its certificate carries`,
      { route: r.name },
    );
  if (r.upstream_mtls && scheme === "https")
    throw usage(
      `route "${r.name}": upstream_mtls is on; behind a front proxy the proxy, not zt, connects to the app, and zt's SVID stays with zt. Serve this route with zt's own proxy, or leave it out with --route`,
      { route: r.name },
    );
  if (r.upstream_ca !== undefined && !PLAIN_FILE.test(r.upstream_ca))
    throw usage(
      `route "${r.name}": upstream_ca (${JSON.stringify(r.upstream_ca)}) is not an absolute path of letters, digits and ._@+-/; the generated configurations would have to quote it differently for each proxy`,
      { route: r.name },
    );
  const port = u.port || (scheme === "https" ? "443" : "80");
  return {
    scheme,
    hostPort: `${u.hostname}:${port}`,
    name: u.hostname.replace(/^\[|\]$/g, ""),
    caFile: r.upstream_ca ?? CA_BUNDLE,
    ownCa: scheme === "https" ? r.upstream_ca : undefined,
  };
}

function sitesOf(routes: readonly FrontRoute[]): Site[] {
  if (routes.length === 0)
    throw usage("the config has no routes: add the apps the front proxy serves under routes:");
  const sites = new Map<string, Site>();
  for (const r of routes) {
    const scheme = new URL(r.from).protocol === "https:" ? "https" : "http";
    plainHost(r, r.host, "from");
    if (!PLAIN_PREFIX.test(r.pathPrefix))
      throw usage(
        `route "${r.name}": the path prefix ${JSON.stringify(r.pathPrefix)} holds characters other than letters, digits, ".", "_", "~" and "-"; the proxies match such paths differently (nginx on the decoded path), so no configuration is written for it`,
        { route: r.name },
      );
    if (r.port < 1 || r.port > 65535)
      throw usage(`route "${r.name}": from (${r.from}) has no usable port`, { route: r.name });
    const key = `${r.host}:${r.port}`;
    const site = sites.get(key);
    if (site && site.scheme !== scheme)
      throw usage(
        `routes "${site.routes[0]!.name}" and "${r.name}" serve ${key} over both http and https; one port takes one scheme`,
        { route: r.name },
      );
    if (site) site.routes.push(r);
    else sites.set(key, { scheme, host: r.host, port: r.port, routes: [r] });
    upstreamOf(r); // refuse a bad `to` early, whichever kind is asked for
  }
  for (const s of sites.values())
    s.routes.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length);
  return [...sites.values()];
}

const defaultPort = (s: { scheme: string; port: number }) =>
  s.port === (s.scheme === "https" ? 443 : 80);

/** host:port for a listen/bind directive: `bind` (when given) and the site's port. */
function bindAddr(o: FrontProxyOptions, port: number): string {
  if (!o.bind) return String(port);
  return o.bind.includes(":") && !o.bind.startsWith("[")
    ? `[${o.bind}]:${port}`
    : `${o.bind}:${port}`;
}

/** The comment lines every output starts with (all five languages comment with `#`). */
function header(kind: FrontProxyKind, extra: string[] = []): string {
  return [
    `# zt forward-auth: written by \`zt forward-auth config ${kind}\` from zt.yaml.`,
    ...extra.map((l) => `# ${l}`),
    "",
  ].join("\n");
}

/** A comment line's description of a route (from the parsed, checked addresses only). */
function describeRoute(r: FrontRoute, up = upstreamOf(r)): string {
  const prefix = r.pathPrefix === "/" ? "" : r.pathPrefix;
  return `route "${r.name}": ${prefix}/… → ${up.scheme}://${up.hostPort}`;
}

// ---------------------------------------------------------------------------- nginx

function nginx(o: FrontProxyOptions): string {
  const sites = sitesOf(o.routes);
  const c = o.cookieName;
  const ws = o.routes.some((r) => r.websockets);
  const out: string[] = [
    header("nginx", [
      "Include in nginx's http block (Debian: /etc/nginx/conf.d/zt.conf).",
      "Needs ngx_http_auth_request_module (in Debian's nginx package).",
    ]),
    "# The app never needs zt's session cookie (a credential): strip it. First match wins.",
    "map $http_cookie $zt_cookie_without_session {",
    "    default $http_cookie;",
    `    "~^${c}=[^;]*(?:;\\s*)?(?<rest>.*)$" "$rest";`,
    `    "~^(?<a>.*?);\\s*${c}=[^;]*(?<b>.*)$" "$a$b";`,
    "}",
    `# The port the client asked for (":8443", or "" for the default), for zt's login URL.`,
    "map $http_host $zt_port {",
    '    default "";',
    '    "~(?<p>:[0-9]+)$" $p;',
    "}",
  ];
  if (ws)
    out.push(
      "# WebSocket upgrades pass (decided like any request); other requests keep the connection.",
      "map $http_upgrade $zt_connection {",
      "    default upgrade;",
      '    "" "";',
      "}",
    );
  out.push("", `upstream zt { server ${o.zt}; keepalive 32; }`);
  for (const r of o.routes)
    out.push(`upstream zt_route_${r.name} { server ${upstreamOf(r).hostPort}; keepalive 32; }`);
  for (const s of sites) {
    out.push(
      "",
      "server {",
      `    listen ${bindAddr(o, s.port)}${s.scheme === "https" ? " ssl" : ""};`,
      `    server_name ${s.host};`,
    );
    if (s.scheme === "https")
      out.push(
        `    ssl_certificate     /etc/nginx/tls/${s.host}.crt;   # your certificate for ${s.host}`,
        `    ssl_certificate_key /etc/nginx/tls/${s.host}.key;`,
      );
    out.push(
      "",
      "    # zt's own pages (login, logout, denial page), without auth; nothing else of /.zt/",
      "    location ~ ^/\\.zt/(login|logout|denied)$ {",
      "        proxy_pass http://zt;",
      "        proxy_http_version 1.1;",
      '        proxy_set_header Connection "";',
      "        proxy_set_header Host $host$zt_port;",
      "        proxy_set_header X-Forwarded-For $remote_addr;",
      "        proxy_set_header X-Forwarded-Proto $scheme;",
      "    }",
      "",
      "    # The check itself: internal only, no body.",
      "    location = /.zt/authz {",
      "        internal;",
      "        proxy_pass http://zt;",
      "        proxy_http_version 1.1;",
      '        proxy_set_header Connection "";',
      "        proxy_pass_request_body off;",
      '        proxy_set_header Content-Length "";',
      "        proxy_set_header Host $host$zt_port;",
      "        # $host, not $http_host: the host nginx chose this server block by",
      "        proxy_set_header X-Original-URL $scheme://$host$zt_port$request_uri;",
      "        proxy_set_header X-Original-Method $request_method;",
      "        # never the client's (zt refuses both conventions together)",
      '        proxy_set_header X-Forwarded-Uri "";',
      '        proxy_set_header X-Forwarded-Method "";',
      '        proxy_set_header X-Forwarded-Host "";',
      "        proxy_set_header X-Forwarded-For $remote_addr;",
      "    }",
      "",
      "    # The redirect to sign in, never kept by a cache (it would send the next client there).",
      "    location @zt_login {",
      `        add_header Cache-Control ${JSON_SECURITY_HEADERS["cache-control"]!} always;`,
      "        return 302 $zt_login;",
      "    }",
    );
    for (const r of s.routes) {
      const up = upstreamOf(r);
      // A prefix route is a regular expression (the prefix itself or below it): nginx
      // tries those in the order written, longest prefix first, before `location /`.
      const loc =
        r.pathPrefix === "/"
          ? "location /"
          : `location ~ ^${r.pathPrefix.replace(/\./g, "\\.")}(?:/|$)`;
      out.push(
        "",
        `    # ${describeRoute(r, up)}`,
        `    ${loc} {`,
        "        auth_request /.zt/authz;",
        "        auth_request_set $zt_assertion $upstream_http_x_zt_assertion;",
        "        auth_request_set $zt_user      $upstream_http_x_zt_user;",
        "        auth_request_set $zt_groups    $upstream_http_x_zt_groups;",
        "        auth_request_set $zt_decision  $upstream_http_x_zt_decision_id;",
        "        auth_request_set $zt_login     $upstream_http_x_zt_login_url;",
        "        error_page 401 = @zt_login;                        # to zt's login",
        "        error_page 403 /.zt/denied?decision=$zt_decision;   # zt's explained 403",
        "",
        "        # always set, so a client can never smuggle its own (empty = not sent)",
        "        proxy_set_header X-Zt-Assertion   $zt_assertion;",
        "        proxy_set_header X-Zt-User        $zt_user;",
        "        proxy_set_header X-Zt-Groups      $zt_groups;",
        "        proxy_set_header X-Zt-Decision-Id $zt_decision;",
        "        # zt's other names, never from the client (nginx drops X_Zt_* spellings itself)",
        '        proxy_set_header X-Zt-Breakglass  "";',
        '        proxy_set_header X-Zt-Reason      "";',
        '        proxy_set_header X-Zt-Login-Url   "";',
        "        # zt's credentials stay with zt: its session cookie and a Bearer session token",
        "        proxy_set_header Cookie $zt_cookie_without_session;",
        '        proxy_set_header Authorization "";',
        r.preserve_host
          ? "        proxy_set_header Host $host$zt_port;"
          : `        proxy_set_header Host ${up.hostPort};   # preserve_host: false`,
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_http_version 1.1;",
        ...(r.websockets
          ? [
              "        proxy_set_header Upgrade $http_upgrade;",
              "        proxy_set_header Connection $zt_connection;",
            ]
          : ['        proxy_set_header Connection "";']),
        ...(up.scheme === "https"
          ? [
              "        proxy_ssl_server_name on;",
              `        proxy_ssl_name ${up.name};`,
              "        proxy_ssl_verify on;",
              "        proxy_ssl_verify_depth 4;   # intermediates in the app's chain (nginx's default: 1)",
              `        proxy_ssl_trusted_certificate ${up.caFile};`,
            ]
          : []),
        `        proxy_pass ${up.scheme}://zt_route_${r.name};   # no URI part: the client's URI, unchanged`,
        "    }",
      );
    }
    if (!s.routes.some((r) => r.pathPrefix === "/"))
      out.push(
        "",
        "    # no route of zt's serves the rest of this host",
        "    location / { return 404; }",
      );
    out.push("}");
  }
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------------------- Caddy

function caddySiteAddress(s: Site): string {
  if (s.scheme === "https") return defaultPort(s) ? s.host : `https://${s.host}:${s.port}`;
  return `http://${s.host}${defaultPort(s) ? "" : `:${s.port}`}`;
}

function caddy(o: FrontProxyOptions): string {
  const sites = sitesOf(o.routes);
  const c = o.cookieName;
  const out: string[] = [
    header("caddy", [
      "Site blocks for the Caddyfile; https sites get Caddy's automatic certificates.",
    ]),
  ];
  for (const s of sites) {
    out.push(`${caddySiteAddress(s)} {`);
    if (o.bind) out.push(`    bind ${o.bind}`);
    out.push(
      "    # zt's own pages, without auth; nothing else of /.zt/",
      `    @zt_pages path ${ZT_PAGES.join(" ")}`,
      "    handle @zt_pages {",
      `        reverse_proxy ${o.zt}`,
      "    }",
    );
    for (const r of s.routes) {
      const up = upstreamOf(r);
      const matcher = r.pathPrefix === "/" ? "" : ` @zt_route_${r.name}`;
      out.push(`    # ${describeRoute(r, up)}`);
      // path_regexp, not path: Caddy's path matcher ignores case, zt's route table does
      // not — /API/v2 would reach the /api/v2 app under the decision for another route.
      if (matcher)
        out.push(`    @zt_route_${r.name} path_regexp ^${r.pathPrefix.replace(/\./g, "\\.")}(/|$)`);
      // In a `route` block Caddy keeps this order: the client's X-Zt-* go before the
      // check copies zt's in (a plain `handle` would sort request_header after it).
      const body = [
        "# no X-Zt-* header of the client's reaches the app, in either spelling",
        "request_header -X-Zt-*",
        "request_header -X_Zt_*",
        `forward_auth ${o.zt} {`,
        "    uri /.zt/authz",
        "    copy_headers X-Zt-Assertion X-Zt-User X-Zt-Groups X-Zt-Decision-Id",
        "    # Caddy copies every client header into the check: not these",
        "    header_up -X-Original-URL",
        "    header_up -X-Original-Method",
        "    # the check is a plain request, even for a WebSocket handshake",
        "    header_up -Connection",
        "    header_up -Upgrade",
        "}",
        `reverse_proxy ${up.scheme}://${up.hostPort} {`,
        "    # zt's credentials stay with zt: its session cookie and a Bearer token",
        `    header_up Cookie "(^|;\\s*)${c}=[^;]*(;\\s*|$)" "$1"`,
        "    header_up -Authorization",
        ...(r.preserve_host
          ? []
          : ["    header_up Host {upstream_hostport}   # preserve_host: false"]),
        ...(up.ownCa !== undefined
          ? ["    transport http {", `        tls_trusted_ca_certs ${up.ownCa}`, "    }"]
          : []),
        "}",
      ];
      out.push(
        `    handle${matcher} {`,
        "        route {",
        ...body.map((l) => `            ${l}`),
        "        }",
        "    }",
      );
    }
    if (!s.routes.some((r) => r.pathPrefix === "/"))
      out.push(
        "    # no route of zt's serves the rest of this host",
        "    handle {",
        "        respond 404",
        "    }",
      );
    out.push("}", "");
  }
  return out.join("\n");
}

// ---------------------------------------------------------------------------- Traefik

const yamlString = (s: string) => JSON.stringify(s);

function traefikRule(host: string, prefix: string): string {
  const h = `Host(\`${host}\`)`;
  return prefix === "/" ? h : `${h} && (Path(\`${prefix}\`) || PathPrefix(\`${prefix}/\`))`;
}

function traefik(o: FrontProxyOptions): string {
  const sites = sitesOf(o.routes);
  const out: string[] = [
    header("traefik", [
      "Traefik dynamic configuration (file provider). Not run in zt's tests: Traefik is",
      "not packaged for Debian. Routers take every entry point unless you add entryPoints.",
    ]),
    "http:",
    "  middlewares:",
    "    zt-authz:",
    "      forwardAuth:",
    `        address: ${yamlString(`http://${o.zt}/.zt/authz`)}`,
    "        trustForwardHeader: false",
    "        # only these client headers go into the check (Traefik adds its X-Forwarded-*)",
    '        authRequestHeaders: ["Cookie", "Authorization", "Accept"]',
    '        authResponseHeaders: ["X-Zt-Assertion", "X-Zt-User", "X-Zt-Groups", "X-Zt-Decision-Id"]',
    "    zt-strip-token: # after the check: a Bearer session token is not the app's",
    "      headers:",
    '        customRequestHeaders: { Authorization: "" }',
    "  routers:",
  ];
  for (const s of sites) {
    const tls = s.scheme === "https" ? ["      tls: {}"] : [];
    out.push(
      // Numbered: names built from host and port could collide (a-b.test, a.b.test).
      `    zt-pages-${sites.indexOf(s) + 1}: # ${s.host}:${s.port}`,
      `      rule: ${yamlString(`Host(\`${s.host}\`) && (${ZT_PAGES.map((p) => `Path(\`${p}\`)`).join(" || ")})`)}`,
      "      priority: 1000",
      "      service: zt-pep",
      ...tls,
    );
    for (const r of s.routes)
      out.push(
        `    zt-route-${r.name}: # ${describeRoute(r)}`,
        `      rule: ${yamlString(traefikRule(s.host, r.pathPrefix))}`,
        `      priority: ${100 + r.pathPrefix.length}`,
        '      middlewares: ["zt-authz", "zt-strip-token"]',
        `      service: zt-route-${r.name}`,
        ...tls,
      );
  }
  out.push(
    "  services:",
    `    zt-pep: { loadBalancer: { servers: [{ url: ${yamlString(`http://${o.zt}`)} }] } }`,
  );
  const transports: string[] = [];
  for (const r of o.routes) {
    const up = upstreamOf(r);
    const pass = r.preserve_host ? "" : ", passHostHeader: false";
    let transport = "";
    if (up.ownCa !== undefined) {
      transport = `, serversTransport: zt-route-${r.name}`;
      transports.push(`    zt-route-${r.name}: { rootCAs: [${yamlString(up.ownCa)}] }`);
    }
    out.push(
      `    zt-route-${r.name}: { loadBalancer: { servers: [{ url: ${yamlString(`${up.scheme}://${up.hostPort}`)} }]${pass}${transport} } }`,
    );
  }
  if (transports.length > 0)
    out.push("  serversTransports: # the CAs that verify these https upstreams", ...transports);
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------------------- HAProxy

/** HAProxy's host match for a site: the Host header without its port, lower case. */
function haproxyHostAcl(s: Site): string {
  return `{ req.hdr(host),field(1,:),lower -m str ${s.host} }`;
}

function haproxySites(o: FrontProxyOptions): Site[] {
  const sites = sitesOf(o.routes);
  for (const s of sites)
    if (s.host.includes(":") || s.host.startsWith("["))
      throw usage(
        `route "${s.routes[0]!.name}": an IPv6 literal host (${s.host}) cannot be matched by the generated HAProxy rules; use a host name`,
        { route: s.routes[0]!.name },
      );
  return sites;
}

/** Frontends grouped by listening port (one scheme each). */
function haproxyFrontends(
  sites: Site[],
): { scheme: "http" | "https"; port: number; sites: Site[] }[] {
  const byPort = new Map<number, { scheme: "http" | "https"; port: number; sites: Site[] }>();
  for (const s of sites) {
    const f = byPort.get(s.port);
    if (f && f.scheme !== s.scheme)
      throw usage(
        `port ${s.port} serves both http (${(f.scheme === "http" ? f.sites[0]! : s).host}) and https (${(f.scheme === "https" ? f.sites[0]! : s).host}); one HAProxy frontend takes one scheme`,
      );
    if (f) f.sites.push(s);
    else byPort.set(s.port, { scheme: s.scheme, port: s.port, sites: [s] });
  }
  return [...byPort.values()];
}

function haproxyUseBackends(f: { sites: Site[] }): string[] {
  const lines: string[] = [];
  for (const s of f.sites)
    for (const r of s.routes) {
      const h = haproxyHostAcl(s);
      lines.push(
        r.pathPrefix === "/"
          ? `    use_backend zt_route_${r.name} if ${h}`
          : `    use_backend zt_route_${r.name} if ${h} { path ${r.pathPrefix} } || ${h} { path_beg ${r.pathPrefix}/ }`,
      );
    }
  return lines;
}

function haproxyBackends(o: FrontProxyOptions): string[] {
  const out: string[] = [
    "",
    "backend zt",
    "    http-request set-header X-Forwarded-For %[src]",
    `    http-request set-header X-Forwarded-Proto ${HAPROXY_PROTO}`,
    `    server zt ${o.zt}`,
  ];
  for (const r of o.routes) {
    const up = upstreamOf(r);
    const tls =
      up.scheme === "https" ? ` ssl verify required ca-file ${up.caFile} sni str(${up.name})` : "";
    out.push(
      "",
      `backend zt_route_${r.name}   # ${describeRoute(r, up)}`,
      ...(r.preserve_host
        ? []
        : [`    http-request set-header Host ${up.hostPort}   # preserve_host: false`]),
      `    server app ${up.hostPort}${tls}`,
    );
  }
  return out;
}

function haproxyBind(o: FrontProxyOptions, f: { scheme: string; port: number }): string {
  return `    bind ${o.bind ? bindAddr(o, f.port) : `:${f.port}`}${f.scheme === "https" ? " ssl crt /etc/haproxy/certs/   # your certificates (one PEM per host)" : ""}`;
}

/**
 * zt's security headers as `hdr` arguments of an `http-request return`: what HAProxy
 * answers from the SPOE answer carries what zt's own answers carry (PAGE_SECURITY_HEADERS
 * on the denied page, JSON_SECURITY_HEADERS on a JSON refusal, `no-store` on the redirect).
 */
function haproxyHeaders(headers: Readonly<Record<string, string>>): string {
  return Object.entries(headers)
    .map(
      ([name, value]) =>
        `hdr ${name} "${value.replace(/[\\"%]/g, (ch) => (ch === "%" ? "%%" : `\\${ch}`))}"`,
    )
    .join(" ");
}

function haproxySpoeFrontendRules(c: string): string[] {
  const json = haproxyHeaders(JSON_SECURITY_HEADERS);
  // The redirect to sign in: a shared cache that kept it would send its next client there.
  const redirect = haproxyHeaders({ "cache-control": JSON_SECURITY_HEADERS["cache-control"]! });
  return [
    "    acl zt_pages path /.zt/login /.zt/logout /.zt/denied",
    "    acl zt_allowed var(txn.zt.status) -m int eq 200",
    "    acl zt_html var(txn.zt.content_type) -m beg text/html",
    "    # Too large to ask zt about: the message exceeds max-frame-size, found when HAProxy",
    "    # encodes it (SPOE error 3) or sends it (256 + SPOP status 3); never sent in pieces.",
    `    http-request return status 431 content-type application/json string "{\\"error\\":{\\"code\\":\\"ZT_HEADERS_TOO_LARGE\\",\\"reason\\":\\"authz-request-too-large\\"}}" ${json} if !zt_pages !{ var(txn.zt.status) -m found } { var(txn.zt.error) -m int 3 259 }`,
    "    # No answer from zt (agent down, timeout): refuse.",
    `    http-request return status 503 content-type application/json string "{\\"error\\":{\\"code\\":\\"ZT_UNAVAILABLE\\",\\"reason\\":\\"authz-unavailable\\"}}" ${json} if !zt_pages !{ var(txn.zt.status) -m found }`,
    `    http-request return status 302 hdr Location "%[var(txn.zt.location)]" ${redirect} if !zt_pages { var(txn.zt.status) -m int eq 302 }`,
    `    http-request return status 401 content-type application/json lf-string "%[var(txn.zt.body)]" hdr Location "%[var(txn.zt.location)]" hdr X-Zt-Login-Url "%[var(txn.zt.login_url)]" hdr X-Zt-Decision-Id "%[var(txn.zt.decision_id)]" ${json} if !zt_pages { var(txn.zt.status) -m int eq 401 }`,
    `    http-request return status 403 content-type "text/html; charset=utf-8" lf-string "%[var(txn.zt.body)]" hdr X-Zt-Decision-Id "%[var(txn.zt.decision_id)]" hdr X-Zt-Reason "%[var(txn.zt.reason)]" ${haproxyHeaders(PAGE_SECURITY_HEADERS)} if zt_html !zt_pages { var(txn.zt.status) -m int eq 403 }`,
    `    http-request return status 403 content-type application/json lf-string "%[var(txn.zt.body)]" hdr X-Zt-Decision-Id "%[var(txn.zt.decision_id)]" hdr X-Zt-Reason "%[var(txn.zt.reason)]" ${json} if !zt_pages { var(txn.zt.status) -m int eq 403 }`,
    `    http-request return status 400 content-type application/json lf-string "%[var(txn.zt.body)]" hdr X-Zt-Decision-Id "%[var(txn.zt.decision_id)]" ${json} if !zt_pages { var(txn.zt.status) -m int eq 400 }`,
    `    http-request return status 503 content-type application/json lf-string "%[var(txn.zt.body)]" ${json} if !zt_pages { var(txn.zt.status) -m int eq 503 }`,
    "    # Anything else that is not an allow: refuse.",
    `    http-request return status 500 content-type application/json string "{\\"error\\":{\\"code\\":\\"ZT_INTERNAL\\",\\"message\\":\\"internal error\\"}}" ${json} if !zt_pages !zt_allowed`,
    "    # Allowed: zt's identity headers replace any the client sent; zt's credentials stay with zt.",
    "    http-request del-header ^x[-_]zt[-_] -m reg unless zt_pages",
    "    http-request set-header X-Zt-Assertion %[var(txn.zt.assertion)] if zt_allowed",
    "    http-request set-header X-Zt-User %[var(txn.zt.user)] if zt_allowed",
    "    http-request set-header X-Zt-Groups %[var(txn.zt.groups)] if zt_allowed",
    "    http-request set-header X-Zt-Decision-Id %[var(txn.zt.decision_id)] if zt_allowed",
    "    http-request set-header X-Zt-Breakglass %[var(txn.zt.breakglass)] if zt_allowed { var(txn.zt.breakglass) -m found }",
    "    http-request del-header Authorization unless zt_pages",
    // zt refused more than one (req.cook_cnt), so one Cookie header holds it, separated as
    // HAProxy's cookie parser separates cookies (; or , and blanks around the =).
    "    # zt's session cookie: out of whichever Cookie header holds it (HAProxy counted one).",
    `    http-request replace-header Cookie ^(.*?[;,]\\s*|)${c}\\s*=[^;,]*(?:[;,]\\s*)?(.*)$ \\1\\2 unless zt_pages`,
    "    http-request del-header Cookie if !zt_pages { req.fhdr_cnt(cookie) eq 1 } { req.fhdr(cookie) -m reg ^[;,\\s]*$ }",
    `    http-request return status 400 content-type application/json string "{\\"error\\":{\\"code\\":\\"ZT_REQUEST_AMBIGUOUS\\",\\"reason\\":\\"session-cookie-unstripped\\"}}" ${json} if !zt_pages { req.cook_cnt(${c}) gt 0 }`,
  ];
}

function haproxy(o: FrontProxyOptions): string {
  if (!o.spoa)
    throw usage(
      "haproxy: zt's SPOE agent is off; set forward_auth.spoa_listen (e.g. 127.0.0.1:12345) in zt.yaml, or pass --spoa HOST:PORT",
      { key: "forward_auth.spoa_listen" },
    );
  const spoeFile = o.spoeFile ?? DEFAULT_SPOE_FILE;
  const fronts = haproxyFrontends(haproxySites(o));
  const out: string[] = [
    header("haproxy", [
      "Frontends and backends for haproxy.cfg (after your global and defaults sections,",
      "with mode http). zt answers as SPOE agent (forward_auth.spoa_listen); the engine",
      `file is \`zt forward-auth config haproxy-spoe\`, installed as ${spoeFile}.`,
    ]).trimEnd(),
  ];
  for (const f of fronts) {
    out.push(
      "",
      `frontend zt_${f.scheme}_${f.port}`,
      haproxyBind(o, f),
      `    filter spoe engine zt config ${spoeFile}`,
      ...haproxySpoeFrontendRules(o.cookieName),
      "    use_backend zt if zt_pages",
      ...haproxyUseBackends(f),
    );
  }
  out.push(
    ...haproxyBackends(o),
    "",
    "backend zt-spoa",
    "    mode tcp",
    "    timeout connect 5s",
    "    timeout server 3m",
    `    server zt ${o.spoa}`,
  );
  return out.join("\n") + "\n";
}

function haproxySpoe(o: FrontProxyOptions): string {
  const c = o.cookieName;
  return [
    header("haproxy-spoe", [
      "The SPOE engine file that `zt forward-auth config haproxy` names. zt.yaml:",
      "forward_auth.spoa_listen, reachable from HAProxy, and HAProxy in trusted_proxies.",
    ]).trimEnd(),
    "[zt]",
    "spoe-agent zt",
    "    messages zt-authz",
    "    option var-prefix zt",
    "    option set-on-error error",
    "    # zt takes no fragmented frames: a message too large for one is an error at once (431).",
    "    no option send-frag-payload",
    "    timeout hello 2s",
    "    timeout idle 2m",
    "    timeout processing 2s",
    "    use-backend zt-spoa",
    "    register-var-names status assertion user groups decision_id reason location login_url content_type body breakglass",
    "",
    "spoe-message zt-authz",
    `    args method=method url=url host=req.fhdr(host) hosts=req.hdr_cnt(host) ssl=ssl_fc src=src session=req.cook(${c}) sessions=req.cook_cnt(${c}) authorization=req.fhdr(authorization) authorizations=req.fhdr_cnt(authorization) accept=req.fhdr(accept)`,
    `    event on-frontend-http-request unless { path ${ZT_PAGES.join(" ")} }`,
    "",
  ].join("\n");
}

function haproxyLua(o: FrontProxyOptions): string {
  const lua = o.luaFile ?? DEFAULT_LUA_FILE;
  const fronts = haproxyFrontends(haproxySites(o));
  const out: string[] = [
    header("haproxy-lua", [
      "For haproxy.cfg: a global section (HAProxy merges it with yours; setenv before",
      `lua-load), then frontends and backends (after your defaults, with mode http).`,
      `${lua} is zt's Lua action: \`zt forward-auth config haproxy-lua --print-lua\`.`,
    ]).trimEnd(),
    "global",
    `    setenv ZT_AUTHZ_URL http://${o.zt}/.zt/authz`,
    ...(o.cookieName !== "zt_session" ? [`    setenv ZT_SESSION_COOKIE ${o.cookieName}`] : []),
    `    lua-load ${lua}`,
  ];
  for (const f of fronts)
    out.push(
      "",
      `frontend zt_${f.scheme}_${f.port}`,
      haproxyBind(o, f),
      "    acl zt_pages path /.zt/login /.zt/logout /.zt/denied   # exactly; not all of /.zt/",
      "    http-request del-header ^x[-_]zt[-_] -m reg unless zt_pages  # no client X-Zt-*, X_Zt_*",
      "    http-request lua.zt_authz unless zt_pages              # every request but zt's own pages",
      "    http-request del-header Authorization unless zt_pages  # a zt token is not the app's",
      "    use_backend zt if zt_pages                              # login, logout, denial page",
      ...haproxyUseBackends(f),
    );
  out.push(...haproxyBackends(o));
  return out.join("\n") + "\n";
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
const ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*|[A-Za-z0-9.-]+)$/;
const hostPortOk = (v: string) => {
  const m = HOST_PORT.exec(v);
  return m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
};

/** The addresses and names that go into the output verbatim, checked once. */
function checkOptions(o: FrontProxyOptions): void {
  if (!hostPortOk(o.zt))
    throw usage(
      `zt's address ${JSON.stringify(o.zt)} (--zt, or listen.proxy): expected host:port, e.g. 127.0.0.1:8443`,
    );
  if (o.spoa !== undefined && !hostPortOk(o.spoa))
    throw usage(
      `the SPOE agent's address ${JSON.stringify(o.spoa)} (--spoa, or forward_auth.spoa_listen): expected host:port, e.g. 127.0.0.1:12345`,
    );
  if (o.bind !== undefined && (o.bind === "" || !ADDRESS.test(o.bind)))
    throw usage(`--bind ${JSON.stringify(o.bind)}: expected an address, e.g. 127.0.0.1`);
  if (!/^[A-Za-z0-9_-]+$/.test(o.cookieName))
    throw usage(
      `session cookie name ${JSON.stringify(o.cookieName)}: expected letters, digits, _ or -`,
    );
  for (const [what, file] of [
    ["--spoe-file", o.spoeFile],
    ["--lua-file", o.luaFile],
  ] as const)
    if (file !== undefined && !/^\/[A-Za-z0-9._/-]*$/.test(file))
      throw usage(
        `${what} ${JSON.stringify(file)}: expected an absolute path of letters, digits, . _ / -`,
      );
}

/** The configuration `kind` needs for these routes and this zt. */
export function frontProxyConfig(kind: FrontProxyKind, o: FrontProxyOptions): string {
  checkOptions(o);
  switch (kind) {
    case "nginx":
      return nginx(o);
    case "caddy":
      return caddy(o);
    case "traefik":
      return traefik(o);
    case "haproxy":
      return haproxy(o);
    case "haproxy-spoe":
      return haproxySpoe(o);
    case "haproxy-lua":
      return haproxyLua(o);
  }
}

export function isFrontProxyKind(s: string): s is FrontProxyKind {
  return (FRONT_PROXY_KINDS as readonly string[]).includes(s);
}

/**
 * The address a front proxy on this host reaches a zt listener at: a wildcard listen
 * address (0.0.0.0, ::) becomes loopback.
 */
export function reachableAddress(listen: string): string {
  const m = /^(\[[^\]]*\]|[^:]+):(\d+)$/.exec(listen);
  if (!m) return listen;
  const host = m[1] === "0.0.0.0" ? "127.0.0.1" : m[1] === "[::]" ? "[::1]" : m[1]!;
  return `${host}:${m[2]}`;
}
