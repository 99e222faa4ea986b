/**
 * `GET /.zt/authz`: forward-auth for nginx `auth_request`, Caddy `forward_auth`,
 * Traefik `forwardAuth`. The front proxy asks "may this request through?"; zt reads
 * the original request from the proxy's headers (only from `trusted_proxies`; 400 when
 * they are ambiguous, mix two conventions, or name a path the proxy would forward in
 * another form than zt's canonical one), authenticates it, decides with the same
 * DecisionPoint, and answers:
 *  - 200 + `X-Zt-Assertion` (signed) + `X-Zt-User`, `X-Zt-Groups`, `X-Zt-Decision-Id` (not signed);
 *  - 401 + `Location` / `X-Zt-Login-Url` (a 302 instead for browsers behind Caddy/Traefik);
 *  - 403 + `X-Zt-Decision-Id` + `X-Zt-Reason` and the explained denial body.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { ResolvedRoute } from "../config/index.js";
import type { Clock } from "../core/clock.js";
import { ZtError, type ZtErrorCode } from "../core/errors.js";
import { hintFor, renderDeniedPage } from "../web/index.js";
import type { AssertionSigner } from "./assertion.js";
import { assertionClaims, cookieCount, factsFor, type AuthOutcome } from "./authenticate.js";
import { recordRefusal, type DecisionPoint, type Refusal } from "./decision-point.js";
import type { AppContext } from "../app/index.js";
import {
  originalRequestHeaders,
  readOriginalRequest,
  type AddressSet,
  type ForwardedConvention,
  type OriginalRequest,
} from "./forwarded-headers.js";
import { headerLineCount, sendHtml, sendJson, wantsHtml } from "./http-util.js";
import type { RecentDenials } from "./recent-denials.js";
import type { RouteTable } from "./route-table.js";

export interface ForwardAuthDeps {
  routes: RouteTable;
  trusted: AddressSet;
  /** `forward_auth.headers`: the header convention read (default: either, not both). */
  convention?: ForwardedConvention;
  /** A plain value when the session is in memory, a promise when it must be read. */
  authenticate(headers: IncomingMessage["headers"]): AuthOutcome | Promise<AuthOutcome>;
  /**
   * `session.cookie_name`: a check whose Cookie header carries it twice is refused, since
   * the front proxy's rules strip one occurrence and the other would reach the app.
   */
  sessionCookieName?: string;
  decisions: DecisionPoint;
  /** Where refusals made before any decision are recorded (`request.refused`). */
  audit: AppContext["audit"];
  assertions: AssertionSigner;
  denials: RecentDenials;
  clock: Clock;
  pepId: string;
  /**
   * `audit.durable_before_forward`: for these methods the 200 waits until the decision
   * record is committed, and becomes a 503 if it cannot be. Undefined: never waits.
   */
  durableFor?: ((method: string) => boolean) | undefined;
  /** Resolves true once every record so far is committed, false if it could not be. */
  recorded?: () => Promise<boolean>;
}

/** Where the original request's user signs in: zt's login, through the same front proxy. */
export function loginUrlFor(o: OriginalRequest, stepUp: boolean): string {
  const defaultPort = o.proto === "https" ? 443 : 80;
  const authority = o.port === undefined || o.port === defaultPort ? o.host : `${o.host}:${o.port}`;
  return `${o.proto}://${authority}/.zt/login?${stepUp ? "step_up=1&" : ""}rd=${encodeURIComponent(o.path + o.query)}`;
}

/**
 * What forward-auth answers, before it is written: as an HTTP response to nginx, Caddy,
 * Traefik or HAProxy's Lua action, or as SPOE variables to HAProxy (spoa-agent.ts).
 */
export interface ForwardAuthAnswer {
  status: number;
  headers: Record<string, string | number>;
  /** A JSON body (refusals, 401, 403), or an HTML page (403 for browsers). */
  json?: unknown;
  html?: string;
}

/** One forward-auth question: the original request, the client's credentials and how to answer. */
export interface ForwardAuthAsk {
  original: OriginalRequest;
  /** The client's headers that carry credentials (Cookie, Authorization). */
  headers: IncomingHttpHeaders;
  clientIp: string;
  /** The front proxy relays a 302 to the client (Caddy, Traefik, HAProxy), not only 401/403. */
  mayRedirect: boolean;
  /** The client prefers HTML (`Accept: text/html`). */
  html: boolean;
  /**
   * How many session cookies the front proxy counted over all the request's Cookie
   * headers, when it sends that count and the one value rather than the headers (HAProxy's
   * SPOE: `req.cook_cnt`). Otherwise they are counted in `headers.cookie`.
   */
  sessionCookieCount?: number;
  /**
   * How many `Authorization` header lines the client's request carries (the raw headers
   * of the check, or HAProxy's `req.fhdr_cnt`): more than one is refused, since zt
   * decides on one and a proxy or app could read another.
   */
  authorizationCount: number;
}

/**
 * A refusal before any decision: audited (`request.refused`), its decision id in the
 * answer. For the PEP's own refusals as for forward-auth's.
 */
export function refusalAnswer(
  d: Pick<ForwardAuthDeps, "audit" | "clock" | "pepId"> & Partial<Pick<ForwardAuthDeps, "denials">>,
  r: Omit<Refusal, "pep" | "code"> & { code: ZtErrorCode; message: string; status?: number },
): ForwardAuthAnswer {
  const decisionId = recordRefusal({ audit: d.audit, clock: d.clock }, { ...r, pep: d.pepId });
  const e = new ZtError(r.code, r.message, { reason: r.reason, decision_id: decisionId });
  const status = r.status ?? e.httpStatus;
  // nginx shows a 403 through `/.zt/denied?decision=…`: that page must know this one too.
  if (status === 403)
    d.denials?.add({ decisionId, reason: r.reason, route: r.host ?? "this app", verdict: "deny" });
  return {
    status,
    headers: { "x-zt-decision-id": decisionId, "x-zt-reason": r.reason },
    json: e.toJSON(),
  };
}

/** What a policy denial's 403 explains: its decision id, stable reason and route. */
export interface DenialFacts {
  decisionId: string;
  reason: string;
  route: string;
}

/**
 * The explained 403 of a denial, the same from the proxy, forward-auth and the
 * `/.zt/denied` page: for a browser the page (decision id, reason, hint), else JSON
 * `ZT_POLICY_DENIED`; the decision id and reason also as headers.
 */
export function policyDeniedAnswer(
  f: DenialFacts,
  html: boolean,
  hint = hintFor(f.reason, f.route),
): ForwardAuthAnswer {
  const headers = { "x-zt-decision-id": f.decisionId, "x-zt-reason": f.reason };
  if (html)
    return {
      status: 403,
      headers,
      html: renderDeniedPage({ decisionId: f.decisionId, reason: f.reason, hint, route: f.route }),
    };
  return {
    status: 403,
    headers,
    json: {
      error: {
        code: "ZT_POLICY_DENIED",
        message: "access denied by policy",
        decision_id: f.decisionId,
        reason: f.reason,
        hint,
      },
    },
  };
}

/**
 * The forward-auth decision for an original request already read and checked: route,
 * authentication, policy decision (recorded), assertion. A plain value when everything
 * needed is in memory (the usual case), else a promise.
 */
export function createForwardAuthDecider(
  d: ForwardAuthDeps,
): (ask: ForwardAuthAsk) => ForwardAuthAnswer | Promise<ForwardAuthAnswer> {
  function decided(
    ask: ForwardAuthAsk,
    route: ResolvedRoute,
    a: AuthOutcome,
  ): ForwardAuthAnswer | Promise<ForwardAuthAnswer> {
    const o = ask.original;
    const browser = ask.html && (o.method === "GET" || o.method === "HEAD");
    if (!a.ok) {
      const login = loginUrlFor(o, false);
      if (ask.mayRedirect && browser)
        return { status: 302, headers: { location: login, "cache-control": "no-store" } };
      return {
        status: 401,
        headers: {
          location: login,
          "x-zt-login-url": login,
          "www-authenticate": 'Bearer realm="zt"',
        },
        json: {
          error: { code: a.code, message: "authentication required", reason: a.reason, login },
        },
      };
    }
    const facts = factsFor({
      route,
      auth: a.auth,
      method: o.method,
      host: o.host,
      path: o.path,
      clientIp: ask.clientIp,
      now: d.clock.now(),
      pep: d.pepId,
    });
    const decision = d.decisions.decide(facts);
    const verdict = decision.result.verdict;
    if (verdict === "allow") {
      const claims = assertionClaims(a.auth, route.name, decision.decisionId);
      const allowed = (assertion: string): ForwardAuthAnswer => {
        const headers = {
          "x-zt-assertion": assertion,
          "x-zt-user": claims.name,
          "x-zt-groups": claims.groups.join(","),
          "x-zt-decision-id": decision.decisionId,
          "cache-control": "no-store",
          "content-length": 0,
        };
        // Contributed headers (break-glass banner) first, as `{ ...extra, ...headers }`.
        const extra = d.decisions.responseHeaders(facts);
        return { status: 200, headers: extra === undefined ? headers : { ...extra, ...headers } };
      };
      // No await between decide() and the durability wait: the record waited on is this decision's.
      if (d.durableFor?.(o.method))
        return d.recorded!().then(async (ok) =>
          ok
            ? allowed(d.assertions.cached(claims) ?? (await d.assertions.sign(claims)))
            : {
                status: 503,
                headers: {},
                json: new ZtError(
                  "ZT_UNAVAILABLE",
                  "the audit log could not record this decision: try again shortly",
                  { reason: "audit-unavailable" },
                ).toJSON(),
              },
        );
      const cached = d.assertions.cached(claims);
      return cached !== undefined ? allowed(cached) : d.assertions.sign(claims).then(allowed);
    }
    const reason = decision.result.reason;
    d.denials.add({ decisionId: decision.decisionId, reason, route: route.name, verdict });
    const headers = { "x-zt-decision-id": decision.decisionId, "x-zt-reason": reason };
    if (verdict === "step-up") {
      const login = loginUrlFor(o, true);
      if (ask.mayRedirect && browser)
        return {
          status: 302,
          headers: { ...headers, location: login, "cache-control": "no-store" },
        };
      return {
        status: 401,
        headers: { ...headers, location: login, "x-zt-login-url": login },
        json: {
          error: {
            code: "ZT_STEP_UP_REQUIRED",
            message: "re-authenticate with MFA, then retry",
            decision_id: decision.decisionId,
            reason,
            login,
          },
        },
      };
    }
    return policyDeniedAnswer(
      { decisionId: decision.decisionId, reason, route: route.name },
      ask.html,
    );
  }
  return (ask) => {
    const o = ask.original;
    const route = d.routes.match(o.host, o.path);
    if (!route)
      // 403, not 404: nginx's auth_request turns anything but 2xx/401/403 into a 500.
      return refusalAnswer(d, {
        code: "ZT_ROUTE_NOT_FOUND",
        message: `no route for host ${o.host}`,
        reason: "no-route",
        sourceIp: ask.clientIp,
        method: o.method,
        host: o.host,
        target: o.path + o.query,
        status: 403,
      });
    if (
      d.sessionCookieName &&
      (ask.sessionCookieCount ?? cookieCount(ask.headers.cookie, d.sessionCookieName)) > 1
    )
      // 403 (nginx shows it through /.zt/denied, with the hint to sign out).
      return refusalAnswer(d, {
        code: "ZT_REQUEST_AMBIGUOUS",
        message: "the request carries two session cookies: sign out, then sign in again",
        reason: "session-cookie-duplicate",
        sourceIp: ask.clientIp,
        method: o.method,
        host: o.host,
        target: o.path + o.query,
        status: 403,
      });
    if (ask.authorizationCount > 1)
      // 403 like the cookie pair: nginx shows it through /.zt/denied.
      return refusalAnswer(d, {
        code: "ZT_REQUEST_AMBIGUOUS",
        message: "the request carries more than one Authorization header: send one",
        reason: "authorization-duplicate",
        sourceIp: ask.clientIp,
        method: o.method,
        host: o.host,
        target: o.path + o.query,
        status: 403,
      });
    const pending = d.authenticate(ask.headers);
    // In memory (the usual case): no await, no microtask hop.
    return pending instanceof Promise
      ? pending.then((a) => decided(ask, route, a))
      : decided(ask, route, pending);
  };
}

/** Writes a forward-auth answer as the HTTP response. */
export function sendForwardAuthAnswer(res: ServerResponse, a: ForwardAuthAnswer): void {
  if (a.html !== undefined) sendHtml(res, a.status, a.html, a.headers as Record<string, string>);
  else if (a.json !== undefined)
    sendJson(res, a.status, a.json, a.headers as Record<string, string>);
  else {
    res.writeHead(a.status, a.headers);
    res.end();
  }
}

/** Builds the `/.zt/authz` handler from the PEP's parts. */
export function createForwardAuthHandler(
  d: ForwardAuthDeps,
): (req: IncomingMessage, res: ServerResponse, query: string, clientIp: string) => Promise<void> {
  const decide = createForwardAuthDecider(d);
  // `query`: the raw query string ("" or "?…"); `clientIp`: the caller's resolveClientIp.
  return async (req, res, query, clientIp) => {
    const peer = req.socket.remoteAddress ?? "";
    if (!d.trusted.has(peer)) {
      // Forwarded headers from anyone but a trusted proxy are ignored, and without them
      // there is no original request to decide on.
      sendForwardAuthAnswer(
        res,
        refusalAnswer(d, {
          code: "ZT_FORWARD_AUTH_UNTRUSTED",
          message: "forward-auth is answered only to trusted_proxies",
          reason: "untrusted-proxy",
          sourceIp: clientIp,
        }),
      );
      return;
    }
    const orig = readOriginalRequest(originalRequestHeaders(req.rawHeaders), d.convention);
    if (!orig.ok) {
      sendForwardAuthAnswer(
        res,
        refusalAnswer(d, {
          code: "ZT_REQUEST_AMBIGUOUS",
          message: `forward-auth refused: ${orig.detail}`,
          reason: orig.reason,
          sourceIp: clientIp,
          detail: orig.detail,
        }),
      );
      return;
    }
    const o = orig.request;
    // Parsed only when present (nginx and the benchmarks send none).
    const redirect = query === "" ? null : new URLSearchParams(query.slice(1)).get("redirect");
    const answer = decide({
      original: o,
      headers: req.headers,
      // The front proxies pass every one of the client's (nginx, Caddy, Traefik, zt's Lua).
      authorizationCount: headerLineCount(req.rawHeaders, "authorization"),
      clientIp,
      mayRedirect: redirect === "1" || (redirect !== "0" && o.style === "forward-auth"),
      html: wantsHtml(req),
    });
    sendForwardAuthAnswer(res, answer instanceof Promise ? await answer : answer);
  };
}

/**
 * `GET /.zt/denied?decision=ID`: the explained 403 page for a denial this PEP made,
 * for front proxies (nginx `error_page 403`). Always 403; an unknown id shows no detail.
 */
export function sendRecentDenial(
  req: IncomingMessage,
  res: ServerResponse,
  query: URLSearchParams,
  denials: RecentDenials,
): void {
  const id = query.get("decision") ?? "";
  const d = /^dec_[A-Za-z0-9_-]{1,64}$/.test(id) ? denials.get(id) : undefined;
  const answer = d
    ? policyDeniedAnswer(d, wantsHtml(req))
    : policyDeniedAnswer(
        { decisionId: "unknown", reason: "unknown-decision", route: "this app" },
        wantsHtml(req),
        "Access was denied. Quote the time and address when you ask for help.",
      );
  sendForwardAuthAnswer(res, answer);
}
