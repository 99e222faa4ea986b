import type { IncomingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { AppContext } from "../app/index.js";
import { verifyClientCertificate } from "../pki/index.js";
import type { SessionCheck, SessionInfo, SessionService } from "../session/index.js";
import type { EntitySnapshot, UserEntityInfo } from "../session/entity-snapshot.js";
import type { ResolvedRoute } from "../config/index.js";
import type { AssertionClaims } from "./assertion.js";
import type { DecisionFacts } from "./decision-point.js";

/** A signed-in user (session cookie or Bearer session token). */
export interface UserAuthenticated {
  kind?: "user";
  session: SessionInfo;
  user: UserEntityInfo;
  /**
   * Which credential carried the session token: the cookie (`session`) or an
   * `Authorization: Bearer` header (`bearer`), as `context.authenticated_by` reports it.
   */
  authenticatedBy: "session" | "bearer";
}

/** A workload that presented a verified X.509-SVID on the TLS connection (mTLS). */
export interface ServiceAuthenticated {
  kind: "service";
  spiffeId: string;
  /** Serial of the presented SVID (hex), to cut live connections when it is revoked. */
  serial: string;
  notAfterMs: number;
}

export type Authenticated = UserAuthenticated | ServiceAuthenticated;

export type AuthFailureCode =
  | "ZT_AUTH_REQUIRED"
  | "ZT_SESSION_INVALID"
  | "ZT_SESSION_EXPIRED"
  | "ZT_SESSION_REVOKED"
  | "ZT_CLIENT_CERT_REFUSED";

/** Whether a subject is a service (mTLS) rather than a user session. */
export function isService(a: Authenticated): a is ServiceAuthenticated {
  return a.kind === "service";
}

/**
 * Whether the request was authenticated by a Bearer session token: its `Authorization`
 * header is then zt's credential, never forwarded to an upstream.
 */
export function byBearer(a: Authenticated): boolean {
  return a.kind !== "service" && a.authenticatedBy === "bearer";
}

/**
 * The key live connections are tracked by: the session id, or `svc:<spiffeId>` for a
 * service (which has no session).
 */
export function liveKeyOf(a: Authenticated): string {
  return isService(a) ? `svc:${a.spiffeId}` : a.session.id;
}

/** Who the signed assertion names: the user, or the SPIFFE ID (no groups, no session). */
export function assertionSubject(a: Authenticated): {
  sub: string;
  name: string;
  email: string | null;
  groups: string[];
  sessionId?: string;
} {
  if (isService(a)) return { sub: a.spiffeId, name: a.spiffeId, email: null, groups: [] };
  return {
    sub: a.user.name,
    name: a.user.name,
    email: a.user.email,
    groups: a.user.groups,
    sessionId: a.session.id,
  };
}

/**
 * The claims `AssertionSigner.sign` takes for a subject, built field by field: what
 * `{ ...assertionSubject(a), aud, decisionId }` gives (a service has no session id),
 * without the object spread, which measured ~2 µs per request on the hot path.
 */
export function assertionClaims(
  a: Authenticated,
  aud: string,
  decisionId: string,
): AssertionClaims {
  if (isService(a))
    return { sub: a.spiffeId, name: a.spiffeId, email: null, groups: [], aud, decisionId };
  return {
    sub: a.user.name,
    name: a.user.name,
    email: a.user.email,
    groups: a.user.groups,
    aud,
    decisionId,
    sessionId: a.session.id,
  };
}

/**
 * The credential of an `Authorization: Bearer <token>` header, or undefined for another
 * scheme. The scheme's name is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER`
 * are the same scheme (the usual spelling is tested first: this runs per request).
 */
export function bearerToken(authz: string | undefined): string | undefined {
  if (authz === undefined || authz.length < 8 || authz.charCodeAt(6) !== 32) return undefined;
  if (!authz.startsWith("Bearer") && authz.slice(0, 6).toLowerCase() !== "bearer") return undefined;
  return authz.slice(7).trim();
}

export type AuthOutcome =
  { ok: true; auth: Authenticated } | { ok: false; code: AuthFailureCode; reason: string };

/** Reads one cookie from a Cookie header without allocating the whole list. */
export function cookieFrom(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  let from = 0;
  while (from < header.length) {
    let end = header.indexOf(";", from);
    if (end === -1) end = header.length;
    const eq = header.indexOf("=", from);
    if (eq !== -1 && eq < end && header.slice(from, eq).trim() === name)
      return header.slice(eq + 1, end).trim();
    from = end + 1;
  }
  return undefined;
}

/** How many cookies named `name` a Cookie header (or several) carries. */
export function cookieCount(header: string | string[] | undefined, name: string): number {
  if (header === undefined) return 0;
  let n = 0;
  for (const h of Array.isArray(header) ? header : [header]) {
    // The usual header names it once at most: no split on the forward-auth hot path.
    const first = h.indexOf(name);
    if (first === -1) continue;
    if (first === h.lastIndexOf(name)) {
      n += cookieFrom(h, name) === undefined ? 0 : 1;
      continue;
    }
    for (const pair of h.split(";")) {
      const eq = pair.indexOf("=");
      if (eq !== -1 && pair.slice(0, eq).trim() === name) n++;
    }
  }
  return n;
}

/**
 * Identifies the subject of a request (proxied, or the original request of a
 * forward-auth check): the session cookie, else a Bearer token. Both are the same
 * opaque session token; nothing here throws for bad input. The answer is a plain value
 * when the session is in memory (the hot path: no microtask hops), a promise only when
 * the session must be read from the store.
 */
export function createAuthenticator(
  sessions: SessionService,
  snapshot: EntitySnapshot,
  cookieName: string,
): (headers: IncomingHttpHeaders) => AuthOutcome | Promise<AuthOutcome> {
  const outcome = (check: SessionCheck, by: "session" | "bearer"): AuthOutcome => {
    if (!check.ok) return { ok: false, code: check.code, reason: check.reason };
    const user = snapshot.user(check.session.userId);
    if (!user) return { ok: false, code: "ZT_SESSION_INVALID", reason: "user-unknown" };
    if (user.disabled) return { ok: false, code: "ZT_SESSION_REVOKED", reason: "user-disabled" };
    return { ok: true, auth: { session: check.session, user, authenticatedBy: by } };
  };
  // Made once, not per request: the store path's continuations for each credential.
  const fromCookie = (check: SessionCheck) => outcome(check, "session");
  const fromBearer = (check: SessionCheck) => outcome(check, "bearer");
  return (headers) => {
    try {
      let token = cookieFrom(headers.cookie, cookieName);
      let bearer = false;
      if (!token) {
        token = bearerToken(headers.authorization);
        bearer = token !== undefined;
      }
      if (!token) return { ok: false, code: "ZT_AUTH_REQUIRED", reason: "no-session" };
      const known = sessions.checkInMemory(token);
      if (known !== undefined) return outcome(known, bearer ? "bearer" : "session");
      return sessions.check(token).then(bearer ? fromBearer : fromCookie);
    } catch (e) {
      // As the async function this replaces: a throw becomes a rejected promise.
      return Promise.reject(e as Error);
    }
  };
}

/** Whether the PEP asks TLS clients for a certificate, and whether one is required. */
export type ClientCertMode = "off" | "optional" | "require";

/** DER of the certificate a TLS peer presented, read once per connection (null: none). */
const peerDer = new WeakMap<Socket, Buffer | null>();

function presentedCert(socket: Socket): Buffer | null {
  let der = peerDer.get(socket);
  if (der === undefined) {
    const tls = socket as Partial<TLSSocket>;
    const peer =
      typeof tls.getPeerCertificate === "function" ? tls.getPeerCertificate(false) : undefined;
    der = peer && Buffer.isBuffer(peer.raw) && peer.raw.length > 0 ? peer.raw : null;
    peerDer.set(socket, der);
  }
  return der;
}

/**
 * mTLS: the certificate the client presented on this TLS connection, verified against
 * zt's CA (chain, validity, trust domain, the revocation deny list) at every request.
 * Returns undefined when no certificate was presented and none is required (the
 * request then authenticates with a session); a refused certificate is never ignored.
 */
export function authenticateClientCert(
  ctx: AppContext,
  socket: Socket,
  mode: ClientCertMode,
  nowMs: number,
): AuthOutcome | undefined {
  if (mode === "off") return undefined;
  const der = presentedCert(socket);
  if (!der) {
    if (mode === "require")
      return { ok: false, code: "ZT_CLIENT_CERT_REFUSED", reason: "client-cert-required" };
    return undefined;
  }
  const v = verifyClientCertificate(ctx, der, nowMs);
  if (!v.ok) return { ok: false, code: "ZT_CLIENT_CERT_REFUSED", reason: v.reason };
  return {
    ok: true,
    auth: { kind: "service", spiffeId: v.spiffeId, serial: v.serial, notAfterMs: v.notAfterMs },
  };
}

/** The facts one decision is made from, the same for both PEP modes. */
export function factsFor(o: {
  route: ResolvedRoute;
  auth: Authenticated;
  method: string;
  host: string;
  path: string;
  clientIp: string;
  now: number;
  pep: string;
}): DecisionFacts {
  if (isService(o.auth)) {
    return {
      principal: { type: "Service", id: o.auth.spiffeId },
      subject: o.auth.spiffeId,
      action: o.route.action ?? o.method.toUpperCase(),
      route: o.route.name,
      sourceIp: o.clientIp,
      host: o.host,
      path: o.path,
      method: o.method,
      // A certificate carries no MFA: policies asking for recent MFA never match it.
      mfaAgeSeconds: Number.MAX_SAFE_INTEGER,
      authenticatedBy: "mtls",
      pep: o.pep,
    };
  }
  return {
    principal: { type: "User", id: o.auth.user.name },
    subject: o.auth.user.name,
    action: o.route.action ?? o.method.toUpperCase(),
    route: o.route.name,
    sourceIp: o.clientIp,
    host: o.host,
    path: o.path,
    method: o.method,
    mfaAgeSeconds: (o.now - o.auth.session.mfaAt) / 1000,
    authenticatedBy: o.auth.authenticatedBy,
    sessionId: o.auth.session.id,
    pep: o.pep,
  };
}
