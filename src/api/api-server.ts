import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Server as TlsServer } from "node:tls";
import { keepCertificateFresh, type ListenerTls } from "../pki/listener-tls.js";
import type { AppContext } from "../app/index.js";
import { pkiService } from "../pki/index.js";
import type { SessionService } from "../session/index.js";
import { ApiAuthenticator, clientIp, resolveApiClientIp } from "./api-auth.js";
import { bearerToken, TrustedProxies } from "../proxy/index.js";
import { isZtError, ZtError, type ZtErrorCode } from "../core/errors.js";
import { storeFreshness } from "../events/staleness.js";
import { parseDuration } from "../core/duration.js";
import { limitConnectionsPerSource } from "../core/connection-limit.js";
import { isBanned } from "../audit/index.js";
import { registerAllApiRoutes } from "./routes/index.js";
import { hasOperatorToken, operatorToken, recordOperatorTokenRefusal } from "./routes/metrics.js";
import { JSON_SECURITY_HEADERS, rawJsonRefusal } from "../web/index.js";

/** Longest path parameter (a device id, a CA id) the router accepts. */
const MAX_PARAM_LENGTH = 512;
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

export interface ApiServerOptions {
  /** Extra readiness checks (e.g. the PEP's snapshot freshness). */
  readiness?: () => ReadinessReport | Promise<ReadinessReport>;
  /**
   * Serve HTTPS. With `clientCerts` other than "off" the listener asks for a client
   * certificate; a presented X.509-SVID is verified against zt's CA as the PEP does and
   * becomes the caller `Service::"spiffe://…"`. (The handshake accepts any certificate,
   * so a refusal is an explained, audited 401, never a silent fallback.)
   */
  tls?: ApiTlsOptions | undefined;
  /** The process's session service (`zt up` passes its own); created on demand otherwise. */
  sessions?: SessionService | undefined;
  /**
   * Metrics of other processes to add to `/metrics` (the PEP workers when
   * listen.proxy_workers > 1): each a prom-client registry as JSON.
   */
  extraMetrics?: (() => Promise<unknown[]>) | undefined;
  /**
   * Where the detail of an internal error (HTTP 500) goes, one line each; the client gets
   * only the stable code. Default: stderr.
   */
  log?: ((line: string) => void) | undefined;
}

/**
 * One process's readiness for `/readyz`. `checks` is what anyone may see: each check's
 * name and a stable kebab-case code (`ok` when it passes). `detail` (error text, file
 * paths, versions) is shown only to a caller with the operator token.
 */
export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, string>;
  detail: Record<string, unknown>;
}

/** TLS material for the API listener (see `apiListenerTls`). */
export interface ApiTlsOptions extends ListenerTls {
  /** How often to call `refresh` (default 5 minutes). */
  refreshEveryMs?: number | undefined;
}

/**
 * The control-plane API (for the CLI, agents and the console). Thin: parse, call the
 * capability, map the result. Errors are ZtError JSON with a stable code, never a stack.
 */
export async function createApiServer(
  ctx: AppContext,
  options: ApiServerOptions = {},
): Promise<FastifyInstance> {
  const tls = options.tls;
  // limits.header_timeout / request_timeout, as on the PEP: a client trickling its headers
  // or body is cut (Fastify's default request timeout is none at all).
  const headersTimeout = parseDuration(ctx.config.limits.header_timeout, "limits.header_timeout");
  const requestTimeout = parseDuration(ctx.config.limits.request_timeout, "limits.request_timeout");
  const timeouts = {
    headersTimeout,
    requestTimeout,
    // How often Node checks them (default 30 s): often enough to cut close to the limit.
    connectionsCheckingInterval: Math.max(250, Math.min(1_000, Math.floor(headersTimeout / 2))),
  };
  const app = Fastify({
    ...(tls
      ? {
          https: {
            key: tls.key,
            cert: tls.cert,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
            requestCert: tls.clientCerts !== "off",
            rejectUnauthorized: false,
            ...timeouts,
          },
        }
      : { http: timeouts }),
    requestTimeout,
    logger: false,
    bodyLimit: 1024 * 1024,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    trustProxy: false,
    // Requests Node's parser refuses (malformed, headers too large, too slow): zt's shape.
    clientErrorHandler: (err, socket) => {
      if (err.code === "ECONNRESET" || socket.destroyed) return;
      // A request already dispatched on this socket (a slow upload cut by
      // request_timeout) may have its answer under way: cut it.
      if ((socket as { _httpMessage?: unknown })._httpMessage) return void socket.destroy();
      const [status, code] =
        err.code === "HPE_HEADER_OVERFLOW"
          ? (["431 Request Header Fields Too Large", "ZT_HEADERS_TOO_LARGE"] as const)
          : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
            ? (["408 Request Timeout", "ZT_BAD_REQUEST"] as const)
            : (["400 Bad Request", "ZT_BAD_REQUEST"] as const);
      const body = JSON.stringify(new ZtError(code, status.slice(4)).toJSON());
      if (!socket.writable) return void socket.destroy();
      // Sent: close, whether or not the client ever ends its side.
      socket.end(rawJsonRefusal(status, body), () => socket.destroy());
    },
    // Refusals by the router itself (before any handler or the error handler): in zt's
    // shape with a stable code, not Fastify's own `FST_ERR_…` body.
    frameworkErrors: (err, _req, reply) => {
      const message =
        err.code === "FST_ERR_MAX_PARAM_LENGTH"
          ? `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`
          : err.code === "FST_ERR_BAD_URL"
            ? "malformed percent-encoding in the path"
            : "bad request";
      // Answered before the hooks exist: onSend's refusal headers are set here.
      void (reply as unknown as FastifyReply)
        .status(400)
        .headers(JSON_SECURITY_HEADERS)
        .send(new ZtError("ZT_BAD_REQUEST", message).toJSON());
    },
  });

  // Bodies are JSON. Fastify also reads text/plain, as a string: a JSON body sent with it
  // (fetch's default for a string body) was refused as "expected object, received string".
  app.removeContentTypeParser("text/plain");

  // limits.max_connections_per_source, as on the PEP (which shares this process, and so
  // its file descriptors): one address cannot hold every connection.
  limitConnectionsPerSource(app.server, ctx.config.limits.max_connections_per_source);

  const log = options.log ?? ((line: string) => void process.stderr.write(line + "\n"));
  /** An internal failure: the detail (paths, key ids, store errors) to the log, not the client. */
  const internal = (req: FastifyRequest, code: ZtErrorCode, detail: string) => {
    log(`zt: API ${req.method} ${req.routeOptions.url ?? "?"}: ${code}: ${detail}`);
    return new ZtError(code, "internal error; the detail is in the zt log").toJSON();
  };

  app.setErrorHandler((err, req, reply) => {
    if (isZtError(err)) {
      if (err.httpStatus === 500) {
        void reply.status(500).send(internal(req, err.code, err.message));
        return;
      }
      void reply.status(err.httpStatus).send(err.toJSON());
      return;
    }
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
      const code =
        e.statusCode === 413
          ? "ZT_PAYLOAD_TOO_LARGE"
          : e.statusCode === 415
            ? "ZT_UNSUPPORTED_MEDIA_TYPE"
            : e.statusCode === 404
              ? "ZT_NOT_FOUND"
              : "ZT_BAD_REQUEST";
      const message =
        e.statusCode === 415
          ? "the body must be JSON, sent with Content-Type: application/json"
          : (e.message ?? "bad request");
      void reply.status(e.statusCode).send(new ZtError(code, message).toJSON());
      return;
    }
    void reply.status(500).send(internal(req, "ZT_INTERNAL", e.message ?? String(err)));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply
      .status(404)
      .send(
        new ZtError(
          "ZT_NOT_FOUND",
          `no such endpoint: ${req.method} ${req.url.split("?")[0]}`,
        ).toJSON(),
      );
  });

  // Every answer, never cached and never read as another type: a refusal names its caller
  // and their request, and a success may carry credentials (an SVID and its chain, an SSH
  // certificate, a device binding); the public ones (CRL, bundle) lose nothing by it.
  app.addHook("onSend", (_req, reply, payload, done) => {
    void reply.headers(JSON_SECURITY_HEADERS);
    done(null, payload);
  });

  // api.trusted_proxies: the caller's address, once per request, before anything uses it
  // (`clientIp`). Read from ctx.config at each request, so a reload (SIGHUP) applies it.
  let proxiesFrom = ctx.config.api.trusted_proxies;
  const proxies = new TrustedProxies(proxiesFrom, "api.trusted_proxies");
  app.addHook("onRequest", async (req) => {
    const now = ctx.config.api.trusted_proxies;
    if (now !== proxiesFrom) {
      proxies.replace(now);
      proxiesFrom = now;
    }
    resolveApiClientIp(req, proxies);
  });

  // A source banned by the alert rules or an operator is refused here as at the PEP:
  // sign-in lockouts aside, the API signs SSH certificates and SVIDs, and the `api-ip`
  // jail bans guessers of its join tokens and session tokens. The source is the one every
  // API audit record names (`clientIp`), so a ban falls on the address that was counted.
  app.addHook("onRequest", async (req) => {
    if (isBanned(clientIp(req), ctx.clock.now()))
      throw new ZtError("ZT_BANNED", "this source address is temporarily banned", {
        reason: "source-banned",
      });
  });

  // No identifier zt makes (device ids, CA ids: base64url, hex) holds a control character,
  // and PostgreSQL text refuses a NUL outright (an internal error, not "no such"): a path
  // parameter holding one names nothing, for every route, before any lookup.
  app.addHook("onRequest", async (req) => {
    for (const [name, value] of Object.entries((req.params ?? {}) as Record<string, unknown>))
      if (typeof value === "string" && CONTROL_CHARACTER.test(value))
        throw new ZtError("ZT_NOT_FOUND", `no such ${name}: it holds a control character`);
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  // The operator token (audit.metrics_token_file) opens /readyz's detail as it does /metrics.
  const readyzToken = operatorToken(ctx);
  app.get("/readyz", async (req, reply) => {
    const staleMs = ctx.events.lastContactMs();
    const extra: ReadinessReport = (await options.readiness?.()) ?? {
      ready: true,
      checks: {},
      detail: {},
    };
    // degraded: deciding from the last good state; stale (max_staleness): PEPs deny all.
    const store = storeFreshness(staleMs, {
      degradedAfterMs: 5_000,
      maxStalenessMs: ctx.config.maxStalenessMs,
    });
    const ready = store === "fresh" && extra.ready;
    void reply.status(ready ? 200 : 503);
    const status = ready ? "ready" : "degraded";
    const checks = { store: store === "fresh" ? "ok" : `store-${store}`, ...extra.checks };
    // Anyone (a load balancer): the verdict and the stable check codes, nothing that
    // names a file, an error or a version.
    if (!hasOperatorToken(req.headers.authorization, readyzToken)) {
      // A wrong token is a guess whether the detail is shown or not: audited and counted
      // (the api-ip jail) as on /metrics, or /readyz would be the place to guess freely.
      if (readyzToken !== undefined && bearerToken(req.headers.authorization))
        recordOperatorTokenRefusal(ctx, req, "/readyz");
      return { status, checks };
    }
    return {
      status,
      checks,
      store,
      stale: store === "stale",
      store_last_contact_ms: staleMs,
      ...extra.detail,
    };
  });

  const auth = new ApiAuthenticator(ctx, {
    clientCerts: tls ? tls.clientCerts : "off",
    ...(options.sessions ? { sessions: options.sessions } : {}),
  });
  app.addHook("onClose", async () => auth.close());
  if (tls?.refresh) {
    const fresh = keepCertificateFresh(app.server as unknown as TlsServer, tls, tls.refreshEveryMs);
    app.addHook("onClose", async () => fresh.stop());
  }
  // Client SVIDs are verified against the loaded CAs and deny list; load them now
  // (until then verification fails closed). A store without a CA has no SVIDs to accept.
  if (tls && tls.clientCerts !== "off") await pkiService(ctx).catch(() => undefined);

  registerAllApiRoutes(app as unknown as FastifyInstance, ctx, {
    auth,
    extraMetrics: options.extraMetrics,
  });
  return app as unknown as FastifyInstance;
}
