import { countDecision, countRefused, isBanned, isUserBanned, REDACTED } from "../audit/index.js";
import type { AppContext } from "../app/index.js";
import { timeOrderedId } from "../core/ids.js";
import { CidrSet } from "../core/cidr.js";
import { storeFreshness, type StoreFreshness } from "../events/staleness.js";
import type {
  AuthorizationResult,
  CedarValue,
  EntityUid,
  EntityView,
  PolicyEngine,
} from "../policy/index.js";

export interface DecisionFacts {
  principal: EntityUid;
  /** Display name for the audit record. */
  subject: string;
  action: string;
  route: string;
  sourceIp: string;
  host: string;
  path: string;
  method: string;
  /** Seconds since MFA was last verified (a large number when never). */
  mfaAgeSeconds: number;
  authenticatedBy: "session" | "mtls" | "bearer";
  sessionId?: string | undefined;
  /** Extra context attributes contributed by other capabilities (device, grants …). */
  extraContext?: Record<string, CedarValue>;
  /** Which enforcement point asked (proxy, forward-auth). */
  pep: string;
}

export interface Decision {
  decisionId: string;
  result: AuthorizationResult;
}

const NEVER_MFA = 10 * 365 * 86400;

/**
 * Adds context attributes for a decision (device posture, grants, risk signals …).
 * Contributors run on the hot path: in memory only, no I/O.
 */
export type ContextContributor = (facts: DecisionFacts) => Record<string, CedarValue> | undefined;

/**
 * Adds headers to the response sent to the client for an allowed request (e.g. the
 * break-glass banner `X-Zt-Breakglass`). In memory only, no I/O.
 */
export type ResponseHeaderContributor = (
  facts: DecisionFacts,
) => Record<string, string> | undefined;

/** Out of contact with the store for longer than this: `/readyz` reports degraded. */
export const DEGRADED_AFTER_MS = 5_000;

/**
 * The one place a PEP decision is made: build the Cedar request from facts, evaluate
 * in process, record the audit event off the hot path. Anything unexpected → deny.
 */
const OPERATOR = { byOperator: true } as const;

export class DecisionPoint {
  readonly #ctx: AppContext;
  readonly #engine: () => PolicyEngine;
  readonly #entities: EntityView;
  readonly #networks: { label: string; set: CidrSet }[];
  readonly #hourFormat: Intl.DateTimeFormat;
  /** local_hour for the minute `#hourMinute` (zone offsets are whole quarter hours). */
  #hourMinute = -1;
  #hour = 0;
  /** `new Date(#isoMs).toISOString()`: requests arrive many to the millisecond. */
  #isoMs = Number.NaN;
  #iso = "";
  readonly #labels = new Map<string, string>();
  readonly #contributors: ContextContributor[] = [];
  readonly #headerContributors: ResponseHeaderContributor[] = [];
  #guardStaleness = false;

  constructor(ctx: AppContext, engine: () => PolicyEngine, entities: EntityView) {
    this.#ctx = ctx;
    this.#engine = engine;
    this.#entities = entities;
    this.#networks = Object.entries(ctx.config.network_labels).map(([label, cidrs]) => ({
      label,
      set: new CidrSet(cidrs, `network_labels.${label}`),
    }));
    this.#hourFormat = new Intl.DateTimeFormat("en-GB", {
      hour: "numeric",
      hourCycle: "h23",
      timeZone: ctx.config.time_zone,
    });
  }

  /** Registers a context contributor (capabilities plug in here, not in the PEP). */
  addContextContributor(c: ContextContributor): void {
    this.#contributors.push(c);
  }

  /**
   * Fail closed after `max_staleness`: once the event bus reads from the store (zt up
   * calls this after `events.start()`), every decision is a deny with reason
   * `control-plane-unreachable` while the store has been out of contact that long.
   * Off until called: a process that does not read events has no contact to lose.
   */
  failClosedWhenStale(on = true): void {
    this.#guardStaleness = on;
  }

  /** Whether decisions fail closed when the store is stale (see failClosedWhenStale). */
  get failsClosedWhenStale(): boolean {
    return this.#guardStaleness;
  }

  /** How far the in-memory state may be trusted (see `storeFreshness`). */
  storeFreshness(): StoreFreshness {
    return storeFreshness(this.#ctx.events.lastContactMs(), {
      degradedAfterMs: DEGRADED_AFTER_MS,
      maxStalenessMs: this.#ctx.config.maxStalenessMs,
    });
  }

  /** Registers a response-header contributor (break-glass banner …). */
  addResponseHeaderContributor(c: ResponseHeaderContributor): void {
    this.#headerContributors.push(c);
  }

  /** Headers for the response to an allowed request; undefined when none (the usual case). */
  responseHeaders(facts: DecisionFacts): Record<string, string> | undefined {
    let out: Record<string, string> | undefined;
    for (const c of this.#headerContributors) {
      try {
        const h = c(facts);
        if (h) out = { ...out, ...h };
      } catch {
        // A banner is informational: a failing contributor never blocks the response.
      }
    }
    return out;
  }

  networkLabel(ip: string): string {
    // Remembered per address: BlockList.check allocates on every call.
    let label = this.#labels.get(ip);
    if (label === undefined) {
      label = "unknown";
      for (const n of this.#networks) {
        if (n.set.has(ip)) {
          label = n.label;
          break;
        }
      }
      if (this.#labels.size >= 10_000) this.#labels.clear();
      this.#labels.set(ip, label);
    }
    return label;
  }

  #localHour(now: number): number {
    const minute = Math.floor(now / 60_000);
    if (minute !== this.#hourMinute) {
      this.#hour = Number(this.#hourFormat.format(now));
      this.#hourMinute = minute;
    }
    return this.#hour;
  }

  #isoTime(now: number): string {
    if (now !== this.#isoMs) {
      this.#iso = new Date(now).toISOString();
      this.#isoMs = now;
    }
    return this.#iso;
  }

  decide(facts: DecisionFacts): Decision {
    const now = this.#ctx.clock.now();
    const decisionId = newDecisionId(now);
    let result: AuthorizationResult;
    let network = "unknown";
    // Out of contact with the store for max_staleness or longer: revocations may have
    // been missed for too long, so nothing is allowed until contact returns.
    const started = performance.now();
    if (this.#guardStaleness && this.storeFreshness() === "stale") {
      result = {
        decision: "deny",
        verdict: "deny",
        reasons: [],
        errors: [],
        reason: "control-plane-unreachable",
      };
    } else if (isBanned(facts.sourceIp, now)) {
      // A source banned by the alert rules (fail2ban model) is refused whatever policy says;
      // in forward-auth mode this is where the real client address is known.
      result = {
        decision: "deny",
        verdict: "deny",
        reasons: [],
        errors: [],
        reason: "source-banned",
      };
    } else if (facts.principal.type === "User" && isUserBanned(facts.principal.id, now, OPERATOR)) {
      // An operator's `zt ban add user:…` holds at once, live sessions included (a login
      // jail's ban only stops sign-ins: anyone who types the name can trigger one).
      result = {
        decision: "deny",
        verdict: "deny",
        reasons: [],
        errors: [],
        reason: "user-banned",
      };
    } else {
      try {
        network = this.networkLabel(facts.sourceIp);
        const context: Record<string, CedarValue> = {
          source_ip: { __extn: { fn: "ip", arg: facts.sourceIp } },
          host: facts.host,
          path: facts.path,
          mfa_age_seconds: Math.max(0, Math.min(NEVER_MFA, Math.floor(facts.mfaAgeSeconds))),
          time: { __extn: { fn: "datetime", arg: this.#isoTime(now) } },
          network,
          local_hour: this.#localHour(now),
          authenticated_by: facts.authenticatedBy,
          grants: [],
          breakglass: false,
          failed_attempts: 0,
          new_network: false,
        };
        for (const c of this.#contributors) Object.assign(context, c(facts));
        if (facts.extraContext) Object.assign(context, facts.extraContext);
        result = this.#engine().authorize(
          {
            principal: facts.principal,
            action: { type: "Action", id: facts.action },
            resource: { type: "App", id: facts.route },
            context,
          },
          this.#entities,
        );
      } catch (e) {
        result = {
          decision: "deny",
          verdict: "deny",
          reasons: [],
          errors: [{ policyId: "(engine)", message: (e as Error).message ?? String(e) }],
          reason: "policy-error",
        };
      }
    }
    this.#ctx.audit.record({
      kind: "decision",
      outcome: result.verdict,
      subject: facts.subject,
      sourceIp: facts.sourceIp,
      route: facts.route,
      action: facts.action,
      decisionId,
      policies: result.reasons,
      reason: result.reason,
      data: {
        host: facts.host,
        path: facts.path,
        method: facts.method,
        principal: `${facts.principal.type}::"${facts.principal.id}"`,
        authenticated_by: facts.authenticatedBy,
        session_id: facts.sessionId,
        mfa_age_seconds: Math.floor(facts.mfaAgeSeconds),
        network,
        // For `zt audit explain`: which policies decided, by id and @reason — never their text.
        determining: (result.determining ?? []).map((p) => ({
          id: p.id,
          effect: p.effect,
          reason: p.annotations["reason"] ?? null,
        })),
        errors: result.errors,
        mode: "enforce",
        pep: facts.pep,
      },
    });
    countDecision(facts.route, result.verdict, result.reason, (performance.now() - started) / 1000);
    return { decisionId, result };
  }
}

/** A request refused before any decision could be made on it. */
export interface Refusal {
  /** Stable kebab-case reason (`path-ambiguous`, `host-duplicate`, `no-route` …). */
  reason: string;
  /** What exactly was wrong, in words (no secrets: request shape only). */
  detail?: string | undefined;
  /** The error code answered (`ZT_REQUEST_AMBIGUOUS` …). */
  code: string;
  sourceIp: string;
  /** Which enforcement point refused (proxy, forward-auth). */
  pep: string;
  method?: string | undefined;
  /**
   * The request target as received. Kept: its path, to 512 characters, with `;`
   * parameter values and the query left out (they carry tokens and session ids), and
   * an absolute-form target's userinfo (`http://user:password@host/…`) redacted.
   */
  target?: string | undefined;
  host?: string | undefined;
  /** The TCP peer, when it is a trusted proxy speaking for an unknown client. */
  peer?: string | undefined;
  /**
   * Who the request was signed in as, when the refusal came after authentication (a
   * WebSocket handshake from a foreign Origin): the user whose session a page tried to
   * use, and that session, for the incident that follows.
   */
  subject?: string | undefined;
  sessionId?: string | undefined;
  /** The route the request matched, when the refusal came after routing. */
  route?: string | undefined;
}

/** The longest request target kept in a refusal's audit record. */
const MAX_REFUSED_TARGET = 512;

/** The scheme and `userinfo@` of an absolute-form target (up to its authority's last `@`). */
const ABSOLUTE_USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i;

/**
 * Records a refusal as `request.refused` (outcome deny) under a fresh decision id and
 * returns that id for the answer (`X-Zt-Decision-Id`): every request the PEP turns away
 * is in the audit log, explainable (`zt audit explain`) and countable by the alert
 * rules (`match: refused`), including the malformed ones probing for a bypass.
 */
export function recordRefusal(ctx: Pick<AppContext, "audit" | "clock">, r: Refusal): string {
  const decisionId = newDecisionId(ctx.clock.now());
  let target = r.target;
  let queryLength: number | undefined;
  if (target !== undefined) {
    const q = target.indexOf("?");
    if (q !== -1) {
      queryLength = target.length - q - 1;
      target = target.slice(0, q);
    }
    // RFC 3986 §3.2.1: userinfo in an absolute-form target is a user name and password.
    target = target.replace(ABSOLUTE_USERINFO, `$1${REDACTED}@`);
    target = target.replace(/;[^/]*/g, ";…");
    if (target.length > MAX_REFUSED_TARGET) target = `${target.slice(0, MAX_REFUSED_TARGET)}…`;
  }
  ctx.audit.record({
    kind: "request.refused",
    outcome: "deny",
    sourceIp: r.sourceIp === "" ? undefined : r.sourceIp,
    subject: r.subject,
    route: r.route,
    decisionId,
    reason: r.reason,
    data: {
      code: r.code,
      detail: r.detail,
      method: r.method,
      host: r.host,
      target,
      query_length: queryLength,
      peer: r.peer,
      pep: r.pep,
      session_id: r.sessionId,
    },
  });
  countRefused(r.reason);
  return decisionId;
}

/** A fresh decision id: `dec_` + time (ordered, for the audit index) + 128 random bits. */
export function newDecisionId(nowMs = Date.now()): string {
  return timeOrderedId("dec", nowMs);
}
