import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * zt's Prometheus metrics, in a registry of its own (served at `/metrics` on the API
 * listener). The PEP calls the small functions below on its hot path: each is a Map
 * lookup of a cached child plus an add.
 */
export const metrics = new Registry();

let defaultsOn = false;
/** Adds Node's process metrics (CPU, memory, event loop lag) once per process. */
export function enableProcessMetrics(): void {
  if (defaultsOn) return;
  defaultsOn = true;
  collectDefaultMetrics({ register: metrics, prefix: "zt_" });
}

const decisions = new Counter({
  name: "zt_decisions_total",
  help: "Access decisions by verdict, route and reason.",
  labelNames: ["verdict", "route", "reason"] as const,
  registers: [metrics],
  // Decisions are counted in plain numbers on the hot path and added here, when the
  // metric is read (scrape, aggregation, tests): prom-client's inc re-hashes the labels.
  collect() {
    flushDecisionCounts();
  },
});

const decisionSeconds = new Histogram({
  name: "zt_decision_duration_seconds",
  help: "Time to decide one request (identify, match, evaluate), seconds.",
  labelNames: ["verdict"] as const,
  buckets: [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1,
  ],
  registers: [metrics],
});

const logins = new Counter({
  name: "zt_logins_total",
  help: "Login attempts by outcome (success, failure, mfa-failure, locked, banned …).",
  labelNames: ["outcome"] as const,
  registers: [metrics],
});

const activeSessions = new Gauge({
  name: "zt_active_sessions",
  help: "Live (unexpired, unrevoked) sessions.",
  registers: [metrics],
});

const certificates = new Gauge({
  name: "zt_certificates",
  help: "Valid certificates by days to expiry (upper bound of the bucket, in days).",
  labelNames: ["kind", "days_to_expiry"] as const,
  registers: [metrics],
});

const auditWritten = new Counter({
  name: "zt_audit_events_written_total",
  help: "Audit events durably appended to the chain.",
  registers: [metrics],
});

const auditHead = new Gauge({
  name: "zt_audit_head_seq",
  help: "Sequence number of the newest audit event this process wrote or saw.",
  registers: [metrics],
});

const sinkLag = new Gauge({
  name: "zt_audit_sink_lag_events",
  help: "Audit events written but not yet delivered by a sink.",
  labelNames: ["sink"] as const,
  registers: [metrics],
});

const dropped = new Counter({
  name: "zt_audit_dropped_events_total",
  help: "Audit events a sink skipped because it fell too far behind, or the writer could not buffer.",
  labelNames: ["sink"] as const,
  registers: [metrics],
});

const checkpoints = new Counter({
  name: "zt_audit_checkpoints_total",
  help: "Signed audit checkpoints written.",
  registers: [metrics],
});

const alertsFired = new Counter({
  name: "zt_alerts_fired_total",
  help: "Alerts fired by rule and severity.",
  labelNames: ["rule", "severity"] as const,
  registers: [metrics],
});

const bansActive = new Gauge({
  name: "zt_bans_active",
  help: "Source addresses and users currently banned.",
  registers: [metrics],
});

const shedRequests = new Counter({
  name: "zt_pep_shed_total",
  help: "Requests refused (503) because the audit log could not keep up: nothing is allowed that cannot be recorded.",
  registers: [metrics],
});

/** Counts a request the PEP refused because of the audit backlog. */
export function countShed(): void {
  shedRequests.inc();
}

const refusedRequests = new Counter({
  name: "zt_pep_refused_total",
  help: "Requests refused before any decision (ambiguous or malformed, or no route), by reason.",
  labelNames: ["reason"] as const,
  registers: [metrics],
});

/** Counts a request the PEP refused before deciding (reasons are a closed set of codes). */
export function countRefused(reason: string): void {
  refusedRequests.labels(reason).inc();
}

const bannedRequests = new Counter({
  name: "zt_banned_requests_total",
  help: "Requests refused because their source is banned.",
  registers: [metrics],
});

type DecisionChild = {
  c: ReturnType<typeof decisions.labels>;
  h: ReturnType<typeof decisionSeconds.labels>;
  /** Decisions not yet added to `c` (see the counter's collect). */
  pending: number;
};
const decisionChildren = new Map<string, DecisionChild>();

function flushDecisionCounts(): void {
  for (const child of decisionChildren.values()) {
    if (child.pending > 0) {
      child.c.inc(child.pending);
      child.pending = 0;
    }
  }
}

/** Counts one decision and observes its latency. Hot path: one Map lookup, two adds. */
export function countDecision(
  route: string,
  verdict: string,
  reason: string,
  seconds: number,
): void {
  const key = `${route}\u0000${verdict}\u0000${reason}`;
  let child = decisionChildren.get(key);
  if (child === undefined) {
    // Bound label cardinality: reasons and routes come from config and policy, but be safe.
    if (decisionChildren.size >= 10_000) {
      flushDecisionCounts();
      decisionChildren.clear();
    }
    child = {
      c: decisions.labels(verdict, route, reason),
      h: decisionSeconds.labels(verdict),
      pending: 0,
    };
    decisionChildren.set(key, child);
  }
  child.pending++;
  child.h.observe(seconds);
}

/** Counts one login attempt by outcome. */
export function countLogin(outcome: string): void {
  logins.labels(outcome).inc();
}

export function setActiveSessions(n: number): void {
  activeSessions.set(n);
}

/** Day buckets used by {@link setCertificateExpiries}. */
export const EXPIRY_BUCKETS_DAYS = [1, 7, 30, 90, 365] as const;

/**
 * Replaces the certificate-expiry gauge for one kind (e.g. `svid`, `ssh-user`, `ca`)
 * from the days-to-expiry of every valid certificate of that kind.
 */
export function setCertificateExpiries(kind: string, daysToExpiry: readonly number[]): void {
  const counts = new Map<string, number>();
  for (const b of EXPIRY_BUCKETS_DAYS) counts.set(String(b), 0);
  counts.set("+Inf", 0);
  for (const d of daysToExpiry) {
    const b = EXPIRY_BUCKETS_DAYS.find((x) => d <= x);
    const k = b === undefined ? "+Inf" : String(b);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  for (const [bucket, n] of counts) certificates.labels(kind, bucket).set(n);
}

export function countAuditWritten(n: number, headSeq: number): void {
  auditWritten.inc(n);
  auditHead.set(headSeq);
}

export function setSinkLag(sink: string, events: number): void {
  sinkLag.labels(sink).set(events);
}

export function countDropped(sink: string, n: number): void {
  if (n > 0) dropped.labels(sink).inc(n);
}

export function countCheckpoint(): void {
  checkpoints.inc();
}

export function countAlert(rule: string, severity: string): void {
  alertsFired.labels(rule, severity).inc();
}

export function setBansActive(n: number): void {
  bansActive.set(n);
}

export function countBannedRequest(): void {
  bannedRequests.inc();
}

const eventsPruned = new Counter({
  name: "zt_events_pruned_total",
  help: "Rows of the event bus's events table deleted for being older than events.retention.",
  registers: [metrics],
});

const eventResyncs = new Counter({
  name: "zt_events_resyncs_total",
  help: "Full re-reads of state from the store because events were pruned past this process's position.",
  registers: [metrics],
});

const policyWatchErrors = new Counter({
  name: "zt_policy_watch_errors_total",
  help: "Failures of the file watch on the policy folder (each falls back to polling it).",
  registers: [metrics],
});

export function countEventsPruned(n: number): void {
  if (n > 0) eventsPruned.inc(n);
}

export function countEventResync(): void {
  eventResyncs.inc();
}

export function countPolicyWatchError(): void {
  policyWatchErrors.inc();
}

const configReloads = new Counter({
  name: "zt_config_reloads_total",
  help: "Reloads of zt.yaml (SIGHUP) in this process: applied, or refused (the last good config kept).",
  labelNames: ["outcome"] as const,
  registers: [metrics],
});

export function countConfigReload(outcome: "applied" | "refused"): void {
  configReloads.inc({ outcome });
}

const revocationListBuilds = new Counter({
  name: "zt_pki_revocation_list_builds_total",
  help: "Revocation lists built from the store by this process (ssh-krl, x509-crl): after a revocation, at the refresh time, or on first use; requests in between are served from memory.",
  labelNames: ["list"] as const,
  registers: [metrics],
});

/** Counts one build of the KRL or of a CRL (any intermediate's). */
export function countRevocationListBuild(list: "ssh-krl" | "x509-crl"): void {
  revocationListBuilds.inc({ list });
}

/** The exposition text for `/metrics`. */
export async function renderMetrics(): Promise<{ contentType: string; body: string }> {
  return { contentType: metrics.contentType, body: await metrics.metrics() };
}
