import http, {
  type IncomingMessage,
  type ServerResponse,
  type OutgoingHttpHeaders,
} from "node:http";
import https from "node:https";
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext, type ConnectionOptions, type SecureContext } from "node:tls";
import type { Duplex } from "node:stream";
import {
  BodyTooLarge,
  UpstreamBusy,
  UpstreamPool,
  UpstreamTimeout,
  type UpstreamExchange,
  type UpstreamRequestBody,
} from "./upstream-pool.js";
import type { ResolvedRoute } from "../config/index.js";
import { rawJsonRefusal } from "../web/index.js";
import { sendError, setCookieNames } from "./http-util.js";

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  // Node's server has already answered 100-continue to the client.
  "expect",
]);

/**
 * Client request headers never copied upstream: hop-by-hop ones; the body's framing,
 * which zt writes from its own view of the body (a client's `Content-Length` forwarded
 * beside a body zt frames differently is request smuggling); the forwarding headers zt
 * writes itself; and path / method overrides, which would make an upstream act on
 * another path or method than the one the policy decided on.
 */
const NOT_FORWARDED = new Set([
  ...HOP_BY_HOP,
  "content-length",
  "forwarded",
  "x-real-ip",
  "x-original-url",
  "x-rewrite-url",
  "x-original-method",
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
]);

/**
 * Headers a client may not name in `Connection`: the framing and Host, which zt writes
 * itself. Such a request is refused (see {@link connectionNamesProtected}).
 */
const PROTECTED_CONNECTION_TOKEN =
  /(?:^|,)[\t ]*(?:content-length|transfer-encoding|host)[\t ]*(?:,|$)/i;

/**
 * Whether the client's `Connection` header lists `Content-Length`, `Transfer-Encoding`
 * or `Host` as hop-by-hop: no honest client does, and a proxy that obeys it drops the
 * framing of a body it still forwards (request smuggling). Refused as ambiguous.
 */
export function connectionNamesProtected(req: IncomingMessage): boolean {
  const connection = req.headers.connection;
  return connection !== undefined && PROTECTED_CONNECTION_TOKEN.test(connection);
}

export interface ForwardOptions {
  route: ResolvedRoute;
  /** Canonical path + query: exactly what the policy saw. */
  pathAndQuery: string;
  clientIp: string;
  originalHost: string;
  secure: boolean;
  /** Headers zt adds (assertion, decision id …). */
  add: Record<string, string>;
  sessionCookieName: string;
  /**
   * The request was authenticated by its `Authorization: Bearer` session token: that
   * header is not forwarded (the upstream could replay the token as the user).
   */
  dropAuthorization: boolean;
  /** Largest request body forwarded; beyond it the exchange is cut (413 if possible). */
  maxBodyBytes?: number;
  /** Headers zt adds to the response to the client (e.g. `X-Zt-Breakglass`). */
  responseHeaders?: Record<string, string>;
  /** Called when the upstream exchange ends, for connection tracking. */
  onClose?: () => void;
  /** Called on every chunk relayed either way through an upgraded connection. */
  onActivity?: () => void;
}

/** What Node refuses in a header value; refused here too, as the head is written by hand. */
const BAD_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
/** Request-target bytes that could split the request line. */
const BAD_TARGET = /[^\x21-\x7e\x80-\xff]/;

/**
 * The upstream request headers as a flat list `[name, value, …]` (lower-case names):
 * the client's end-to-end headers in order (repeated ones kept), without hop-by-hop
 * ones, the body's framing, client-sent `X-Zt-*` / forwarding / path- and
 * method-override headers (or their look-alikes spelt with `_`, which CGI-style stacks
 * read as the same name), zt's session cookie, or the `Authorization` header that
 * carried the session token; then Host, the `X-Forwarded-*` zt vouches for, and zt's
 * own (assertion, decision id). Headers the client names in `Connection` are dropped
 * from its own list only: never what zt writes after it. No framing header: the caller
 * writes it ({@link upstreamRequestHead}) or `node:http` does (upgrades, no body).
 */
export function upstreamHeaderList(
  req: IncomingMessage,
  o: ForwardOptions,
  upgrade: boolean,
): string[] {
  const out: string[] = [];
  const connection = req.headers.connection;
  const connectionTokens =
    connection === undefined
      ? undefined
      : new Set(
          connection
            .split(",")
            .map((t) => t.trim().toLowerCase())
            .filter(Boolean),
        );
  const dropAuthorization = o.dropAuthorization;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    // `X_Zt_User` reaches a CGI/WSGI app as HTTP_X_ZT_USER, exactly like `X-Zt-User`.
    const key = lower.includes("_") ? lower.replaceAll("_", "-") : lower;
    if (NOT_FORWARDED.has(key) || connectionTokens?.has(lower)) continue;
    if (key.startsWith("x-zt-") || key.startsWith("x-forwarded-")) continue;
    if (dropAuthorization && lower === "authorization") continue;
    if (lower === "cookie") {
      const kept = value
        .split(";")
        .map((p) => p.trim())
        .filter((p) => p !== "" && p.split("=")[0]!.trim() !== o.sessionCookieName);
      if (kept.length) out.push("cookie", kept.join("; "));
      continue;
    }
    out.push(lower, value);
  }
  out.push(
    "host",
    o.route.preserve_host ? o.originalHost : targetOf(o.route).host,
    "x-forwarded-for",
    o.clientIp,
    "x-forwarded-proto",
    o.secure ? "https" : "http",
    "x-forwarded-host",
    o.originalHost,
  );
  for (const k in o.add) out.push(k.toLowerCase(), o.add[k]!);
  // Only WebSocket upgrades get here (the PEP refuses any other protocol).
  if (upgrade) out.push("connection", "Upgrade", "upgrade", "websocket");
  return out;
}

/** {@link upstreamHeaderList} as a header object (repeated names as arrays), for `http.request`. */
export function upstreamHeaders(
  req: IncomingMessage,
  o: ForwardOptions,
  upgrade: boolean,
): OutgoingHttpHeaders {
  const list = upstreamHeaderList(req, o, upgrade);
  const out: OutgoingHttpHeaders = {};
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    const prev = out[name];
    out[name] =
      prev === undefined
        ? list[i + 1]!
        : ([] as string[]).concat(prev as string | string[], list[i + 1]!);
  }
  return out;
}

/**
 * The upstream request head, written by hand for the keep-alive pool: the request line
 * with the canonical target, the headers of {@link upstreamHeaderList}, and the body's
 * framing, always zt's own: `transfer-encoding: chunked` when the client's body had no
 * length, else `content-length` as Node's parser read it (the body zt forwards is
 * exactly that long), else none. Throws on a byte that could split the head (none gets
 * past Node's parser; checked anyway).
 */
export function upstreamRequestHead(
  req: IncomingMessage,
  o: ForwardOptions,
  chunked: boolean,
): string {
  const target = targetPath(o.route, o.pathAndQuery);
  if (target === "" || BAD_TARGET.test(target)) throw new Error("request target not forwardable");
  const list = upstreamHeaderList(req, o, false);
  let head = `${req.method ?? "GET"} ${target} HTTP/1.1\r\n`;
  for (let i = 0; i < list.length; i += 2) {
    const value = list[i + 1]!;
    if (BAD_HEADER_VALUE.test(value)) throw new Error(`header ${list[i]} not forwardable`);
    head += `${list[i]}: ${value}\r\n`;
  }
  if (chunked) head += "transfer-encoding: chunked\r\n";
  else {
    const declared = req.headers["content-length"];
    if (declared !== undefined) {
      if (!DIGITS.test(declared)) throw new Error("content-length not forwardable");
      head += `content-length: ${declared}\r\n`;
    }
  }
  return head + "\r\n";
}

const DIGITS = /^\d+$/;

/** Client TLS material for upstream mTLS: zt's own SVID and the bundle to verify with. */
export interface UpstreamClientTls {
  key: string;
  cert: string;
  ca: string;
}

/**
 * Upstream connection pools, one per upstream origin, timeout and mTLS setting, on zt's
 * own keep-alive HTTP/1.1 client ({@link UpstreamPool}: one request at a time per
 * connection, strict response parsing). Routes with `upstream_mtls: true` and an https
 * `to` present zt's SVID and verify the upstream against zt's bundle; routes with
 * `upstream_ca` verify it against that file; other https upstreams against the system's
 * trusted CAs.
 */
export class UpstreamAgents {
  readonly #pools = new Map<string, UpstreamPool>();
  /** Pools retired by a config reload that may still carry requests (destroyed at close). */
  readonly #retired = new Set<UpstreamPool>();
  /** Each route's pool, found without building its key (the per-request lookup). */
  #byRoute = new WeakMap<ResolvedRoute, UpstreamPool>();
  #clientTls: UpstreamClientTls | undefined;
  /**
   * TLS contexts by SVID use and CA file, built once: a context made per connection
   * would parse the CA file (and SVID) on the event loop at every connect and upgrade.
   */
  readonly #contexts = new Map<string, SecureContext>();

  constructor(clientTls?: UpstreamClientTls) {
    this.#clientTls = clientTls;
  }

  /** New SVID (after renewal): later connections present it; open ones finish as they are. */
  setClientTls(t: UpstreamClientTls): void {
    this.#clientTls = t;
    for (const k of this.#contexts.keys()) if (k.startsWith("mtls ")) this.#contexts.delete(k);
    this.#byRoute = new WeakMap();
    for (const [k, p] of this.#pools) {
      if (k.startsWith("mtls ")) {
        p.close();
        this.#pools.delete(k);
      }
    }
  }

  /**
   * The client TLS options for a connection to this route's https upstream: zt's SVID
   * (upstream_mtls) and the CAs that verify the upstream (upstream_ca, else zt's bundle
   * with mTLS, else none: the system's). Undefined for an http upstream.
   */
  tlsFor(route: ResolvedRoute): ConnectionOptions | undefined {
    if (targetOf(route).protocol !== "https:") return undefined;
    const ca = route.upstreamCaPem;
    if (!route.upstream_mtls && ca === undefined) return {}; // Node's default context
    // Fail closed: without zt's SVID the upstream would see an anonymous client.
    if (route.upstream_mtls && !this.#clientTls)
      throw new Error("upstream mTLS requested but no SVID loaded");
    const key = contextKey(route);
    let secureContext = this.#contexts.get(key);
    if (secureContext === undefined) {
      const svid = route.upstream_mtls ? this.#clientTls! : undefined;
      secureContext = createSecureContext({
        ...(svid ? { key: svid.key, cert: svid.cert } : {}),
        ca: ca ?? svid!.ca,
      });
      this.#contexts.set(key, secureContext);
    }
    return { secureContext };
  }

  for(route: ResolvedRoute): UpstreamPool {
    const known = this.#byRoute.get(route);
    if (known !== undefined) return known;
    const key = poolKey(route);
    let p = this.#pools.get(key);
    if (!p) {
      const t = targetOf(route);
      const tls = this.tlsFor(route);
      p = new UpstreamPool({
        host: t.connectHost,
        port: Number(t.port),
        timeoutMs: route.timeoutMs,
        ...(tls ? { tls } : {}),
      });
      this.#pools.set(key, p);
    }
    this.#byRoute.set(route, p);
    return p;
  }

  /**
   * After a config reload, these are the routes: a pool no route uses any more (its
   * upstream's address, timeout or CA changed, or its route was removed) is retired
   * gracefully — requests already decided on the old route finish on it — and a changed
   * route gets a new pool at its first request.
   */
  retain(routes: readonly ResolvedRoute[]): void {
    const pools = new Set(routes.map(poolKey));
    const contexts = new Set(routes.map(contextKey));
    for (const [k, p] of this.#pools) {
      if (pools.has(k)) continue;
      p.retire();
      this.#pools.delete(k);
      this.#retired.add(p);
    }
    for (const p of this.#retired) if (p.open === 0) this.#retired.delete(p);
    for (const k of this.#contexts.keys()) if (!contexts.has(k)) this.#contexts.delete(k);
  }

  destroy(): void {
    for (const p of this.#pools.values()) p.destroy();
    for (const p of this.#retired) p.destroy();
    this.#pools.clear();
    this.#retired.clear();
    this.#byRoute = new WeakMap();
  }
}

/**
 * The key of a route's pool: origin, timeout, mTLS and the CA certificates it trusts (by
 * content, so that a CA file replaced before a reload gets a new pool; routes to one
 * origin may trust different CAs).
 */
function poolKey(route: ResolvedRoute): string {
  const t = targetOf(route);
  const mtls = route.upstream_mtls && t.protocol === "https:";
  return `${mtls ? "mtls " : ""}${t.origin} ${route.timeoutMs} ${t.caDigest}`;
}

/** The key of a route's TLS context: SVID use and the CA certificates. */
function contextKey(route: ResolvedRoute): string {
  return `${route.upstream_mtls ? "mtls " : ""}${targetOf(route).caDigest}`;
}

/** A route's upstream address, parsed once (not per request). */
interface UpstreamTarget {
  protocol: string;
  hostname: string;
  /** The hostname to connect to (an IPv6 address without its brackets). */
  connectHost: string;
  port: string | number;
  /** host[:port] for the Host header. */
  host: string;
  origin: string;
  basePath: string;
  /** SHA-256 of `upstream_ca`'s certificates ("" without one). */
  caDigest: string;
}

const targets = new WeakMap<ResolvedRoute, UpstreamTarget>();

function targetOf(route: ResolvedRoute): UpstreamTarget {
  let t = targets.get(route);
  if (!t) {
    const u = new URL(route.to);
    t = {
      protocol: u.protocol,
      hostname: u.hostname,
      connectHost: u.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: u.port || (u.protocol === "https:" ? 443 : 80),
      host: u.host,
      origin: u.origin,
      basePath: u.pathname.replace(/\/$/, ""),
      caDigest:
        route.upstreamCaPem === undefined
          ? ""
          : createHash("sha256").update(route.upstreamCaPem).digest("base64url"),
    };
    targets.set(route, t);
  }
  return t;
}

function targetPath(route: ResolvedRoute, pathAndQuery: string): string {
  return targetOf(route).basePath + pathAndQuery;
}

/** The request body to send: none, or the client's stream (counted against the limit when chunked). */
function requestBody(
  req: IncomingMessage,
  chunked: boolean,
  limit: number | undefined,
): UpstreamRequestBody | undefined {
  const declared = req.headers["content-length"];
  if (!chunked && (declared === undefined || declared === "0")) {
    req.resume();
    return undefined;
  }
  // A declared Content-Length was checked before forwarding (and Node's parser stops at
  // it); a chunked body is counted as it streams.
  return { stream: req, chunked, limit: chunked ? limit : undefined };
}

/**
 * An upstream's `Set-Cookie` values without any that sets zt's session cookie (undefined
 * when none is left). Only zt sets it: an app behind the PEP that could would choose
 * whose session the browser carries to every app of the host (a session of the app's
 * choosing: login CSRF, session fixation), or drop the user's, and script on the app
 * could have the app do it.
 */
function withoutSessionCookie(
  values: string | string[] | number | undefined,
  sessionCookieName: string,
): string[] | undefined {
  if (values === undefined) return undefined;
  const list = (Array.isArray(values) ? values : [String(values)]).filter(
    (v) => !setCookieNames(v, sessionCookieName),
  );
  return list.length > 0 ? list : undefined;
}

/** Streams a request to its upstream and the response back. */
export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  agents: UpstreamAgents,
  o: ForwardOptions,
): void {
  const limit = o.maxBodyBytes;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    o.onClose?.();
  };
  const fail = (e: Error) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (e instanceof BodyTooLarge) {
      res.shouldKeepAlive = false;
      sendError(res, "ZT_PAYLOAD_TOO_LARGE", e.message, { limit });
    } else if (e instanceof UpstreamTimeout) {
      sendError(res, "ZT_UPSTREAM_TIMEOUT", `upstream ${o.route.name} timed out`);
    } else if (e instanceof UpstreamBusy) {
      // Every connection busy and too many requests already waiting: try again later.
      sendError(res, "ZT_UNAVAILABLE", `upstream ${o.route.name} is busy`);
    } else sendError(res, "ZT_UPSTREAM_UNAVAILABLE", `upstream ${o.route.name} is unavailable`);
  };
  // No length from the client: the body is re-framed as chunked.
  const chunked = req.headers["transfer-encoding"] !== undefined;
  let pool: UpstreamPool;
  let head: string;
  try {
    pool = agents.for(o.route);
    head = upstreamRequestHead(req, o, chunked);
  } catch (e) {
    req.resume();
    fail(e as Error);
    res.on("close", finish);
    return;
  }
  const body = requestBody(req, chunked, limit);
  const responseHeaders = o.responseHeaders;
  // Called only after pool.request has returned (answers arrive on later reads).
  let draining = false;
  const resume = () => {
    draining = false;
    exchange.resume();
  };
  const exchange: UpstreamExchange = pool.request(
    { method: req.method ?? "GET", head, body },
    {
      onHead(h) {
        const out: OutgoingHttpHeaders = {};
        const connection = h.headers["connection"];
        const listed =
          connection === undefined
            ? undefined
            : String(connection)
                .toLowerCase()
                .split(/\s*,\s*/);
        for (const k in h.headers) {
          if (HOP_BY_HOP.has(k) || listed?.includes(k) || k === "set-cookie") continue;
          out[k] = h.headers[k];
        }
        const cookies = listed?.includes("set-cookie")
          ? undefined
          : withoutSessionCookie(h.headers["set-cookie"], o.sessionCookieName);
        if (cookies !== undefined) out["set-cookie"] = cookies;
        if (responseHeaders) for (const k in responseHeaders) out[k] = responseHeaders[k];
        try {
          res.writeHead(h.status, h.reason || undefined, out);
        } catch {
          // Not relayable (the parser refuses what Node refuses, so this is a last guard).
          exchange.abort();
          fail(new Error("upstream response head not relayable"));
        }
      },
      onData(chunk) {
        if (res.write(chunk)) return true;
        // One listener however many pieces of the same read follow.
        if (!draining) {
          draining = true;
          res.once("drain", resume);
        }
        return false;
      },
      onEnd() {
        res.end();
      },
      onError(e) {
        fail(e);
      },
    },
  );
  res.on("close", () => {
    if (!res.writableFinished) exchange.abort();
    finish();
  });
}

/** A bodiless JSON answer to a client whose upgrade did not go through, then close. */
function upgradeRefusal(status: string, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return rawJsonRefusal(status, body);
}

/**
 * Completes a WebSocket upgrade through to the upstream and pipes both ways. Whatever
 * happens, `o.onClose` is called exactly once, and neither leg outlives the other: the
 * upstream handshake gets the route's timeout (then 504), a client that goes away (or
 * is cut on revocation) before the upstream's 101 aborts the upstream request, and a
 * 101 that arrives for a client already gone is closed at once.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  o: ForwardOptions,
  agents?: UpstreamAgents,
): void {
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    o.onClose?.();
  };
  /** Answers the client (if it is still there and nothing was relayed yet) and closes. */
  const refuse = (status: string, code: string, message: string) => {
    if (!socket.destroyed)
      socket.end(upgradeRefusal(status, code, message), () => socket.destroy());
    finish();
  };
  if (socket.destroyed) return finish();
  const target = targetOf(o.route);
  const client = target.protocol === "https:" ? https : http;
  let upstream: http.ClientRequest;
  try {
    upstream = client.request({
      ...agents?.tlsFor(o.route),
      // The certificate is checked against the upstream's own name (as the pool does),
      // never the client's Host header (preserve_host), which Node would take otherwise;
      // "" for an IP address: no SNI, and the address checked against the IP SANs.
      ...(target.protocol === "https:"
        ? { servername: isIP(target.connectHost) ? "" : target.connectHost }
        : {}),
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method: req.method,
      path: targetPath(o.route, o.pathAndQuery),
      headers: upstreamHeaders(req, o, true),
      // One exchange per connection: nothing goes back to a shared pool.
      agent: false,
      // Set on the socket before it connects: bounds the connect and the handshake.
      timeout: o.route.timeoutMs,
    });
  } catch {
    return refuse(
      "502 Bad Gateway",
      "ZT_UPSTREAM_UNAVAILABLE",
      `upstream ${o.route.name} is unavailable`,
    );
  }
  /** The upstream's leg once it answered: its response, or the upgraded socket. */
  let upLeg: { destroy(): void } | undefined;
  let tunnel = false;
  let timedOut = false;
  // The client goes away (or is cut): the upstream leg goes too, in whatever phase.
  const clientGone = () => {
    if (upLeg) upLeg.destroy();
    else upstream.destroy();
    finish();
  };
  socket.once("close", clientGone);
  socket.on("error", clientGone);
  // Before the 101, a client's FIN means it gave up (a server socket stays half-open).
  const clientEnded = () => {
    if (!tunnel) {
      socket.destroy();
      clientGone();
    }
  };
  socket.once("end", clientEnded);
  upstream.on("timeout", () => {
    timedOut = true;
    upstream.destroy();
  });
  upstream.on("error", () => {
    if (upLeg) {
      // Failed while relaying a refusal: the client has part of an answer.
      socket.destroy();
      return finish();
    }
    if (timedOut)
      refuse("504 Gateway Timeout", "ZT_UPSTREAM_TIMEOUT", `upstream ${o.route.name} timed out`);
    else
      refuse(
        "502 Bad Gateway",
        "ZT_UPSTREAM_UNAVAILABLE",
        `upstream ${o.route.name} is unavailable`,
      );
  });
  upstream.on("response", (up) => {
    upLeg = up;
    if (socket.destroyed) {
      up.destroy();
      return finish();
    }
    // The upstream refused the upgrade: relay its answer.
    let head = `HTTP/1.1 ${up.statusCode} ${up.statusMessage}\r\n`;
    for (const [k, v] of Object.entries(up.headers))
      if (v !== undefined && !HOP_BY_HOP.has(k)) head += `${k}: ${String(v)}\r\n`;
    socket.write(head + "Connection: close\r\n\r\n");
    up.pipe(socket);
    up.on("error", () => socket.destroy());
    // Relayed whole: close (a client that keeps its half open holds nothing).
    socket.once("finish", () => socket.destroy());
  });
  upstream.on("upgrade", (up, upSocket, upHead) => {
    upLeg = upSocket;
    // The route timeout bounds the handshake, not an idle WebSocket.
    upSocket.setTimeout(0);
    upSocket.on("error", () => upSocket.destroy());
    if (socket.destroyed) {
      // The client left (or was cut) while the upstream was answering.
      upSocket.destroy();
      return finish();
    }
    tunnel = true;
    let head101 = `HTTP/1.1 101 Switching Protocols\r\n`;
    for (let i = 0; i < up.rawHeaders.length; i += 2) {
      const name = up.rawHeaders[i]!;
      const value = up.rawHeaders[i + 1]!;
      // The session cookie is zt's alone, as on every other answer (see withoutSessionCookie).
      if (name.toLowerCase() === "set-cookie" && setCookieNames(value, o.sessionCookieName))
        continue;
      head101 += `${name}: ${value}\r\n`;
    }
    socket.write(head101 + "\r\n");
    if (upHead.length) socket.write(upHead);
    if (head.length) upSocket.write(head);
    upSocket.pipe(socket);
    socket.pipe(upSocket);
    if (o.onActivity) {
      socket.on("data", o.onActivity);
      upSocket.on("data", o.onActivity);
    }
    upSocket.on("close", () => {
      socket.destroy();
      finish();
    });
  });
  upstream.end();
}
