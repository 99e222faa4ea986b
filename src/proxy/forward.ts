import http, {
  type IncomingMessage,
  type ServerResponse,
  type OutgoingHttpHeaders,
} from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
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
 * One keep-alive agent per upstream origin (and per mTLS setting): routes with
 * `upstream_mtls: true` and an https `to` present zt's SVID and verify the upstream
 * against zt's trust bundle.
 */
export class UpstreamAgents {
  readonly #agents = new Map<string, http.Agent>();
  #clientTls: UpstreamClientTls | undefined;

  constructor(clientTls?: UpstreamClientTls) {
    this.#clientTls = clientTls;
  }

  /** New SVID (after renewal): later connections present it; open ones finish as they are. */
  setClientTls(t: UpstreamClientTls): void {
    this.#clientTls = t;
    for (const [k, a] of this.#agents) {
      if (k.startsWith("mtls ")) {
        a.destroy();
        this.#agents.delete(k);
      }
    }
  }

  /** The client TLS options for an upgrade to this route's upstream (mTLS), if any. */
  tlsFor(route: ResolvedRoute): UpstreamClientTls | undefined {
    if (!route.upstream_mtls || targetOf(route).protocol !== "https:") return undefined;
    if (!this.#clientTls) throw new Error("upstream mTLS requested but no SVID loaded");
    return this.#clientTls;
  }

  for(route: ResolvedRoute): http.Agent {
    const origin = targetOf(route).origin;
    const https_ = origin.startsWith("https:");
    const mtls = https_ && route.upstream_mtls;
    const key = mtls ? `mtls ${origin}` : origin;
    let a = this.#agents.get(key);
    if (!a) {
      const opts = {
        keepAlive: true,
        maxSockets: 1024,
        maxFreeSockets: 256,
        scheduling: "lifo" as const,
      };
      if (mtls) {
        // Fail closed: without zt's SVID the upstream would see an anonymous client.
        if (!this.#clientTls) throw new Error("upstream mTLS requested but no SVID loaded");
        a = new https.Agent({ ...opts, ...this.#clientTls });
      } else a = https_ ? new https.Agent(opts) : new http.Agent(opts);
      this.#agents.set(key, a);
    }
    return a;
  }

  destroy(): void {
    for (const a of this.#agents.values()) a.destroy();
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

/** Streams a request to its upstream and the response back. */
export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  agents: UpstreamAgents,
  o: ForwardOptions,
): void {
  const target = targetOf(o.route);
  const client = target.protocol === "https:" ? https : http;
  const upstream = client.request({
    protocol: target.protocol,
    hostname: target.hostname,
    port: target.port,
    method: req.method,
    path: targetPath(o.route, o.pathAndQuery),
    headers: upstreamHeaders(req, o, false),
    agent: agents.for(o.route),
    timeout: o.route.timeoutMs,
  });
  // Small request/response pairs on kept-alive sockets: no Nagle delay.
  upstream.setNoDelay(true);
  let done = false;
  let cut = false;
  const finish = () => {
    if (done) return;
    done = true;
    o.onClose?.();
  };
  upstream.on("response", (up) => {
    const headers: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(up.headers)) {
      if (v === undefined || HOP_BY_HOP.has(k) || k === "host") continue;
      headers[k] = v;
    }
    if (
      up.headers["transfer-encoding"] === undefined &&
      up.headers["content-length"] !== undefined
    ) {
      headers["content-length"] = up.headers["content-length"];
    }
    if (o.responseHeaders) for (const [k, v] of Object.entries(o.responseHeaders)) headers[k] = v;
    res.writeHead(up.statusCode ?? 502, up.statusMessage, headers);
    up.pipe(res);
    up.on("error", () => res.destroy());
  });
  upstream.on("timeout", () => {
    upstream.destroy();
    if (!res.headersSent)
      sendError(res, "ZT_UPSTREAM_TIMEOUT", `upstream ${o.route.name} timed out`);
    else res.destroy();
  });
  upstream.on("error", () => {
    if (cut) return;
    if (!res.headersSent)
      sendError(res, "ZT_UPSTREAM_UNAVAILABLE", `upstream ${o.route.name} is unavailable`);
    else res.destroy();
  });
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
    finish();
  });
  const limit = o.maxBodyBytes;
  // A declared Content-Length was checked before forwarding; a chunked body is counted.
  if (limit !== undefined && req.headers["transfer-encoding"] !== undefined) {
    let seen = 0;
    req.on("data", (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > limit && !cut) {
        cut = true;
        req.unpipe(upstream);
        upstream.destroy();
        if (!res.headersSent) {
          res.shouldKeepAlive = false;
          sendError(res, "ZT_PAYLOAD_TOO_LARGE", `request body exceeds ${limit} bytes`, { limit });
        } else res.destroy();
      }
    });
  }
  req.pipe(upstream);
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
