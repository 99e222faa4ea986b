import { isIP, isIPv4 } from "node:net";
import { CidrSet, parseCidr } from "../../core/cidr.js";
import {
  formatIp,
  formatNetwork,
  networkAround,
  parseIp,
  type IpNetwork,
} from "../../core/ip-address.js";
import type { AlertsConfig, JailConfig } from "./alerts-config.js";

/** The fields of an audit record the rules look at. */
export interface AlertEvent {
  seq: number;
  ts: number;
  kind: string;
  outcome: string;
  subject: string | null;
  source_ip: string | null;
  route: string | null;
  reason: string | null;
  data: Record<string, unknown>;
}

export type AlertSeverity = "info" | "warning" | "high" | "critical";

export interface Alert {
  rule: string;
  severity: AlertSeverity;
  /** What it is about: `ip:…`, `user:…`, `user:…|route:…`. */
  key: string;
  message: string;
  /** The seq of the event that fired it, and its time. */
  seq: number;
  ts: number;
  data: Record<string, unknown>;
}

export interface Ban {
  /** `ip:<address>` or `user:<name>` */
  key: string;
  kind: "ip" | "user";
  value: string;
  rule: string;
  reason: string;
  createdAt: number;
  until: number;
  /** The how-many-th ban of this key (bantime grows with it). */
  count: number;
}

export interface EvaluateResult {
  alerts: Alert[];
  bans: Ban[];
}

/** Login failures the regulation counts (TOTP ones are counted separately). */
const TOTP_REASONS = new Set(["mfa-invalid", "mfa-malformed", "mfa-replayed"]);
const LOGIN_REASONS = new Set(["bad-password", "unknown-user", "auth-failed", "user-disabled"]);

/**
 * Refusal reasons a third party's page causes in the user's own browser (Cross-Site
 * WebSocket Hijacking refused at the handshake): evidence against the page, not the source.
 */
const BROWSER_INDUCED_REFUSALS: ReadonlySet<string> = new Set(["websocket-origin"]);

/**
 * Credentials the control-plane API refused from a caller who had not authenticated:
 * `kind:outcome` → the reasons counted. Each is a secret presented that matched nothing
 * it could be — a guess — never what a signed-in user or a working agent meets in
 * normal use:
 * - `svid.issue`: a join token that names no token (`token-unknown`) or was already used
 *   (`token-used`: single use, so a second try is a replay); a renewal proof not signed by
 *   the presented SVID's key (`renew-proof-invalid`: the certificate is public, its key
 *   is not). Not `token-expired` (a real token, late: an agent retrying it must not lock
 *   its host out of the join with a new one), nor a refused CSR or name (an
 *   authenticated caller's request).
 * - `device.report`, `device.bind`: a signature that does not verify with the device's
 *   key, or a device id no device has. Not `no-session-token`, a stale or replayed
 *   report, or a refusal after the signature verified.
 * - `ssh.sign` refused before any caller was known (no subject): a session token that
 *   names no session (`session-invalid`). Not `no-credentials` (nothing guessed), nor an
 *   expired, idle or revoked session (a real user's old token), nor a policy deny (a
 *   `denial`, with a subject).
 * - `authn.operator-token`: a bearer token on `/metrics` that is not the operator's
 *   (`operator-token-invalid`). Not `no-credentials` (a scraper without a token).
 * Refused client certificates are not counted: a browser may offer any certificate it
 * holds, so the API's `authn.mtls` refusals include real users' (the `mtls_failures`
 * alert reports them).
 */
const API_REFUSALS: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ["svid.issue:failure", new Set(["token-unknown", "token-used", "renew-proof-invalid"])],
  ["device.report:failure", new Set(["device-signature-invalid", "device-unknown"])],
  ["device.bind:failure", new Set(["device-signature-invalid", "device-unknown"])],
  ["ssh.sign:deny", new Set(["session-invalid"])],
  ["authn.operator-token:deny", new Set(["operator-token-invalid"])],
]);

function isApiRefusal(e: AlertEvent): boolean {
  if (e.reason === null) return false;
  if (e.kind === "ssh.sign" && e.subject !== null) return false;
  return API_REFUSALS.get(`${e.kind}:${e.outcome}`)?.has(e.reason) ?? false;
}

/** What a jail counts. */
export function jailMatches(match: JailConfig["match"], e: AlertEvent): boolean {
  switch (match) {
    case "login-failure":
      return (
        e.kind === "login" &&
        e.outcome === "failure" &&
        (e.reason === null || LOGIN_REASONS.has(e.reason))
      );
    case "totp-failure":
      return (
        (e.kind === "login" || e.kind.startsWith("mfa")) &&
        e.outcome === "failure" &&
        TOTP_REASONS.has(e.reason ?? "")
      );
    case "denial":
      return isDenial(e);
    case "refused":
      // Requests the PEP turned away before deciding: malformed, ambiguous, no route.
      // Not those a foreign page makes a signed-in browser send: their source is the
      // victim, whom a ban would lock out for the attacker.
      return e.kind === "request.refused" && !BROWSER_INDUCED_REFUSALS.has(e.reason ?? "");
    case "api-refused":
      return isApiRefusal(e);
  }
}

function isDenial(e: AlertEvent): boolean {
  return e.kind === "decision" && e.outcome === "deny";
}

/**
 * A client certificate refused by the PEP or the API (`authn.mtls`, outcome deny):
 * revoked, expired, untrusted, from another trust domain, or missing where required.
 */
function isMtlsFailure(e: AlertEvent): boolean {
  return e.kind === "authn.mtls" && e.outcome === "deny";
}

function isBreakGlass(e: AlertEvent): boolean {
  return (
    e.kind.includes("breakglass") || e.kind.includes("break-glass") || e.reason === "breakglass"
  );
}

/** Events the engine itself produces: never fed back in. */
function isOwnEvent(e: AlertEvent): boolean {
  return e.kind === "alert" || e.kind.startsWith("ban.");
}

/** Timestamps in a sliding window. */
class Window {
  #ts: number[] = [];
  /** The newest timestamp and the window's length: past `last + windowMs` it is empty. */
  last = 0;
  windowMs = 0;
  add(ts: number, windowMs: number): number {
    this.#ts.push(ts);
    this.last = Math.max(this.last, ts);
    this.windowMs = windowMs;
    const from = ts - windowMs;
    let i = 0;
    while (i < this.#ts.length && this.#ts[i]! <= from) i++;
    if (i > 0) this.#ts.splice(0, i);
    return this.#ts.length;
  }
  clear(): void {
    this.#ts = [];
  }
}

/** Events between two sweeps of state that no window can still count (at least). */
const SWEEP_EVERY = 1_000;

/**
 * The alert rules as a pure state machine: feed it audit events in order, it returns
 * the alerts and bans they cause. Windows are measured in event time (`ts`), so a
 * replay gives the same answers; no clock, no I/O.
 *
 * Regulation follows fail2ban: `maxretry` matches within `findtime` bans the key for
 * `bantime × factor^(n-1)` (capped), counting resets after a ban; allow-listed sources
 * and users are never counted.
 */
export class AlertEngine {
  #c: AlertsConfig;
  readonly #allowIps: CidrSet;
  #sharedIps: CidrSet;
  readonly #allowUsers: Set<string>;
  readonly #windows = new Map<string, Window>();
  readonly #bannedUntil = new Map<string, number>();
  readonly #banCounts: Map<string, number>;
  readonly #lastFired = new Map<string, { ts: number; windowMs: number }>();
  readonly #fanOut = new Map<string, Map<string, number>>();
  readonly #networks = new Map<string, Set<string>>();
  /** The allow list and the trusted proxies as networks, to keep network bans clear of them. */
  #allowNets: IpNetwork[] = [];
  /** The newest event time seen; events since the last sweep, and how many before the next. */
  #now = 0;
  #sinceSweep = 0;
  #sweepAfter = SWEEP_EVERY;

  /** `banCounts`: how many times each key was banned before (from the bans table). */
  constructor(config: AlertsConfig, banCounts: ReadonlyMap<string, number> = new Map()) {
    this.#c = config;
    this.#banCounts = new Map(banCounts);
    this.#allowUsers = new Set(config.allowUsers);
    this.#allowIps = new CidrSet(config.allowIps, "alerts.allow.ips");
    this.#sharedIps = new CidrSet(config.sharedIps, "trusted_proxies");
    this.#allowNets = networksOf([...config.allowIps, ...config.sharedIps]);
  }

  /**
   * Replaces the addresses IP jails never ban (`trusted_proxies` and
   * `api.trusted_proxies`, after a reload of zt.yaml changed them): both lists at once,
   * from the next event on. Windows and bans already counted stay as they are.
   */
  setSharedIps(cidrs: readonly string[]): void {
    const shared = new CidrSet(cidrs, "trusted_proxies");
    const nets = networksOf([...this.#c.allowIps, ...cidrs]);
    this.#c = { ...this.#c, sharedIps: [...cidrs] };
    this.#sharedIps = shared;
    this.#allowNets = nets;
  }

  /**
   * What an IP jail counts and bans for a source: an IPv6 address's network of
   * `ban_ipv6_prefix` bits (its owner holds them all), unless that network reaches into
   * the allow list (then the address alone: an allow-listed host is never banned).
   */
  #ipBanTarget(ip: string): string {
    const prefix = this.#c.banIpv6Prefix;
    if (prefix >= 128) return ip;
    const p = parseIp(ip);
    if (!p || p.family !== 6) return ip;
    const net = networkAround(6, p.value, prefix);
    for (const a of this.#allowNets) {
      if (a.family !== 6) continue;
      const bits = Math.min(a.prefix, net.prefix);
      if (networkAround(6, a.base, bits).base === networkAround(6, net.base, bits).base) return ip;
    }
    return formatNetwork(net);
  }

  isAllowListedIp(ip: string): boolean {
    return this.#allowIps.has(ip);
  }

  /** Evaluates one event. */
  evaluate(e: AlertEvent): EvaluateResult {
    const out: EvaluateResult = { alerts: [], bans: [] };
    if (!this.#c.enabled || isOwnEvent(e)) return out;
    this.#now = Math.max(this.#now, e.ts);
    if (++this.#sinceSweep >= this.#sweepAfter) this.#sweep();
    const ip = (e.source_ip && canonicalIp(e.source_ip)) || null;
    const user = e.subject;
    const ipAllowed = ip !== null && this.isAllowListedIp(ip);
    const userAllowed = user !== null && this.#allowUsers.has(user);

    for (const jail of this.#c.jails) {
      if (!jailMatches(jail.match, e)) continue;
      const value = jail.by === "ip" ? ip && this.#ipBanTarget(ip) : user;
      if (value === null || (jail.by === "ip" ? ipAllowed : userAllowed)) continue;
      const key = `${jail.by}:${value}`;
      if ((this.#bannedUntil.get(key) ?? 0) > e.ts) continue; // already banned
      const n = this.#window(`jail:${jail.name}:${key}`).add(e.ts, jail.findtimeMs);
      if (n < jail.maxretry) continue;
      this.#window(`jail:${jail.name}:${key}`).clear();
      if (jail.by === "ip" && ip !== null && this.#sharedIps.has(ip)) {
        // A trusted proxy: every client behind it shares this address, so a ban would shut
        // them all out (and close forward-auth). Say so instead, once per findtime.
        if (this.#cooled(`shared:${jail.name}:${key}`, e.ts, jail.findtimeMs))
          out.alerts.push(
            this.#alert(
              e,
              jail.name,
              "warning",
              key,
              `${key} not banned: ${n} ${jail.match} within ${jail.findtimeMs / 1000}s, but it is in trusted_proxies (or api.trusted_proxies), whose clients all share its address; find the client in the proxy's logs, or ban it by hand (zt ban add)`,
              { shared: true },
            ),
          );
        continue;
      }
      const count = (this.#banCounts.get(key) ?? 0) + 1;
      this.#banCounts.set(key, count);
      const duration = Math.min(
        jail.bantimeMs * jail.bantimeFactor ** (count - 1),
        jail.maxBantimeMs,
      );
      const until = e.ts + duration;
      this.#bannedUntil.set(key, until);
      const ban: Ban = {
        key,
        kind: jail.by,
        value,
        rule: jail.name,
        reason: `${n} ${jail.match} within ${jail.findtimeMs / 1000}s`,
        createdAt: e.ts,
        until,
        count,
      };
      out.bans.push(ban);
      out.alerts.push(
        this.#alert(
          e,
          jail.name,
          "warning",
          key,
          `${key} banned for ${Math.round(duration / 1000)}s (ban #${count}): ${ban.reason}`,
          {
            until,
            count,
          },
        ),
      );
    }

    const burst = this.#c.denialBurst;
    if (burst && ip && isDenial(e)) {
      const key = `ip:${ip}`;
      const n = this.#window(`burst:${key}`).add(e.ts, burst.windowMs);
      if (n >= burst.threshold && this.#cooled(`burst:${key}`, e.ts, burst.windowMs)) {
        out.alerts.push(
          this.#alert(
            e,
            "denial-burst",
            "warning",
            key,
            `${n} denials from ${ip} within ${burst.windowMs / 1000}s`,
            { count: n },
          ),
        );
      }
    }

    const fan = this.#c.fanOut;
    if (fan && ip && isDenial(e) && e.route) {
      const key = `ip:${ip}`;
      let routes = this.#fanOut.get(key);
      if (!routes) this.#fanOut.set(key, (routes = new Map()));
      routes.set(e.route, e.ts);
      for (const [r, t] of routes) if (t <= e.ts - fan.windowMs) routes.delete(r);
      if (routes.size >= fan.distinctRoutes && this.#cooled(`fan:${key}`, e.ts, fan.windowMs)) {
        out.alerts.push(
          this.#alert(
            e,
            "fan-out",
            "high",
            key,
            `${ip} was denied on ${routes.size} distinct routes within ${fan.windowMs / 1000}s (lateral-movement probe?)`,
            {
              routes: [...routes.keys()].sort(),
            },
          ),
        );
      }
    }

    const mtls = this.#c.mtlsFailures;
    if (mtls && ip && isMtlsFailure(e)) {
      const key = `ip:${ip}`;
      const n = this.#window(`mtls:${key}`).add(e.ts, mtls.windowMs);
      if (n >= mtls.threshold && this.#cooled(`mtls:${key}`, e.ts, mtls.windowMs)) {
        out.alerts.push(
          this.#alert(
            e,
            "mtls-failures",
            "warning",
            key,
            `${n} failed mTLS handshakes from ${ip} within ${mtls.windowMs / 1000}s`,
            { count: n },
          ),
        );
      }
    }

    const nn = this.#c.newNetwork;
    if (nn && ip && user && e.route && e.kind === "decision" && e.outcome === "allow") {
      const net = networkOf(ip, nn.ipv4Prefix, nn.ipv6Prefix);
      const key = `user:${user}|route:${e.route}`;
      const seen = this.#networks.get(key);
      if (!seen) this.#networks.set(key, new Set([net]));
      else if (!seen.has(net)) {
        seen.add(net);
        out.alerts.push(
          this.#alert(
            e,
            "new-network",
            "info",
            key,
            `${user} reached ${e.route} from a new network ${net}`,
            {
              network: net,
              known: [...seen].filter((x) => x !== net).sort(),
            },
          ),
        );
      }
    }

    if (this.#c.breakGlass && isBreakGlass(e)) {
      const key = user ? `user:${user}` : `event:${e.kind}`;
      out.alerts.push(
        this.#alert(
          e,
          "break-glass",
          "critical",
          key,
          `break-glass: ${e.kind} by ${user ?? "?"}${e.route ? ` on ${e.route}` : ""} (${e.outcome})`,
          {},
        ),
      );
    }
    return out;
  }

  /**
   * How many keys (sources, users, rule windows) the engine holds state for. State that
   * no window can count any more is swept away every so many events, so this follows the
   * sources active within the rules' windows, not every source ever seen (an IPv6 sender
   * has addresses enough to exhaust memory otherwise).
   */
  get trackedKeys(): number {
    return this.#windows.size + this.#lastFired.size + this.#fanOut.size + this.#bannedUntil.size;
  }

  /** Drops windows, cool-downs, fan-out routes and bans that have run out by event time. */
  #sweep(): void {
    this.#sinceSweep = 0;
    const now = this.#now;
    for (const [k, w] of this.#windows) if (w.last <= now - w.windowMs) this.#windows.delete(k);
    for (const [k, f] of this.#lastFired) if (now - f.ts >= f.windowMs) this.#lastFired.delete(k);
    const fanWindow = this.#c.fanOut?.windowMs ?? 0;
    for (const [k, routes] of this.#fanOut) {
      for (const [r, t] of routes) if (t <= now - fanWindow) routes.delete(r);
      if (routes.size === 0) this.#fanOut.delete(k);
    }
    for (const [k, until] of this.#bannedUntil) if (until <= now) this.#bannedUntil.delete(k);
    // The next sweep after as many events as keys are left: O(1) per event, amortised.
    this.#sweepAfter = Math.max(SWEEP_EVERY, this.trackedKeys);
  }

  /** Takes over the sliding windows and learned networks of another engine (after a replay). */
  adoptWindows(other: AlertEngine): void {
    for (const [k, v] of other.#windows) this.#windows.set(k, v);
    for (const [k, v] of other.#fanOut) this.#fanOut.set(k, v);
    for (const [k, v] of other.#networks) this.#networks.set(k, v);
    for (const [k, v] of other.#lastFired) this.#lastFired.set(k, v);
    this.#now = Math.max(this.#now, other.#now);
  }

  /**
   * Replaces every ban this engine knows with `active` (the bans table as it stands): after
   * events were pruned past this process's position, a `zt ban remove` it never heard
   * would otherwise keep the key marked as banned and stop it from being banned again.
   */
  replaceBans(active: Iterable<{ key: string; until: number }>): void {
    this.#bannedUntil.clear();
    for (const b of active) this.#bannedUntil.set(b.key, b.until);
  }

  /** Forgets a ban (after `zt ban remove`), so counting starts again. */
  lift(key: string): void {
    this.#bannedUntil.delete(key);
  }

  #window(key: string): Window {
    let w = this.#windows.get(key);
    if (!w) this.#windows.set(key, (w = new Window()));
    return w;
  }

  /** True (and marks it fired) when the rule has not fired for this key within `windowMs`. */
  #cooled(key: string, ts: number, windowMs: number): boolean {
    const last = this.#lastFired.get(key);
    if (last !== undefined && ts - last.ts < windowMs) return false;
    this.#lastFired.set(key, { ts, windowMs });
    return true;
  }

  #alert(
    e: AlertEvent,
    rule: string,
    severity: AlertSeverity,
    key: string,
    message: string,
    data: Record<string, unknown>,
  ): Alert {
    return { rule, severity, key, message, seq: e.seq, ts: e.ts, data };
  }
}

/**
 * An address as the PEP writes it and `isBanned` looks it up: IPv4 dotted, IPv4-mapped
 * IPv6 as IPv4, other IPv6 in RFC 5952 form (`2001:DB8:0::7` is `2001:db8::7`).
 * Undefined for anything that is not an address.
 */
export function canonicalIp(text: string): string | undefined {
  if (isIPv4(text)) return text; // node:net accepts only the canonical dotted form
  const p = parseIp(text);
  if (!p) return isIP(text) ? text : undefined; // a zone id (fe80::1%eth0) is kept as is
  if (p.family === 6 && p.value >> 32n === 0xffffn) return formatIp(4, p.value & 0xffffffffn);
  return formatIp(p.family, p.value);
}

/** CIDRs (or addresses) as networks: an IPv6 network ban must not reach any of them. */
function networksOf(cidrs: readonly string[]): IpNetwork[] {
  const out: IpNetwork[] = [];
  for (const c of cidrs) {
    const parsed = parseCidr(c);
    const ip = parsed && parseIp(parsed.address);
    if (ip) out.push(networkAround(ip.family, ip.value, parsed.bits));
  }
  return out;
}

/** The network an address belongs to, as a CIDR string (IPv4-mapped IPv6 counts as IPv4). */
export function networkOf(ip: string, v4Prefix: number, v6Prefix: number): string {
  const p = parseIp(canonicalIp(ip) ?? ip);
  if (!p) return ip;
  return formatNetwork(networkAround(p.family, p.value, p.family === 4 ? v4Prefix : v6Prefix));
}
