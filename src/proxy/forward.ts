import http, {
  type IncomingMessage,
  type ServerResponse,
  type OutgoingHttpHeaders,
} from "node:http";
import https from "node:https";
import { Transform, type Duplex, type Readable } from "node:stream";
import { Pool, type Dispatcher } from "undici";
import type { ResolvedRoute } from "../config/index.js";
import { sendError } from "./http-util.js";

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
  // Node's server has already answered 100-continue; undici refuses to send it.
  "expect",
]);

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
  /** Largest request body forwarded; beyond it the exchange is cut (413 if possible). */
  maxBodyBytes?: number;
  /** Headers zt adds to the response to the client (e.g. `X-Zt-Breakglass`). */
  responseHeaders?: Record<string, string>;
  /** Called when the upstream exchange ends, for connection tracking. */
  onClose?: () => void;
}

/** Builds the upstream request headers: drops hop-by-hop, client X-Zt-*, the session cookie. */
export function upstreamHeaders(
  req: IncomingMessage,
  o: ForwardOptions,
  upgrade: boolean,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const connectionTokens = new Set(
    (req.headers.connection ?? "")
      .split(",")
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || connectionTokens.has(lower)) continue;
    if (
      lower.startsWith("x-zt-") ||
      lower.startsWith("x-forwarded-") ||
      lower === "forwarded" ||
      lower === "x-real-ip"
    )
      continue;
    if (lower === "cookie") {
      const raw = Array.isArray(value) ? value.join("; ") : value;
      const kept = raw
        .split(";")
        .map((p) => p.trim())
        .filter((p) => p !== "" && p.split("=")[0]!.trim() !== o.sessionCookieName);
      if (kept.length) out["cookie"] = kept.join("; ");
      continue;
    }
    out[lower] = value;
  }
  out["host"] = o.route.preserve_host ? o.originalHost : targetOf(o.route).host;
  out["x-forwarded-for"] = o.clientIp;
  out["x-forwarded-proto"] = o.secure ? "https" : "http";
  out["x-forwarded-host"] = o.originalHost;
  for (const [k, v] of Object.entries(o.add)) out[k.toLowerCase()] = v;
  if (upgrade) {
    out["connection"] = "Upgrade";
    out["upgrade"] = req.headers.upgrade ?? "websocket";
  }
  return out;
}

/** Client TLS material for upstream mTLS: zt's own SVID and the bundle to verify with. */
export interface UpstreamClientTls {
  key: string;
  cert: string;
  ca: string;
}

/**
 * Upstream connection pools, one per upstream origin (and per mTLS setting), on
 * `undici` (far cheaper per request than `http.request`): keep-alive, no pipelining
 * (one request at a time per connection, so a misbehaving upstream cannot shift
 * responses between clients), strict Content-Length. Routes with `upstream_mtls: true`
 * and an https `to` present zt's SVID and verify the upstream against zt's bundle.
 */
export class UpstreamAgents {
  readonly #pools = new Map<string, Pool>();
  #clientTls: UpstreamClientTls | undefined;

  constructor(clientTls?: UpstreamClientTls) {
    this.#clientTls = clientTls;
  }

  /** New SVID (after renewal): later connections present it; open ones finish as they are. */
  setClientTls(t: UpstreamClientTls): void {
    this.#clientTls = t;
    for (const [k, p] of this.#pools) {
      if (k.startsWith("mtls ")) {
        void p.close().catch(() => undefined);
        this.#pools.delete(k);
      }
    }
  }

  /** The client TLS options for an upgrade to this route's upstream (mTLS), if any. */
  tlsFor(route: ResolvedRoute): UpstreamClientTls | undefined {
    if (!route.upstream_mtls || targetOf(route).protocol !== "https:") return undefined;
    if (!this.#clientTls) throw new Error("upstream mTLS requested but no SVID loaded");
    return this.#clientTls;
  }

  for(route: ResolvedRoute): Pool {
    const origin = targetOf(route).origin;
    const mtls = route.upstream_mtls && origin.startsWith("https:");
    const key = mtls ? `mtls ${origin}` : origin;
    let p = this.#pools.get(key);
    if (!p) {
      // Fail closed: without zt's SVID the upstream would see an anonymous client.
      if (mtls && !this.#clientTls) throw new Error("upstream mTLS requested but no SVID loaded");
      p = new Pool(origin, {
        connections: 1024,
        pipelining: 1,
        strictContentLength: true,
        ...(mtls ? { connect: { ...this.#clientTls! } } : {}),
      });
      this.#pools.set(key, p);
    }
    return p;
  }

  destroy(): void {
    for (const p of this.#pools.values()) void p.destroy().catch(() => undefined);
    this.#pools.clear();
  }
}

/** A route's upstream address, parsed once (not per request). */
interface UpstreamTarget {
  protocol: string;
  hostname: string;
  port: string | number;
  /** host[:port] for the Host header. */
  host: string;
  origin: string;
  basePath: string;
}

const targets = new WeakMap<ResolvedRoute, UpstreamTarget>();

function targetOf(route: ResolvedRoute): UpstreamTarget {
  let t = targets.get(route);
  if (!t) {
    const u = new URL(route.to);
    t = {
      protocol: u.protocol,
      hostname: u.hostname,
      port: u.port || (u.protocol === "https:" ? 443 : 80),
      host: u.host,
      origin: u.origin,
      basePath: u.pathname.replace(/\/$/, ""),
    };
    targets.set(route, t);
  }
  return t;
}

function targetPath(route: ResolvedRoute, pathAndQuery: string): string {
  return targetOf(route).basePath + pathAndQuery;
}

/** Is this a timeout raised by the upstream client? */
function isTimeout(e: Error): boolean {
  const code = (e as { code?: string }).code;
  return code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT";
}

class BodyTooLarge extends Error {
  readonly code = "ZT_PAYLOAD_TOO_LARGE";
}

/** The request body as undici should send it: none, or the stream (counted when chunked). */
function requestBody(req: IncomingMessage, limit: number | undefined): Readable | null {
  const declared = req.headers["content-length"];
  const chunked = req.headers["transfer-encoding"] !== undefined;
  if (!chunked && (declared === undefined || declared === "0")) {
    req.resume();
    return null;
  }
  // A declared Content-Length was checked before forwarding; a chunked body is counted.
  if (!chunked || limit === undefined) return req;
  let seen = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > limit) cb(new BodyTooLarge(`request body exceeds ${limit} bytes`));
      else cb(null, chunk);
    },
  });
  req.on("error", (e) => counted.destroy(e));
  return req.pipe(counted);
}

/** Streams a request to its upstream and the response back. */
export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  agents: UpstreamAgents,
  o: ForwardOptions,
): void {
  const headers = upstreamHeaders(req, o, false);
  const limit = o.maxBodyBytes;
  let controller: Dispatcher.DispatchController | undefined;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    o.onClose?.();
  };
  res.on("close", () => {
    if (!res.writableFinished) controller?.abort(new Error("client went away"));
    finish();
  });
  const fail = (e: Error) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (e instanceof BodyTooLarge) {
      res.shouldKeepAlive = false;
      sendError(res, "ZT_PAYLOAD_TOO_LARGE", e.message, { limit });
    } else if (isTimeout(e)) {
      sendError(res, "ZT_UPSTREAM_TIMEOUT", `upstream ${o.route.name} timed out`);
    } else sendError(res, "ZT_UPSTREAM_UNAVAILABLE", `upstream ${o.route.name} is unavailable`);
  };
  let pool: Pool;
  try {
    pool = agents.for(o.route);
  } catch (e) {
    fail(e as Error);
    return;
  }
  pool.dispatch(
    {
      path: targetPath(o.route, o.pathAndQuery),
      method: req.method ?? "GET",
      headers: headers as Record<string, string | string[]>,
      body: requestBody(req, limit),
      headersTimeout: o.route.timeoutMs,
      bodyTimeout: o.route.timeoutMs,
    },
    {
      onRequestStart(c) {
        controller = c;
      },
      onResponseStart(c, status, upHeaders, statusMessage) {
        controller = c;
        if (status < 200) return; // informational: not relayed
        const out: OutgoingHttpHeaders = {};
        for (const k in upHeaders) {
          const v = upHeaders[k];
          if (v === undefined || HOP_BY_HOP.has(k)) continue;
          out[k] = v;
        }
        if (upHeaders["transfer-encoding"] !== undefined) delete out["content-length"];
        if (o.responseHeaders) for (const k in o.responseHeaders) out[k] = o.responseHeaders[k];
        res.writeHead(status, statusMessage || undefined, out);
      },
      onResponseData(c, chunk) {
        if (!res.write(chunk)) {
          c.pause();
          res.once("drain", () => c.resume());
        }
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError(_c, e) {
        fail(e);
      },
    },
  );
}

/** Completes a WebSocket (or other) upgrade through to the upstream and pipes both ways. */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  o: ForwardOptions,
  agents?: UpstreamAgents,
): void {
  const target = targetOf(o.route);
  const client = target.protocol === "https:" ? https : http;
  const upstream = client.request({
    ...agents?.tlsFor(o.route),
    protocol: target.protocol,
    hostname: target.hostname,
    port: target.port,
    method: req.method,
    path: targetPath(o.route, o.pathAndQuery),
    headers: upstreamHeaders(req, o, true),
  });
  const fail = () => {
    if (!socket.destroyed) {
      socket.end("HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    }
    o.onClose?.();
  };
  upstream.on("error", fail);
  upstream.on("response", (up) => {
    // The upstream refused the upgrade: relay its answer.
    let head = `HTTP/1.1 ${up.statusCode} ${up.statusMessage}\r\n`;
    for (const [k, v] of Object.entries(up.headers))
      if (v !== undefined && !HOP_BY_HOP.has(k)) head += `${k}: ${String(v)}\r\n`;
    socket.write(head + "Connection: close\r\n\r\n");
    up.pipe(socket);
    up.on("end", () => o.onClose?.());
  });
  upstream.on("upgrade", (up, upSocket, upHead) => {
    let head101 = `HTTP/1.1 101 Switching Protocols\r\n`;
    for (let i = 0; i < up.rawHeaders.length; i += 2) {
      head101 += `${up.rawHeaders[i]}: ${up.rawHeaders[i + 1]}\r\n`;
    }
    socket.write(head101 + "\r\n");
    if (upHead.length) socket.write(upHead);
    if (head.length) upSocket.write(head);
    upSocket.pipe(socket);
    socket.pipe(upSocket);
    const close = () => {
      upSocket.destroy();
      socket.destroy();
      o.onClose?.();
    };
    upSocket.on("close", close);
    socket.on("close", close);
    upSocket.on("error", close);
    socket.on("error", close);
  });
  upstream.end();
}
