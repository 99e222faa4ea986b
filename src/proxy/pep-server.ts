import { countRefused, countShed, durableBeforeForward, isBanned } from "../audit/index.js";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { AppContext } from "../app/index.js";
import { isZtError, ZtError, type ZtErrorCode } from "../core/errors.js";
import { normalizeIp } from "../core/cidr.js";
import { limitConnectionsPerSource } from "../core/connection-limit.js";
import { parseDuration } from "../core/duration.js";
import type { ResolvedRoute, ZtConfig } from "../config/index.js";
import type { IdentityService } from "../identity/index.js";
import type { SessionService } from "../session/index.js";
import type { EntitySnapshot } from "../session/entity-snapshot.js";
import { rawJsonRefusal, renderLoginPage } from "../web/index.js";
import type { AssertionSigner } from "./assertion.js";
import {
  assertionClaims,
  authenticateClientCert,
  byBearer,
  cookieCount,
  createAuthenticator,
  factsFor,
  isService,
  liveKeyOf,
  type Authenticated,
  type AuthOutcome,
  type ClientCertMode,
} from "./authenticate.js";
import { canonicalHost, canonicalizeRequest } from "./canonical-request.js";
import { isSameOriginRequest, webSocketOriginAllowed, type RequestOrigin } from "./same-origin.js";
import {
  recordRefusal,
  type Decision,
  type DecisionFacts,
  type DecisionPoint,
  type Refusal,
} from "./decision-point.js";
import {
  createForwardAuthDecider,
  createForwardAuthHandler,
  policyDeniedAnswer,
  refusalAnswer,
  sendForwardAuthAnswer,
  sendRecentDenial,
  type ForwardAuthDeps,
} from "./forward-auth.js";
import { createSpoaServer, type SpoaServer } from "./spoa-agent.js";
import { resolveClientIp, TrustedProxies } from "./forwarded-headers.js";
import { RecentDenials } from "./recent-denials.js";
import {
  auditCut,
  LiveConnections,
  revocationLink,
  type LiveConnection,
} from "./live-connections.js";
import {
  connectionNamesProtected,
  forwardHttp,
  forwardUpgrade,
  UpstreamAgents,
  type ForwardOptions,
} from "./forward.js";
import {
  headerLineCount,
  parseFormFields,
  readBody,
  cookieValues,
  safeReturnTo,
  sendError,
  sendHtml,
  sendJson,
  sendPayloadTooLarge,
  wantsHtml,
} from "./http-util.js";
import { RouteTable } from "./route-table.js";

export interface PepServices {
  ctx: AppContext;
  identity: IdentityService;
  sessions: SessionService;
  snapshot: EntitySnapshot;
  decisions: DecisionPoint;
  assertions: AssertionSigner;
}

export interface PepOptions {
  tls?:
    | {
        key: string | Buffer;
        cert: string | Buffer;
        ca?: string | Buffer | undefined;
        requestCert?: boolean;
        /**
         * Client certificates (mTLS): a verified SVID becomes the principal
         * `Service::"spiffe://…"`. Defaults to "optional" when requestCert, else "off".
         */
        clientCerts?: ClientCertMode;
      }
    | undefined;
  /** zt's own SVID, presented to https upstreams of routes with `upstream_mtls: true`. */
  upstreamTls?: { key: string; cert: string; ca: string } | undefined;
  /** Identifies this PEP in audit records. */
  pepId?: string;
}

export interface Pep {
  readonly server: http.Server;
  listen(host: string, port: number): Promise<AddressInfo>;
  /** Starts the SPOE agent for HAProxy (`forward_auth.spoa_listen`). */
  listenSpoa(host: string, port: number): Promise<AddressInfo>;
  close(): Promise<void>;
  /** Live (streaming / upgraded) connections, for re-evaluation and metrics. */
  readonly live: LiveConnections;
  /** Replaces the SVID presented to `upstream_mtls` upstreams (after renewal). */
  setUpstreamTls(t: { key: string; cert: string; ca: string }): void;
  /**
   * Applies a reloaded config's per-request settings (`RELOADABLE_KEYS`: routes,
   * trusted_proxies, limits.max_body_bytes, limits.reload_grace, forward_auth.headers) to
   * new requests. Proxied exchanges under way on a route the reload removed or changed
   * (upgraded connections such as WebSockets, streaming responses, requests still in
   * flight alike) may run on for `limits.reload_grace`; those still open then are cut
   * (`route-removed`, `route-changed`); with a grace of 0 they are cut at once. An
   * upstream no route uses any more has its pool closed once its requests are done.
   * Unchanged routes keep their object (`planConfigReload`): a new object is a change.
   */
  reconfigure(config: PepReloadable): ReloadCut;
}

/** What a reload does to the exchanges under way on the routes it removed or changed. */
export interface ReloadCut {
  /** Cut at once (`limits.reload_grace` is 0). */
  cut: number;
  /** Left to finish within `limits.reload_grace`. */
  draining: number;
  /** Resolves, once the grace is over, to how many of the draining were still open and cut. */
  drained: Promise<number>;
}

/** The settings of a config that a running PEP applies on reload. */
export type PepReloadable = Pick<
  ZtConfig,
  "routes" | "trusted_proxies" | "limits" | "forward_auth"
>;

/**
 * The identity-aware reverse proxy (a NIST SP 800-207 Policy Enforcement Point).
 * Every request: canonicalise → match route → authenticate → decide in process →
 * forward with a signed assertion, or refuse with a decision id.
 */
export function createPep(s: PepServices, options: PepOptions = {}): Pep {
  const { ctx } = s;
  const cfg = ctx.config;
  const routes = new RouteTable(cfg.routes);
  /** The routes in force, to tell which a reload removed or changed. */
  let inForce: readonly ResolvedRoute[] = cfg.routes;
  const agents = new UpstreamAgents(options.upstreamTls);
  const secure = options.tls !== undefined;
  const clientCerts: ClientCertMode = !options.tls
    ? "off"
    : (options.tls.clientCerts ?? (options.tls.requestCert ? "optional" : "off"));
  const pepId = options.pepId ?? "pep-1";
  const cookieName = cfg.session.cookie_name;
  /** A `__Secure-` or `__Host-` name (prefixes match case-insensitively, RFC 6265bis §4.1.3). */
  const cookieNeedsHttps = /^__(secure|host)-/i.test(cookieName);
  const live = new LiveConnections(auditCut(ctx.audit));
  const trusted = new TrustedProxies(cfg.trusted_proxies);
  const denials = new RecentDenials();
  let maxBody = cfg.limits.max_body_bytes;
  let reloadGraceMs = parseDuration(cfg.limits.reload_grace);
  /** Grace timers of reloads whose draining exchanges are not cut yet (cleared on close). */
  const graceTimers = new Set<NodeJS.Timeout>();
  // audit.durable_before_forward: which allowed requests wait for their decision record.
  const durableFor = durableBeforeForward(cfg.audit);
  /** Allowed ⇒ recorded: true once the decision record is committed (false: it could not be). */
  const recorded = () =>
    ctx.audit.whenDurable().then(
      () => true,
      () => false,
    );
  const authenticate = createAuthenticator(s.sessions, s.snapshot, cookieName);
  const forwardAuthDeps: ForwardAuthDeps = {
    routes,
    trusted,
    audit: ctx.audit,
    convention: cfg.forward_auth.headers,
    authenticate,
    sessionCookieName: cookieName,
    decisions: s.decisions,
    assertions: s.assertions,
    denials,
    clock: ctx.clock,
    pepId: `${pepId}/forward-auth`,
    durableFor,
    recorded,
  };
  const authz = createForwardAuthHandler(forwardAuthDeps);
  const forwardAuthOn = cfg.forward_auth.enabled;
  const refusalDeps = { audit: ctx.audit, clock: ctx.clock, pepId };
  // HAProxy's SPOE (no Lua): the same decision, its answer carried in SPOP variables.
  let spoa: SpoaServer | undefined;
  const headersTimeout = parseDuration(cfg.limits.header_timeout);

  const serverOptions: http.ServerOptions = {
    maxHeaderSize: cfg.limits.max_header_bytes,
    requestTimeout: parseDuration(cfg.limits.request_timeout),
    headersTimeout,
    keepAliveTimeout: 5_000,
    // Node checks the header/request timeouts on this interval (default 30 s): check
    // often enough that a slow client is cut close to header_timeout.
    connectionsCheckingInterval: Math.max(250, Math.min(1_000, Math.floor(headersTimeout / 2))),
  };
  const tlsOptions = options.tls
    ? {
        key: options.tls.key,
        cert: options.tls.cert,
        ...(options.tls.ca !== undefined ? { ca: options.tls.ca } : {}),
        // zt verifies the SVID itself (verifyClientCertificate): the handshake accepts
        // any certificate so a refusal is an explained, audited HTTP answer.
        requestCert: clientCerts !== "off",
        rejectUnauthorized: false,
      }
    : undefined;
  const server: http.Server = tlsOptions
    ? (https.createServer({ ...serverOptions, ...tlsOptions }) as unknown as http.Server)
    : http.createServer(serverOptions);

  limitConnectionsPerSource(server, cfg.limits.max_connections_per_source);
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    // A request already dispatched on this socket (a slow upload cut by request_timeout):
    // it was decided, not refused, and its answer may be under way — cut, no record.
    const current = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
    if (current) return socket.destroy();
    const status =
      err.code === "HPE_HEADER_OVERFLOW"
        ? "431 Request Header Fields Too Large"
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? "408 Request Timeout"
          : "400 Bad Request";
    const code = status.startsWith("431") ? "ZT_HEADERS_TOO_LARGE" : "ZT_BAD_REQUEST";
    const reason = clientErrorReason(err.code, err.message);
    const tcp = socket as Partial<Socket>;
    // A connection that sent nothing before the header timeout (a browser's speculative
    // preconnect, a port check) is closed without a record: no request was refused.
    const silent = err.code === "ERR_HTTP_REQUEST_TIMEOUT" && tcp.bytesRead === 0;
    // The request was never parsed: the peer is the only address known. Behind a trusted
    // proxy it is the proxy's, not the client's: recorded as `peer`, with no source
    // address for the alert rules to count (and ban the proxy for its clients).
    const peer = tcp.remoteAddress === undefined ? "" : normalizeIp(tcp.remoteAddress);
    const viaProxy = trusted.has(peer);
    // Nothing is recorded for a banned source, or while the audit log is backlogged:
    // malformed requests must not push real decisions out of its buffer.
    const unrecorded = silent || ctx.audit.backlogged || isBanned(peer, ctx.clock.now());
    if (unrecorded && !silent) countRefused(reason);
    const decisionId = unrecorded
      ? undefined
      : recordRefusal(ctx, {
          reason,
          code,
          sourceIp: viaProxy ? "" : peer,
          ...(viaProxy ? { peer } : {}),
          pep: pepId,
        });
    const body = JSON.stringify({
      error: { code, message: status.slice(4), reason, decision_id: decisionId },
    });
    const idLine = decisionId === undefined ? "" : `X-Zt-Decision-Id: ${decisionId}\r\n`;
    socket.end(rawJsonRefusal(status, body, idLine));
  });

  /** Records a parsed request refused before any decision; returns its decision id. */
  function recordRequestRefusal(
    req: IncomingMessage,
    clientIp: string,
    code: ZtErrorCode,
    reason: string,
    host?: string,
    detail?: string,
    who?: Pick<Refusal, "subject" | "sessionId" | "route">,
  ): string {
    return recordRefusal(ctx, {
      reason,
      detail,
      code,
      sourceIp: clientIp,
      pep: pepId,
      method: req.method,
      target: req.url,
      host,
      ...who,
    });
  }

  /**
   * Refuses a request before any decision (ambiguous, malformed, no route): audited as
   * `request.refused` under a decision id the client gets back, like a denial's.
   */
  function refuseRequest(
    req: IncomingMessage,
    res: ServerResponse,
    clientIp: string,
    code: ZtErrorCode,
    message: string,
    reason: string,
    host?: string,
    detail?: string,
  ): void {
    sendForwardAuthAnswer(
      res,
      refusalAnswer(refusalDeps, {
        code,
        message,
        reason,
        detail,
        sourceIp: clientIp,
        method: req.method,
        target: req.url,
        host,
      }),
    );
  }

  // Continuous verification: a revoked session loses its live connections at once, each
  // cut audited (`session.cut`) with the revocation it came from.
  const offRevoked = s.sessions.onRevoked((sessionId, reason, origin) => {
    s.assertions.forgetSession(sessionId);
    live.cutSession(sessionId, {
      reason: "session-revoked",
      cause: "session-revoked",
      link: { revoke_reason: reason, ...revocationLink(origin) },
    });
  });
  // A revoked SVID: new requests are refused by the PKI deny list; cut live ones here.
  const offCertRevoked = ctx.events.subscribe((e) => {
    if (e.kind !== "cert.revoked" || e.data["kind"] !== "x509") return;
    const serials = Array.isArray(e.data["serials"]) ? (e.data["serials"] as unknown[]) : [];
    const set = new Set(serials.filter((x): x is string => typeof x === "string"));
    if (set.size === 0) return;
    const reason = e.data["reason"];
    const revokeId = e.data["revoke_id"];
    // A resync's restatement of every revoked certificate names no one revocation.
    const heard = e.data["restated"] !== true;
    live.cutWhere((c) => c.certSerial !== undefined && set.has(c.certSerial), {
      reason: "cert-revoked",
      cause: "svid-revoked",
      link: heard
        ? {
            ...(typeof reason === "string" ? { revoke_reason: reason } : {}),
            ...revocationLink({
              revokeId: typeof revokeId === "string" ? revokeId : undefined,
              eventSeq: e.seq,
            }),
          }
        : undefined,
    });
  });

  /**
   * Before failing closed for staleness, try the store once (one attempt shared by
   * concurrent requests, at most 1 s): a bus that merely has not polled since the
   * clock moved is not a lost control plane. Only on the already-failing path.
   */
  let contact: Promise<void> | undefined;
  function staleNow(): boolean {
    return s.decisions.failsClosedWhenStale && s.decisions.storeFreshness() === "stale";
  }
  async function ensureContact(): Promise<void> {
    const bus = ctx.events as { catchUp?: () => Promise<void> };
    if (typeof bus.catchUp !== "function") return;
    contact ??= Promise.race([
      bus.catchUp().catch(() => undefined),
      new Promise<void>((r) => setTimeout(r, 1_000).unref()),
    ]).finally(() => (contact = undefined));
    await contact;
  }

  /** The subject of a request: a verified client SVID (mTLS), else a session. */
  function authenticateRequest(req: IncomingMessage): AuthOutcome | Promise<AuthOutcome> {
    // Not async: a plain value when known in memory, else the authenticator's promise as-is.
    if (clientCerts !== "off") {
      const c = authenticateClientCert(ctx, req.socket, clientCerts, ctx.clock.now());
      if (c) return c;
    }
    return authenticate(req.headers);
  }

  /**
   * Two session cookies (however the Cookie headers split them): which one is meant is a
   * guess, and taking the first lets script on any app of the site sign a user in as
   * someone else — a cookie with a longer Path is sent first (RFC 6265 §5.4). Refused,
   * as forward-auth refuses it.
   */
  function duplicateSessionCookie(req: IncomingMessage): boolean {
    return cookieCount(req.headers.cookie, cookieName) > 1;
  }

  /** The refusal of a request with two session cookies: audited, 403 with the way out. */
  function refuseDuplicateCookie(
    req: IncomingMessage,
    res: ServerResponse,
    clientIp: string,
    route: ResolvedRoute,
    host: string,
  ): void {
    const reason = "session-cookie-duplicate";
    const answer = refusalAnswer(
      { ...refusalDeps, denials },
      {
        code: "ZT_REQUEST_AMBIGUOUS",
        message: "the request carries two session cookies: sign out, then sign in again",
        reason,
        sourceIp: clientIp,
        method: req.method,
        target: req.url,
        host,
        status: 403,
      },
    );
    if (!wantsHtml(req)) return sendForwardAuthAnswer(res, answer);
    const decisionId = String(answer.headers["x-zt-decision-id"]);
    sendForwardAuthAnswer(res, policyDeniedAnswer({ decisionId, reason, route: route.name }, true));
  }

  /** A presented client certificate was refused (or required and missing): audited. */
  function certRefused(
    reason: string,
    clientIp: string,
    route: ResolvedRoute,
  ): { status: number; body: object } {
    ctx.audit.record({
      kind: "authn.mtls",
      outcome: "deny",
      sourceIp: clientIp,
      route: route.name,
      reason,
      data: { pep: pepId },
    });
    return {
      status: reason === "cert-revoked" ? 403 : 401,
      body: {
        error: {
          code: "ZT_CLIENT_CERT_REFUSED",
          message:
            reason === "client-cert-required"
              ? "a client certificate (SVID) is required"
              : "client certificate refused",
          reason,
        },
      },
    };
  }

  /** The client address, from X-Forwarded-For only when the peer is a trusted proxy. */
  function clientIpOf(req: IncomingMessage): string {
    return resolveClientIp(req.socket.remoteAddress ?? "", req.headers["x-forwarded-for"], trusted);
  }

  /** TLS here, or a trusted proxy says the client used https (Secure cookies). */
  function isSecure(req: IncomingMessage): boolean {
    if (secure) return true;
    const proto = req.headers["x-forwarded-proto"];
    return proto === "https" && trusted.has(req.socket.remoteAddress ?? "");
  }

  /** Two Host headers: which one did the client mean? Refuse (Node keeps only the first). */
  function duplicateHost(req: IncomingMessage): boolean {
    // rawHeaders, not headersDistinct: that getter builds a new object per request.
    return headerLineCount(req.rawHeaders, "host") > 1;
  }

  /**
   * Two Authorization headers: zt would authenticate the first (Node keeps only it) while
   * the app, or a proxy before it, may read another. Refused, as forward-auth refuses them.
   */
  function duplicateAuthorization(req: IncomingMessage): boolean {
    return headerLineCount(req.rawHeaders, "authorization") > 1;
  }

  function unauthenticated(
    req: IncomingMessage,
    res: ServerResponse,
    code: string,
    reason: string,
    returnTo: string,
  ): void {
    if (wantsHtml(req) && (req.method === "GET" || req.method === "HEAD")) {
      res.writeHead(302, {
        location: `/.zt/login?rd=${encodeURIComponent(returnTo)}`,
        "cache-control": "no-store",
      });
      res.end();
      return;
    }
    sendJson(
      res,
      401,
      { error: { code, message: "authentication required", reason, login: "/.zt/login" } },
      { "www-authenticate": 'Bearer realm="zt"' },
    );
  }

  function denied(
    req: IncomingMessage,
    res: ServerResponse,
    route: ResolvedRoute,
    d: Decision,
    returnTo: string,
  ): void {
    if (d.result.verdict === "step-up") {
      if (wantsHtml(req) && (req.method === "GET" || req.method === "HEAD")) {
        res.writeHead(302, {
          location: `/.zt/login?step_up=1&rd=${encodeURIComponent(returnTo)}`,
          "cache-control": "no-store",
          "x-zt-decision-id": d.decisionId,
        });
        res.end();
        return;
      }
      sendJson(
        res,
        401,
        {
          error: {
            code: "ZT_STEP_UP_REQUIRED",
            message: "re-authenticate with MFA, then retry",
            decision_id: d.decisionId,
            reason: d.result.reason,
            login: "/.zt/login?step_up=1",
          },
        },
        { "x-zt-decision-id": d.decisionId },
      );
      return;
    }
    denials.add({
      decisionId: d.decisionId,
      reason: d.result.reason,
      route: route.name,
      verdict: "deny",
    });
    sendForwardAuthAnswer(
      res,
      policyDeniedAnswer(
        { decisionId: d.decisionId, reason: d.result.reason, route: route.name },
        wantsHtml(req),
      ),
    );
  }

  /** The signed assertion for an allowed request: from the signer's cache without a promise when it can. */
  function assertionFor(
    route: ResolvedRoute,
    auth: Authenticated,
    d: Decision,
  ): string | Promise<string> {
    const claims = assertionClaims(auth, route.name, d.decisionId);
    return s.assertions.cached(claims) ?? s.assertions.sign(claims);
  }

  function forwardOptions(
    route: ResolvedRoute,
    auth: Authenticated,
    d: Decision,
    pathAndQuery: string,
    clientIp: string,
    host: string,
    assertion: string,
  ): ForwardOptions {
    return {
      route,
      pathAndQuery,
      clientIp,
      originalHost: host,
      secure,
      sessionCookieName: cookieName,
      dropAuthorization: byBearer(auth),
      maxBodyBytes: maxBody,
      add: { "x-zt-assertion": assertion, "x-zt-decision-id": d.decisionId },
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const clientIp = clientIpOf(req);
    // Banned sources (alert rules, fail2ban model) are refused before any other work.
    if (isBanned(clientIp, ctx.clock.now())) {
      sendError(res, "ZT_BANNED", "this source address is temporarily banned", {
        reason: "source-banned",
      });
      return;
    }
    // Fail closed: nothing is decided (or allowed) that the audit log may not record.
    if (ctx.audit.backlogged) {
      countShed();
      res.setHeader("retry-after", "1");
      sendError(res, "ZT_UNAVAILABLE", "the audit log is catching up: try again shortly", {
        reason: "audit-backlog",
      });
      return;
    }
    if (duplicateHost(req)) {
      refuseRequest(
        req,
        res,
        clientIp,
        "ZT_REQUEST_AMBIGUOUS",
        "request refused: more than one Host header",
        "host-duplicate",
      );
      return;
    }
    if (connectionNamesProtected(req)) {
      // Request smuggling: "Connection: content-length" asks a proxy to drop the framing.
      res.shouldKeepAlive = false;
      refuseRequest(
        req,
        res,
        clientIp,
        "ZT_REQUEST_AMBIGUOUS",
        "request refused: Connection names Content-Length, Transfer-Encoding or Host",
        "connection-names-framing",
      );
      return;
    }
    const te = req.headers["transfer-encoding"];
    if (te !== undefined && !ONLY_CHUNKED.test(te)) {
      // Node's parser takes "gzip, chunked" and de-chunks it, leaving the gzip: forwarded
      // as plain chunked, the app would read compressed bytes as the body.
      res.shouldKeepAlive = false;
      refuseRequest(
        req,
        res,
        clientIp,
        "ZT_REQUEST_AMBIGUOUS",
        `request refused: Transfer-Encoding "${te}" (only chunked is forwarded)`,
        "transfer-encoding-unsupported",
      );
      return;
    }
    const canon = canonicalizeRequest(req.url ?? "/", req.headers.host);
    if (!canon.ok) {
      refuseRequest(
        req,
        res,
        clientIp,
        "ZT_REQUEST_AMBIGUOUS",
        `request refused: ${canon.detail}`,
        canon.reason,
        undefined,
        canon.detail,
      );
      return;
    }
    const { host, path, query } = canon;
    if (path === "/.zt/authz") {
      if (!forwardAuthOn) {
        refuseRequest(
          req,
          res,
          clientIp,
          "ZT_NOT_FOUND",
          "forward-auth is off here (forward_auth.enabled: false)",
          "forward-auth-disabled",
          host,
        );
        return;
      }
      // The forward-auth hot path: dispatched here, before the other internal paths.
      await authz(req, res, query, clientIp);
      return;
    }
    // After /.zt/authz: a check's Authorization headers are the client's, refused there
    // with a 403 nginx can show.
    if (duplicateAuthorization(req)) {
      refuseRequest(
        req,
        res,
        clientIp,
        "ZT_REQUEST_AMBIGUOUS",
        "request refused: more than one Authorization header",
        "authorization-duplicate",
        host,
      );
      return;
    }
    if (path.startsWith("/.zt/") || path === "/.well-known/zt/jwks.json") {
      await handleInternal(req, res, host, path, query, clientIp);
      return;
    }
    const route = routes.match(host, path);
    if (!route) {
      refuseRequest(
        req,
        res,
        clientIp,
        "ZT_ROUTE_NOT_FOUND",
        `no route for host ${host}`,
        "no-route",
        host,
      );
      return;
    }
    if (duplicateSessionCookie(req)) return refuseDuplicateCookie(req, res, clientIp, route, host);
    const returnTo = path + query;
    const pending = authenticateRequest(req);
    // In memory (the usual case): no await, no microtask hop.
    const a = pending instanceof Promise ? await pending : pending;
    if (!a.ok) {
      if (a.code === "ZT_CLIENT_CERT_REFUSED") {
        const r = certRefused(a.reason, clientIp, route);
        sendJson(res, r.status, r.body);
        return;
      }
      unauthenticated(req, res, a.code, a.reason, returnTo);
      return;
    }
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > maxBody) {
      sendError(res, "ZT_PAYLOAD_TOO_LARGE", `request body exceeds ${maxBody} bytes`, {
        limit: maxBody,
      });
      return;
    }
    const facts = factsFor({
      route,
      auth: a.auth,
      method: req.method ?? "GET",
      host,
      path,
      clientIp,
      now: ctx.clock.now(),
      pep: pepId,
    });
    // Sync check first: the usual (fresh) path takes no extra await.
    if (staleNow()) await ensureContact();
    const d = s.decisions.decide(facts);
    if (d.result.verdict !== "allow") {
      denied(req, res, route, d, returnTo);
      return;
    }
    // No await between decide() and this: the record waited on is this decision's.
    if (durableFor?.(req.method ?? "GET") && !(await recorded())) {
      sendError(
        res,
        "ZT_UNAVAILABLE",
        "the audit log could not record this decision: try again shortly",
        {
          reason: "audit-unavailable",
        },
      );
      return;
    }
    const signed = assertionFor(route, a.auth, d);
    const fo = forwardOptions(
      route,
      a.auth,
      d,
      path + query,
      clientIp,
      req.headers.host ?? host,
      typeof signed === "string" ? signed : await signed,
    );
    const extra = s.decisions.responseHeaders(facts);
    if (extra) fo.responseHeaders = extra;
    fo.onClose = live.add(liveEntry(a.auth, facts, d.decisionId, () => res.destroy()));
    forwardHttp(req, res, agents, fo);
  }

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const refuse = (status: string, body: object, decisionId?: string) => {
      if (socket.destroyed) return;
      const text = JSON.stringify(body);
      const idLine = decisionId === undefined ? "" : `X-Zt-Decision-Id: ${decisionId}\r\n`;
      // Closed once written: a client keeping its half open holds nothing here.
      socket.end(rawJsonRefusal(status, text, idLine), () => socket.destroy());
    };
    const clientIp = clientIpOf(req);
    if (isBanned(clientIp, ctx.clock.now()))
      return refuse("403 Forbidden", { error: { code: "ZT_BANNED", reason: "source-banned" } });
    if (ctx.audit.backlogged) {
      countShed();
      return refuse("503 Service Unavailable", {
        error: { code: "ZT_UNAVAILABLE", reason: "audit-backlog" },
      });
    }
    /** A refusal before any decision: audited, its decision id in the answer. */
    const refuseAudited = (
      status: string,
      code: ZtErrorCode,
      reason: string,
      host?: string,
      detail?: string,
      who?: Pick<Refusal, "subject" | "sessionId" | "route">,
    ) => {
      const decisionId = recordRequestRefusal(req, clientIp, code, reason, host, detail, who);
      refuse(status, { error: { code, reason, decision_id: decisionId } }, decisionId);
    };
    if (duplicateHost(req))
      return refuseAudited("400 Bad Request", "ZT_REQUEST_AMBIGUOUS", "host-duplicate");
    if (connectionNamesProtected(req))
      return refuseAudited("400 Bad Request", "ZT_REQUEST_AMBIGUOUS", "connection-names-framing");
    const canon = canonicalizeRequest(req.url ?? "/", req.headers.host);
    if (!canon.ok)
      return refuseAudited(
        "400 Bad Request",
        "ZT_REQUEST_AMBIGUOUS",
        canon.reason,
        undefined,
        canon.detail,
      );
    if (duplicateAuthorization(req))
      return refuseAudited(
        "400 Bad Request",
        "ZT_REQUEST_AMBIGUOUS",
        "authorization-duplicate",
        canon.host,
      );
    const route = routes.match(canon.host, canon.path);
    if (!route) return refuseAudited("404 Not Found", "ZT_ROUTE_NOT_FOUND", "no-route", canon.host);
    if (!route.websockets)
      return refuse("403 Forbidden", {
        error: { code: "ZT_POLICY_DENIED", reason: "websockets-disabled" },
      });
    // Only a WebSocket handshake (RFC 6455 §4.1: GET, `Upgrade: websocket`): any other
    // protocol (h2c …) would tunnel later requests past per-request policy.
    if (req.method !== "GET" || req.headers.upgrade?.trim().toLowerCase() !== "websocket")
      return refuse("400 Bad Request", {
        error: { code: "ZT_BAD_REQUEST", reason: "upgrade-not-websocket" },
      });
    if (duplicateSessionCookie(req))
      return refuseAudited(
        "403 Forbidden",
        "ZT_REQUEST_AMBIGUOUS",
        "session-cookie-duplicate",
        canon.host,
      );
    const a = await authenticateRequest(req);
    if (!a.ok) {
      if (a.code === "ZT_CLIENT_CERT_REFUSED") {
        const r = certRefused(a.reason, clientIp, route);
        return refuse(r.status === 403 ? "403 Forbidden" : "401 Unauthorized", r.body);
      }
      return refuse("401 Unauthorized", { error: { code: a.code, reason: a.reason } });
    }
    // Cross-Site WebSocket Hijacking: a browser sends the session cookie with a WebSocket
    // any page opens — one on a sibling subdomain is same-site, so SameSite=Lax does not
    // stop it — and no CORS applies. A browser's handshake (it has an Origin, RFC 6455
    // §4.1) signed in by the cookie must come from this origin or one the route lists.
    // Not a Bearer token or an mTLS certificate: a page cannot make a browser send those.
    const origin = req.headers.origin;
    if (
      origin !== undefined &&
      !isService(a.auth) &&
      a.auth.authenticatedBy === "session" &&
      !webSocketOriginAllowed(origin, requestOrigin(req, canon.host), route.websocket_origins)
    )
      return refuseAudited(
        "403 Forbidden",
        "ZT_CSRF",
        "websocket-origin",
        canon.host,
        `Origin ${JSON.stringify(origin.slice(0, 200))} is neither route "${route.name}"'s own origin nor in its websocket_origins`,
        { subject: a.auth.user.name, sessionId: a.auth.session.id, route: route.name },
      );
    const facts = factsFor({
      route,
      auth: a.auth,
      method: req.method ?? "GET",
      host: canon.host,
      path: canon.path,
      clientIp,
      now: ctx.clock.now(),
      pep: pepId,
    });
    // Sync check first: the usual (fresh) path takes no extra await.
    if (staleNow()) await ensureContact();
    const d = s.decisions.decide(facts);
    if (d.result.verdict !== "allow") {
      denials.add({
        decisionId: d.decisionId,
        reason: d.result.reason,
        route: route.name,
        verdict: d.result.verdict,
      });
      return refuse(d.result.verdict === "step-up" ? "401 Unauthorized" : "403 Forbidden", {
        error: {
          code: d.result.verdict === "step-up" ? "ZT_STEP_UP_REQUIRED" : "ZT_POLICY_DENIED",
          decision_id: d.decisionId,
          reason: d.result.reason,
        },
      });
    }
    if (durableFor?.(req.method ?? "GET") && !(await recorded()))
      return refuse("503 Service Unavailable", {
        error: { code: "ZT_UNAVAILABLE", reason: "audit-unavailable" },
      });
    const fo = forwardOptions(
      route,
      a.auth,
      d,
      canon.path + canon.query,
      clientIp,
      req.headers.host ?? canon.host,
      await assertionFor(route, a.auth, d),
    );
    const entry = liveEntry(a.auth, facts, d.decisionId, () => socket.destroy());
    if (!isService(a.auth)) {
      // Frames either way are activity: the re-evaluator cuts the socket once
      // session.idle_timeout passes without any (a timer armed for that deadline), and
      // they keep the session from going idle.
      const sessionId = a.auth.session.id;
      entry.lastActiveAt = ctx.clock.now();
      fo.onActivity = () => {
        entry.lastActiveAt = ctx.clock.now();
        s.sessions.touch(sessionId);
      };
    }
    fo.onClose = live.add(entry);
    forwardUpgrade(req, socket, head, fo, agents);
  }

  /**
   * A live connection's entry. Its absolute deadline is the session's expiry, or for a
   * service the client certificate's notAfter: a short-lived SVID must not be outlived
   * by a WebSocket or a streaming response opened with it.
   */
  function liveEntry(
    auth: Authenticated,
    facts: DecisionFacts,
    decisionId: string,
    close: () => void,
  ): LiveConnection {
    return {
      sessionId: liveKeyOf(auth),
      ...(isService(auth)
        ? { certSerial: auth.serial, expiresAt: auth.notAfterMs }
        : { expiresAt: auth.session.expiresAt }),
      facts,
      decisionId,
      close,
    };
  }

  async function handleInternal(
    req: IncomingMessage,
    res: ServerResponse,
    host: string,
    path: string,
    query: string,
    clientIp: string,
  ): Promise<void> {
    const params = new URLSearchParams(query.startsWith("?") ? query.slice(1) : query);
    if (path === "/.well-known/zt/jwks.json" && (req.method === "GET" || req.method === "HEAD")) {
      sendJson(res, 200, await s.assertions.jwks(), { "cache-control": "public, max-age=60" });
      return;
    }
    if (path === "/.zt/denied" && (req.method === "GET" || req.method === "HEAD"))
      return sendRecentDenial(req, res, params, denials);
    if (path === "/.zt/healthz") {
      sendJson(res, 200, { status: "ok" });
      return;
    }
    if (path === "/.zt/login") {
      if (req.method === "GET" || req.method === "HEAD") {
        sendHtml(
          res,
          200,
          renderLoginPage({
            returnTo: safeReturnTo(params.get("rd") ?? "/"),
            stepUp: params.get("step_up") === "1",
          }),
        );
        return;
      }
      if (req.method === "POST") return login(req, res, host, clientIp);
      return sendError(res, "ZT_BAD_REQUEST", "use GET or POST on /.zt/login");
    }
    if (path === "/.zt/logout") {
      if (req.method !== "POST") return sendError(res, "ZT_BAD_REQUEST", "use POST on /.zt/logout");
      if (!sameOrigin(req, host)) return sendError(res, "ZT_CSRF", "cross-origin request refused");
      // Every session the request carries ends: each session cookie (a browser may hold
      // the host's and the cookie_domain one) and a Bearer token.
      await revokePresented(req, "logout");
      // Both variants: the host's own cookie and, when set, the cookie_domain one (a
      // browser holds both after cookie_domain changed; forward-auth refuses the pair).
      const expired = expiredHostCookie(req);
      const clear = cfg.session.cookie_domain
        ? [`${expired}; Domain=${cfg.session.cookie_domain}`, expired]
        : expired;
      if (wantsHtml(req) || (req.headers["content-type"] ?? "").includes("form")) {
        res.writeHead(303, {
          location: "/.zt/login",
          "set-cookie": clear,
          "cache-control": "no-store",
        });
        res.end();
      } else {
        res.setHeader("set-cookie", clear);
        sendJson(res, 200, { status: "logged-out" });
      }
      return;
    }
    sendError(res, "ZT_NOT_FOUND", `no such endpoint: ${path}`);
  }

  /** A Set-Cookie that deletes the host's own session cookie (no Domain). */
  function expiredHostCookie(req: IncomingMessage): string {
    return `${cookieName}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0${isSecure(req) ? "; Secure" : ""}`;
  }

  /**
   * Login and logout come from zt's own page: the Origin must be this origin (see
   * `isSameOriginRequest`), https when the client reached zt over https.
   */
  function sameOrigin(req: IncomingMessage, host: string): boolean {
    return isSameOriginRequest(
      {
        origin: req.headers.origin,
        secFetchSite: req.headers["sec-fetch-site"],
        referer: req.headers.referer,
      },
      requestOrigin(req, host),
    );
  }

  /** The origin the request arrived on: its canonical host, the Host header's port, the scheme. */
  function requestOrigin(req: IncomingMessage, host: string): RequestOrigin {
    const h = canonicalHost(req.headers.host);
    return { host, port: h.ok ? h.port : undefined, secure: isSecure(req) };
  }

  /** Revokes every valid session the request presents (session cookies, a Bearer token). */
  async function revokePresented(
    req: IncomingMessage,
    reason: string,
    keep?: string,
  ): Promise<void> {
    const tokens = cookieValues(req.headers.cookie, cookieName);
    const auth = req.headers.authorization;
    if (auth !== undefined && /^bearer\s+/i.test(auth))
      tokens.push(auth.replace(/^bearer\s+/i, ""));
    const ids = new Set<string>();
    for (const t of tokens) {
      const check = await s.sessions.check(t);
      if (check.ok && check.session.id !== keep) ids.add(check.session.id);
    }
    if (ids.size > 0) await s.sessions.revoke([...ids], reason);
  }

  async function login(
    req: IncomingMessage,
    res: ServerResponse,
    host: string,
    clientIp: string,
  ): Promise<void> {
    if (!sameOrigin(req, host)) return sendError(res, "ZT_CSRF", "cross-origin login refused");
    // RFC 6265bis §4.1.3: browsers keep a __Secure- or __Host- cookie only from https, and
    // only with Secure. Over http the sign-in would spend the code on a cookie that is
    // dropped (a login loop): refused before any credential is looked at.
    if (cookieNeedsHttps && !isSecure(req))
      return sendError(
        res,
        "ZT_BAD_REQUEST",
        `session.cookie_name ${cookieName} is kept by browsers only over https: sign in over https`,
        { reason: "cookie-needs-https" },
      );
    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    const isForm = type === "application/x-www-form-urlencoded";
    if (!isForm && type !== "application/json") {
      return sendError(res, "ZT_UNSUPPORTED_MEDIA_TYPE", "send application/json or an HTML form");
    }
    // The body is read as sent: a coded one (gzip …) would be taken for text (RFC 9110 §8.4).
    const coding = req.headers["content-encoding"];
    if (
      coding !== undefined &&
      coding.split(",").some((c) => c.trim().toLowerCase() !== "identity")
    )
      return sendError(
        res,
        "ZT_UNSUPPORTED_MEDIA_TYPE",
        "content-encoding: send the sign-in body uncompressed",
      );
    let fields: Record<string, unknown>;
    try {
      const body = await readBody(req, 16 * 1024);
      if (isForm) fields = parseFormFields(body);
      else {
        const parsed: unknown = JSON.parse(body);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
          throw new ZtError("ZT_BAD_REQUEST", "expected a JSON object");
        fields = parsed as Record<string, unknown>;
      }
    } catch (e) {
      // Over 16 KiB: 413, and the connection closes (the body was not all read).
      if (isZtError(e) && e.code === "ZT_PAYLOAD_TOO_LARGE") return sendPayloadTooLarge(res, e);
      if (isZtError(e)) return sendError(res, e.code, e.message, e.context);
      return sendError(res, "ZT_BAD_REQUEST", "request body is not valid JSON");
    }
    // A field of the wrong type (JSON only: form values are text) is a malformed request,
    // not a failed sign-in: answered before any credential is looked at, so it reveals
    // nothing and counts towards no lockout. A code sent as a number lost its leading zeros.
    for (const k of ["username", "password", "totp"] as const) {
      if (fields[k] !== undefined && typeof fields[k] !== "string")
        return sendError(
          res,
          "ZT_BAD_REQUEST",
          k === "totp"
            ? 'totp: expected a string (the 6-digit code, or a backup code), as "123456"'
            : `${k}: expected a string`,
          { field: k },
        );
    }
    const str = (k: string) => (typeof fields[k] === "string" ? (fields[k] as string) : undefined);
    const username = str("username");
    const password = str("password");
    // Apps show codes as "123 456": whitespace is never part of a code (docs/identity.md).
    const code = str("totp")?.replace(/\s+/g, "");
    // Printable ASCII only (percent-encoded), so the Location header can always be written.
    const rd = safeReturnTo(str("rd"));
    if (!username || !password) {
      if (isForm)
        return sendHtml(
          res,
          400,
          renderLoginPage({ returnTo: rd, error: "Enter your username, password and code." }),
        );
      return sendError(res, "ZT_BAD_REQUEST", 'expected fields "username", "password" and "totp"', {
        fields: ["username", "password", "totp"],
      });
    }
    const isTotp = code !== undefined && /^\d{6}$/.test(code);
    let signedIn;
    try {
      signedIn = await s.identity.signIn(
        {
          username,
          password,
          ...(isTotp ? { totp: code } : code ? { backupCode: code } : {}),
          sourceIp: clientIp,
        },
        s.sessions,
        {
          userAgent: req.headers["user-agent"] ?? "",
          beforeSession: (user) => s.snapshot.refreshUser(user.id),
        },
      );
    } catch (e) {
      return refuseLogin(res, e, isForm, rd, username);
    }
    // The answer is built outside the credential check: nothing here turns a sign-in that
    // succeeded (code consumed, session created) into "wrong password".
    const { user, session, token } = signedIn;
    // The sessions this browser held until now (a step-up, or another sign-in) end: their
    // cookie is replaced below, and a copy of it must not stay valid on the server.
    try {
      await revokePresented(req, "replaced", session.id);
    } catch {
      // The new session stands; the old ones still expire on their own.
    }
    const maxAge = Math.floor((session.expiresAt - session.createdAt) / 1000);
    const set = `${cookieName}=${token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${isSecure(req) ? "; Secure" : ""}${cfg.session.cookie_domain ? `; Domain=${cfg.session.cookie_domain}` : ""}`;
    // A cookie_domain cookie does not replace the host's own one (another cookie to the
    // browser, RFC 6265 §5.3): one from before cookie_domain was set is deleted, or the
    // browser would send both and be refused (session-cookie-duplicate) from now on.
    const cookie = cfg.session.cookie_domain ? [set, expiredHostCookie(req)] : set;
    res.setHeader("set-cookie", cookie);
    if (isForm) {
      res.writeHead(303, { location: rd, "cache-control": "no-store" });
      res.end();
    } else {
      sendJson(res, 200, {
        session_id: session.id,
        user: user.name,
        groups: user.groups,
        expires_at: new Date(session.expiresAt).toISOString(),
      });
    }
  }

  /**
   * A refused sign-in: its own status and a message for people. Anything that is not a
   * ZtError (a bug, a store failure) is ZT_INTERNAL 500, never passed off as wrong
   * credentials. A lockout carries `Retry-After` (RFC 9110 §10.2.3) as well as
   * `retry_after_seconds`.
   */
  function refuseLogin(
    res: ServerResponse,
    e: unknown,
    isForm: boolean,
    rd: string,
    username: string,
  ): void {
    let err = isZtError(e) ? e : new ZtError("ZT_INTERNAL", "internal error");
    // One answer for a wrong password, a missing or wrong code and a disabled account:
    // telling them apart would confirm a leaked password to anyone who tries it without
    // the second factor (credential stuffing spread over many users and addresses never
    // trips a per-user lockout). The audit record keeps the precise reason.
    if (ONE_ANSWER_LOGIN_CODES.has(err.code))
      err = new ZtError("ZT_AUTH_FAILED", "invalid username, password or code", {
        reason: "auth-failed",
      });
    const internal = err.httpStatus >= 500;
    const message = internal
      ? "Sign-in is unavailable right now. Try again later."
      : loginMessage(err);
    const retryAfter = err.context["retry_after_seconds"];
    const headers: Record<string, string> =
      typeof retryAfter === "number" ? { "retry-after": String(retryAfter) } : {};
    if (isForm) {
      sendHtml(
        res,
        err.httpStatus,
        renderLoginPage({ returnTo: rd, error: message, username }),
        headers,
      );
      return;
    }
    sendJson(
      res,
      err.httpStatus,
      {
        error: {
          code: err.code,
          message,
          ...(retryAfter !== undefined ? { retry_after_seconds: retryAfter } : {}),
        },
      },
      headers,
    );
  }

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) sendError(res, "ZT_INTERNAL", "internal error");
      else res.destroy();
    });
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // First, before anything can wait: Node has removed its own error listener from an
    // upgraded socket, and a reset (ECONNRESET) with none would end the process.
    socket.on("error", () => socket.destroy());
    if (isZtOwnPath(req)) {
      // zt's own paths are never proxied, upgrade or not. A front proxy's forward-auth
      // check can carry the client's Upgrade headers (Caddy copies them): it is answered
      // like any check, on a plain response that closes the connection after it.
      const res = new http.ServerResponse(req);
      res.assignSocket(socket as Socket);
      res.shouldKeepAlive = false;
      res.on("finish", () => socket.end());
      handle(req, res).catch(() => {
        if (!res.headersSent) sendError(res, "ZT_INTERNAL", "internal error");
        else socket.destroy();
      });
      return;
    }
    handleUpgrade(req, socket, head).catch(() => socket.destroy());
  });

  return {
    server,
    listen(host: string, port: number) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve(server.address() as AddressInfo));
      });
    },
    listenSpoa(host: string, port: number) {
      const deps = { ...forwardAuthDeps, pepId: `${pepId}/spoa` };
      spoa ??= createSpoaServer({
        decide: createForwardAuthDecider(deps),
        deps,
        trusted,
        cookieName,
      });
      return spoa.listen(host, port);
    },
    async close() {
      offRevoked();
      offCertRevoked();
      for (const t of graceTimers) clearTimeout(t);
      graceTimers.clear();
      await spoa?.close();
      live.closeAll("shutdown");
      agents.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
    },
    live,
    setUpstreamTls(t) {
      agents.setClientTls(t);
    },
    reconfigure(c) {
      routes.replace(c.routes);
      const before = new Map(inForce.map((r) => [r.name, r]));
      const now = new Map(c.routes.map((r) => [r.name, r]));
      inForce = c.routes;
      const gone = new Set<string>();
      const moved = new Set<string>();
      for (const [name, r] of before) {
        const next = now.get(name);
        if (next === undefined) gone.add(name);
        else if (next !== r) moved.add(name);
      }
      trusted.replace(c.trusted_proxies);
      maxBody = c.limits.max_body_bytes;
      reloadGraceMs = parseDuration(c.limits.reload_grace);
      forwardAuthDeps.convention = c.forward_auth.headers;
      agents.retain(c.routes);
      // A WebSocket or a streaming response (Server-Sent Events …) would otherwise run on
      // for ever under a route that is no more, or to the upstream and with the options
      // the reload replaced. The PEP cannot tell those from a request about to finish, so
      // every exchange decided on such a route gets the same grace, then is cut.
      const onChanged = new Set<LiveConnection>();
      for (const x of live.all())
        if (gone.has(x.facts.route) || moved.has(x.facts.route)) onChanged.add(x);
      const cutNow = (which: Set<LiveConnection>) =>
        live.cutWhere((x) => which.has(x) && gone.has(x.facts.route), {
          reason: "route-removed",
          cause: "config-reload",
        }) +
        live.cutWhere((x) => which.has(x) && moved.has(x.facts.route), {
          reason: "route-changed",
          cause: "config-reload",
        });
      if (onChanged.size === 0) return { cut: 0, draining: 0, drained: Promise.resolve(0) };
      if (reloadGraceMs === 0)
        return { cut: cutNow(onChanged), draining: 0, drained: Promise.resolve(0) };
      const drained = new Promise<number>((resolve) => {
        const t = setTimeout(() => {
          graceTimers.delete(t);
          resolve(cutNow(onChanged));
        }, reloadGraceMs);
        t.unref();
        graceTimers.add(t);
      });
      return { cut: 0, draining: onChanged.size, drained };
    },
  };
}

/** Sign-in refusals a client sees as one: ZT_AUTH_FAILED (see refuseLogin). */
const ONE_ANSWER_LOGIN_CODES = new Set(["ZT_AUTH_FAILED", "ZT_MFA_INVALID", "ZT_USER_DISABLED"]);

function loginMessage(e: ZtError): string {
  switch (e.code) {
    case "ZT_MFA_LOCKED":
      return "Too many failed attempts. Wait a little and try again.";
    case "ZT_MFA_REPLAYED":
      // Only reachable with the right password and a code that was valid: no oracle.
      return "That code was already used. Wait for the next code.";
    default:
      return "Wrong username, password or authenticator code.";
  }
}

/** The one transfer coding zt forwards (RFC 9112 §6.1: anything else, refuse). */
const ONLY_CHUNKED = /^[\t ]*chunked[\t ]*$/i;

/**
 * A stable reason for a request Node's HTTP parser refused. llhttp names both orders of
 * Content-Length + Transfer-Encoding with two different codes, and a duplicate
 * Content-Length with a third: its message tells them apart.
 */
export function clientErrorReason(code: string | undefined, message = ""): string {
  if (message.includes("can't be present with")) return "content-length-with-transfer-encoding";
  switch (code) {
    case "HPE_HEADER_OVERFLOW":
      return "headers-too-large";
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return "request-timeout";
    case "HPE_UNEXPECTED_CONTENT_LENGTH":
      return "content-length-duplicate";
    case "HPE_INVALID_CONTENT_LENGTH":
      return "content-length-invalid";
    case "HPE_INVALID_TRANSFER_ENCODING":
      return "transfer-encoding-invalid";
    case "HPE_INVALID_METHOD":
      return "method-invalid";
    case "HPE_INVALID_HEADER_TOKEN":
      return "header-invalid";
    case "HPE_INVALID_CHUNK_SIZE":
      return "chunk-invalid";
    default:
      return "request-malformed";
  }
}

/**
 * The request's canonical path (as `handle` and `handleUpgrade` decide on it) is one of
 * zt's own endpoints: `/.zt/…` or the JWKS. An ambiguous target is not (it is refused).
 */
function isZtOwnPath(req: IncomingMessage): boolean {
  const c = canonicalizeRequest(req.url ?? "/", req.headers.host);
  return c.ok && (c.path.startsWith("/.zt/") || c.path === "/.well-known/zt/jwks.json");
}
