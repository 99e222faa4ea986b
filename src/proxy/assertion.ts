import { SignJWT } from "jose";
import type { KeyStore, RotateKeyResult, SigningKey } from "../keys/index.js";
import type { Clock } from "../core/clock.js";
import type { AuditLog } from "../audit/index.js";
import type { EventBus, ZtEvent } from "../events/index.js";

export const ASSERTION_KEY_PURPOSE = "assertion";
export const ASSERTION_LIFETIME_S = 60;

export interface AssertionClaims {
  sub: string;
  name: string;
  email?: string | null;
  groups: string[];
  aud: string;
  decisionId: string;
  sessionId?: string;
}

/** A cached assertion, with the identity it states (to tell when that changed). */
interface CachedAssertion {
  jwt: string;
  refreshAt: number;
  name: string;
  email: string | null;
  groups: string[];
}

/**
 * Signs the identity assertion (ES256 JWT, 60 s) the PEP hands to upstreams.
 * An assertion is reused for the same session and route for half its lifetime, as long
 * as the user's name, email and groups are still what it states: the hot path signs at
 * most once per 30 s per session and route, and a group change is in the next one.
 */
export class AssertionSigner {
  readonly #keys: KeyStore;
  readonly #clock: Clock;
  readonly #issuer: string;
  #key: SigningKey | undefined;
  /**
   * Assertions by session, then route (none for a subject without a session). Nested
   * maps: the lookup uses the session's and route's own strings, whose hashes V8 keeps,
   * instead of hashing a joined key built per request.
   */
  readonly #cache = new Map<string, Map<string, CachedAssertion>>();
  #cached = 0;

  constructor(keys: KeyStore, clock: Clock, issuer: string) {
    this.#keys = keys;
    this.#clock = clock;
    this.#issuer = issuer;
  }

  async init(): Promise<void> {
    this.#key = await this.#keys.activeKey(ASSERTION_KEY_PURPOSE, "ES256");
  }

  /**
   * The assertion `sign` would return from its cache, without a promise (the hot path:
   * no microtask hop); undefined when `sign` has to sign.
   */
  cached(claims: AssertionClaims): string | undefined {
    if (!claims.sessionId) return undefined;
    const hit = this.#cache.get(claims.sessionId)?.get(claims.aud);
    if (hit === undefined || hit.refreshAt <= this.#clock.now()) return undefined;
    // Upstreams authorise on the signed groups: one signed before the user left a group
    // must not be handed out after the PEP knows it.
    return sameIdentity(hit, claims) ? hit.jwt : undefined;
  }

  async sign(claims: AssertionClaims): Promise<string> {
    const fresh = this.cached(claims);
    if (fresh !== undefined) return fresh;
    const now = this.#clock.now();
    const key = this.#key ?? (await this.#keys.activeKey(ASSERTION_KEY_PURPOSE, "ES256"));
    this.#key = key;
    const iat = Math.floor(now / 1000);
    const payload: Record<string, unknown> = {
      name: claims.name,
      groups: claims.groups,
      decision_id: claims.decisionId,
    };
    if (claims.email) payload["email"] = claims.email;
    if (claims.sessionId) payload["sid"] = claims.sessionId;
    const jwt = await new SignJWT(payload)
      .setProtectedHeader({ alg: "ES256", kid: key.kid, typ: "JWT" })
      .setIssuer(this.#issuer)
      .setSubject(claims.sub)
      .setAudience(claims.aud)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ASSERTION_LIFETIME_S)
      .sign(key.privateKey);
    if (claims.sessionId) {
      if (this.#cached >= 50_000) {
        this.#cache.clear();
        this.#cached = 0;
      }
      let routes = this.#cache.get(claims.sessionId);
      if (!routes) this.#cache.set(claims.sessionId, (routes = new Map()));
      if (!routes.has(claims.aud)) this.#cached++;
      routes.set(claims.aud, {
        jwt,
        refreshAt: now + (ASSERTION_LIFETIME_S * 1000) / 2,
        name: claims.name,
        email: claims.email ?? null,
        groups: claims.groups,
      });
    }
    return jwt;
  }

  /**
   * The assertion key was rotated (here or in another process): sign with the new
   * active key from now on, and drop every cached assertion signed with the old one.
   */
  keysChanged(): void {
    this.#keys.forget(ASSERTION_KEY_PURPOSE);
    this.#key = undefined;
    this.#cache.clear();
    this.#cached = 0;
  }

  /** Follows rotations announced on the event bus; returns the unsubscribe function. */
  followRotations(events: EventBus): () => void {
    return events.subscribe((e) => {
      if (isAssertionKeyRotation(e)) this.keysChanged();
    });
  }

  /** Drops cached assertions of a session (on revocation). */
  forgetSession(sessionId: string): void {
    const routes = this.#cache.get(sessionId);
    if (!routes) return;
    this.#cached -= routes.size;
    this.#cache.delete(sessionId);
  }

  async jwks(): Promise<{ keys: Record<string, unknown>[] }> {
    return { keys: await this.#keys.publicJwks(ASSERTION_KEY_PURPOSE) };
  }
}

/**
 * Whether a cached assertion states the identity of `claims`. The groups list is the
 * entity snapshot's own array, replaced when the user is re-read: the same array is the
 * same groups (the hot path compares one reference); another is compared item by item.
 */
function sameIdentity(hit: CachedAssertion, claims: AssertionClaims): boolean {
  if (hit.name !== claims.name || hit.email !== (claims.email ?? null)) return false;
  if (hit.groups === claims.groups) return true;
  if (hit.groups.length !== claims.groups.length) return false;
  for (let i = 0; i < hit.groups.length; i++) if (hit.groups[i] !== claims.groups[i]) return false;
  // The same groups in a new array (the user was re-read): compare by reference from now on.
  hit.groups = claims.groups;
  return true;
}

/** Default publication window of a rotated-out assertion key: well past its assertions' 60 s. */
export const ASSERTION_KEY_PREVIOUS_PUBLISHED_MS = 10 * 60_000;

function isAssertionKeyRotation(e: ZtEvent): boolean {
  return (
    e.kind === "config.changed" &&
    e.data["component"] === "keys" &&
    e.data["purpose"] === ASSERTION_KEY_PURPOSE
  );
}

/**
 * `zt keys rotate assertion`: a new assertion signing key, in use by every PEP as soon as
 * it hears the event (SQLite: the next poll; PostgreSQL: NOTIFY). The old key stays in
 * the JWKS for `publishPreviousForMs` so that assertions it signed verify until they
 * expire; 0 drops it from the JWKS at once (a key believed leaked).
 */
export async function rotateAssertionKey(
  deps: { keys: KeyStore; audit: AuditLog; events: EventBus },
  publishPreviousForMs: number,
  actor: string,
): Promise<RotateKeyResult> {
  const r = await deps.keys.rotate(ASSERTION_KEY_PURPOSE, "ES256", { publishPreviousForMs });
  deps.audit.record({
    kind: "key.rotate",
    outcome: "info",
    subject: actor,
    reason: publishPreviousForMs === 0 ? "retired-at-once" : "rotated",
    data: {
      purpose: ASSERTION_KEY_PURPOSE,
      kid: r.kid,
      previous: r.previous,
      previous_published_ms: publishPreviousForMs,
    },
  });
  await deps.events.publish("config.changed", {
    component: "keys",
    purpose: ASSERTION_KEY_PURPOSE,
    kid: r.kid,
  });
  return r;
}
