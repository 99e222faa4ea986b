import type { FastifyRequest } from "fastify";
import type { TLSSocket } from "node:tls";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { normalizeIp } from "../core/cidr.js";
import {
  authenticateClientCert,
  bearerToken,
  cookieCount,
  cookieFrom,
  resolveClientIp,
  type AddressSet,
  type ClientCertMode,
} from "../proxy/index.js";
import { SessionService } from "../session/index.js";

/** Each request's client address, as `resolveApiClientIp` found it (keyed by the raw request). */
const resolvedIps = new WeakMap<object, string>();

/**
 * Finds the request's client address once, for every later `clientIp(req)`: the TCP peer,
 * or, when the peer is in `api.trusted_proxies`, the right-most `X-Forwarded-For` entry
 * that is not itself a trusted proxy, by the PEP's own rules (`resolveClientIp`: an entry
 * that is no address stops the walk at the nearest trusted hop, never a guess).
 */
export function resolveApiClientIp(req: FastifyRequest, proxies: AddressSet): string {
  const ip = resolveClientIp(req.ip, req.headers["x-forwarded-for"], proxies);
  resolvedIps.set(req.raw, ip);
  return ip;
}

/**
 * The client's address as the PEP writes it: an IPv4 client of an IPv6 socket (a
 * dual-stack `[::]` listener) is `a.b.c.d`, not `::ffff:a.b.c.d`, in the audit log and
 * in `context.source_ip` (where Cedar's `ip()` cannot read the mapped form). Behind a
 * proxy in `api.trusted_proxies`, the address it forwarded (`resolveApiClientIp`); a
 * request the API server's first hook never saw is the TCP peer.
 */
export function clientIp(req: FastifyRequest): string {
  return resolvedIps.get(req.raw) ?? normalizeIp(req.ip);
}

/** A signed-in zt user, from the session cookie or `Authorization: Bearer <session token>`. */
export interface ApiUserCaller {
  kind: "user";
  userId: string;
  name: string;
  sessionId: string;
  mfaAgeSeconds: number;
}

/** A workload that presented a verified X.509-SVID on this TLS connection. */
export interface ApiServiceCaller {
  kind: "service";
  spiffeId: string;
  serial: string;
  /** The presented certificate (DER), e.g. to renew it. */
  certDer: Buffer;
}

export type ApiCaller = ApiUserCaller | ApiServiceCaller;

/**
 * Who is calling the API. The mTLS client certificate is verified exactly as the PEP
 * verifies it (`authenticateClientCert`: chain to zt's CA, validity, trust domain, the
 * instant deny list), at every request; sessions are checked by the session service.
 * A presented certificate that is refused is never ignored in favour of a session.
 */
export class ApiAuthenticator {
  readonly #ctx: AppContext;
  readonly #mode: ClientCertMode;
  readonly #cookie: string;
  #sessions: SessionService | undefined;
  readonly #ownSessions: boolean;

  constructor(ctx: AppContext, o: { clientCerts: ClientCertMode; sessions?: SessionService }) {
    this.#ctx = ctx;
    // The API never requires a certificate at the handshake: join tokens and sessions
    // authenticate without one. A presented certificate is always verified.
    this.#mode = o.clientCerts === "off" ? "off" : "optional";
    this.#cookie = ctx.config.session.cookie_name;
    this.#sessions = o.sessions;
    this.#ownSessions = o.sessions === undefined;
  }

  /**
   * The verified client SVID of this request; undefined when none was presented (or
   * the listener is plain HTTP). Throws ZT_CLIENT_CERT_REFUSED, audited, for a refused one.
   */
  service(req: FastifyRequest): ApiServiceCaller | undefined {
    const out = authenticateClientCert(
      this.#ctx,
      req.raw.socket,
      this.#mode,
      this.#ctx.clock.now(),
    );
    if (!out) return undefined;
    if (!out.ok) {
      this.#ctx.audit.record({
        kind: "authn.mtls",
        outcome: "deny",
        sourceIp: clientIp(req),
        reason: out.reason,
        data: { listener: "api", path: req.routeOptions.url ?? null },
      });
      throw new ZtError("ZT_CLIENT_CERT_REFUSED", "client certificate refused", {
        reason: out.reason,
      });
    }
    if (out.auth.kind !== "service") return undefined;
    const peer = (req.raw.socket as TLSSocket).getPeerCertificate(false);
    return {
      kind: "service",
      spiffeId: out.auth.spiffeId,
      serial: out.auth.serial,
      certDer: peer.raw,
    };
  }

  /**
   * The caller of an endpoint that accepts a zt session or an mTLS SVID. Throws
   * ZT_AUTH_REQUIRED (nothing presented), ZT_SESSION_* or ZT_CLIENT_CERT_REFUSED: 401;
   * ZT_REQUEST_AMBIGUOUS (two session cookies): 400.
   */
  async caller(req: FastifyRequest): Promise<ApiCaller> {
    const svc = this.service(req);
    if (svc) return svc;
    refuseDuplicateSessionCookie(req, this.#cookie);
    let token = cookieFrom(req.headers.cookie, this.#cookie);
    if (!token) token = bearerToken(req.headers.authorization);
    if (!token)
      throw new ZtError(
        "ZT_AUTH_REQUIRED",
        "sign in: send a session (cookie or Authorization: Bearer) or a client SVID",
        { reason: "no-credentials" },
      );
    const check = await this.#sessionService().check(token);
    if (!check.ok) throw new ZtError(check.code, "session refused", { reason: check.reason });
    const user = await this.#ctx.store.db
      .selectFrom("users")
      .select(["id", "name", "disabled"])
      .where("id", "=", check.session.userId)
      .executeTakeFirst();
    if (!user)
      throw new ZtError("ZT_SESSION_INVALID", "session refused", { reason: "user-unknown" });
    if (user.disabled)
      throw new ZtError("ZT_SESSION_REVOKED", "session refused", { reason: "user-disabled" });
    return {
      kind: "user",
      userId: user.id,
      name: user.name,
      sessionId: check.session.id,
      mfaAgeSeconds: Math.max(0, Math.floor((this.#ctx.clock.now() - check.session.mfaAt) / 1000)),
    };
  }

  close(): void {
    if (this.#ownSessions) this.#sessions?.close();
  }

  #sessionService(): SessionService {
    return (this.#sessions ??= new SessionService(this.#ctx));
  }
}

/**
 * Two session cookies on one request: which one is meant is a guess, and taking the
 * first lets script on a sibling app of the site plant its own (cookie tossing: a
 * cookie with a longer Path is sent first, RFC 6265 §5.4). Refused, as the PEP and
 * forward-auth refuse it (`session-cookie-duplicate`).
 */
export function refuseDuplicateSessionCookie(req: FastifyRequest, cookieName: string): void {
  if (cookieCount(req.headers.cookie, cookieName) > 1)
    throw new ZtError(
      "ZT_REQUEST_AMBIGUOUS",
      "the request carries two session cookies: sign out, then sign in again",
      { reason: "session-cookie-duplicate" },
    );
}
