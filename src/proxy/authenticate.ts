import type { IncomingHttpHeaders } from "node:http";
import type { SessionInfo, SessionService } from "../session/index.js";
import type { EntitySnapshot, UserEntityInfo } from "../session/entity-snapshot.js";
import type { ResolvedRoute } from "../config/index.js";
import type { DecisionFacts } from "./decision-point.js";

export interface Authenticated {
  session: SessionInfo;
  user: UserEntityInfo;
}

export type AuthFailureCode =
  "ZT_AUTH_REQUIRED" | "ZT_SESSION_INVALID" | "ZT_SESSION_EXPIRED" | "ZT_SESSION_REVOKED";

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

/**
 * Identifies the subject of a request (proxied, or the original request of a
 * forward-auth check): the session cookie, else a Bearer token. Both are the same
 * opaque session token; nothing here throws for bad input.
 */
export function createAuthenticator(
  sessions: SessionService,
  snapshot: EntitySnapshot,
  cookieName: string,
): (headers: IncomingHttpHeaders) => Promise<AuthOutcome> {
  return async (headers) => {
    let token = cookieFrom(headers.cookie, cookieName);
    const authz = headers.authorization;
    if (!token && authz?.startsWith("Bearer ")) token = authz.slice(7).trim();
    if (!token) return { ok: false, code: "ZT_AUTH_REQUIRED", reason: "no-session" };
    const check = await sessions.check(token);
    if (!check.ok) return { ok: false, code: check.code, reason: check.reason };
    const user = snapshot.user(check.session.userId);
    if (!user) return { ok: false, code: "ZT_SESSION_INVALID", reason: "user-unknown" };
    if (user.disabled) return { ok: false, code: "ZT_SESSION_REVOKED", reason: "user-disabled" };
    return { ok: true, auth: { session: check.session, user } };
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
    authenticatedBy: "session",
    sessionId: o.auth.session.id,
    pep: o.pep,
  };
}
