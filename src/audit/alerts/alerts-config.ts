import { z } from "zod";
import { parseCidr } from "../../core/cidr.js";
import { formatDuration, parseDuration } from "../../core/duration.js";
import { configDuration, configError, outgoingHttpUrl } from "../audit-config.js";

/** A window or ban length: 0 would count nothing or ban for nothing. */
const duration = configDuration({ positive: true });

const ipOrCidr = z
  .string()
  .refine((s) => parseCidr(s) !== undefined, "expected an IP address or CIDR, e.g. 10.0.0.0/8");

/** What a regulation jail counts (see docs/audit.md for the exact event matches). */
export const JAIL_MATCHES = [
  "login-failure",
  "totp-failure",
  "denial",
  "refused",
  "api-refused",
] as const;

const jailSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "expected a lowercase name"),
    match: z.enum(JAIL_MATCHES),
    by: z.enum(["ip", "user"]),
    maxretry: z.number().int().positive(),
    findtime: duration,
    bantime: duration,
    /** Each repeat ban lasts bantime × factor^(n-1), up to max_bantime (fail2ban bantime.increment). */
    bantime_factor: z.number().min(1).default(2),
    /** Unset: 7d, or bantime when that is longer (see maxBantimeMs). */
    max_bantime: duration.optional(),
  })
  .strict()
  // A ban never lasts longer than max_bantime: one below bantime would cut even the first.
  .superRefine((j, ctx) => {
    if (j.max_bantime === undefined) return;
    const bantime = safeDuration(j.bantime);
    const max = safeDuration(j.max_bantime);
    if (bantime !== undefined && max !== undefined && max < bantime)
      ctx.addIssue({
        code: "custom",
        path: ["max_bantime"],
        message: `expected at least bantime (${formatDuration(bantime)}), got ${formatDuration(max)}`,
      });
  });

function safeDuration(v: string | number): number | undefined {
  try {
    return parseDuration(v);
  } catch {
    return undefined;
  }
}

const thresholdSchema = z
  .object({
    threshold: z.number().int().positive(),
    window: duration,
  })
  .strict();

export const alertsConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /**
     * Sources (IPs/CIDRs) and users never banned. Loopback by default, as fail2ban's
     * `ignoreip`: a local operator or the demo must not lock themselves out; set
     * `ips: []` to regulate loopback too.
     */
    allow_list: z
      .object({
        ips: z.array(ipOrCidr).default(["127.0.0.0/8", "::1/128"]),
        users: z.array(z.string()).default([]),
      })
      .strict()
      .default({ ips: ["127.0.0.0/8", "::1/128"], users: [] }),
    jails: z.array(jailSchema).optional(),
    /**
     * An IP jail bans an IPv6 source by its network of this many bits: one subscriber or
     * LAN gets a /64 and can take a new address from it for every attempt, so a ban of
     * the single address stops nothing. 128 bans single addresses. IPv4 is always by
     * address.
     */
    ban_ipv6_prefix: z.number().int().min(32).max(128).default(64),
    denial_burst: thresholdSchema.nullable().default({ threshold: 20, window: "1m" }),
    fan_out: z
      .object({ distinct_routes: z.number().int().min(2), window: duration })
      .strict()
      .nullable()
      .default({ distinct_routes: 5, window: "5m" }),
    mtls_failures: thresholdSchema.nullable().default({ threshold: 5, window: "5m" }),
    new_network: z
      .object({
        ipv4_prefix: z.number().int().min(8).max(32).default(24),
        ipv6_prefix: z.number().int().min(16).max(128).default(64),
      })
      .strict()
      .nullable()
      .default({ ipv4_prefix: 24, ipv6_prefix: 64 }),
    break_glass: z.boolean().default(true),
    /** POSTs every alert as JSON. */
    webhook: outgoingHttpUrl.optional(),
    /** On start, replay this much history (without firing) to rebuild windows; 0: none. */
    replay: configDuration().default("1h"),
  })
  .strict();

export interface JailConfig {
  name: string;
  match: (typeof JAIL_MATCHES)[number];
  by: "ip" | "user";
  maxretry: number;
  findtimeMs: number;
  bantimeMs: number;
  bantimeFactor: number;
  maxBantimeMs: number;
}

export interface AlertsConfig {
  enabled: boolean;
  allowIps: string[];
  /**
   * `trusted_proxies` and `api.trusted_proxies`: addresses many clients share. IP jails count them but never ban
   * them (a ban would shut out every client behind the proxy); they alert instead.
   */
  sharedIps: string[];
  allowUsers: string[];
  jails: JailConfig[];
  /** IP jails ban IPv6 sources by their network of this many bits (128: by address). */
  banIpv6Prefix: number;
  denialBurst: { threshold: number; windowMs: number } | null;
  fanOut: { distinctRoutes: number; windowMs: number } | null;
  mtlsFailures: { threshold: number; windowMs: number } | null;
  newNetwork: { ipv4Prefix: number; ipv6Prefix: number } | null;
  breakGlass: boolean;
  webhook: string | undefined;
  replayMs: number;
}

/**
 * fail2ban-like defaults: logins and TOTP per IP and per user, denials per IP, and
 * credentials the control-plane API refused (join tokens, session tokens, device
 * signatures) per IP.
 */
export const DEFAULT_JAILS = [
  {
    name: "login-ip",
    match: "login-failure",
    by: "ip",
    maxretry: 5,
    findtime: "10m",
    bantime: "10m",
  },
  {
    name: "login-user",
    match: "login-failure",
    by: "user",
    maxretry: 10,
    findtime: "10m",
    bantime: "10m",
  },
  {
    name: "totp-ip",
    match: "totp-failure",
    by: "ip",
    maxretry: 5,
    findtime: "10m",
    bantime: "15m",
  },
  {
    name: "totp-user",
    match: "totp-failure",
    by: "user",
    maxretry: 5,
    findtime: "10m",
    bantime: "15m",
  },
  { name: "denial-ip", match: "denial", by: "ip", maxretry: 50, findtime: "1m", bantime: "5m" },
  {
    name: "api-ip",
    match: "api-refused",
    by: "ip",
    maxretry: 10,
    findtime: "10m",
    bantime: "10m",
  },
] as const;

/** Validates the `alerts:` section; errors name the key path (`alerts.jails.0.maxretry: …`). */
export function parseAlertsConfig(raw: unknown, sharedIps: readonly string[] = []): AlertsConfig {
  const r = alertsConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw configError("alerts", r.error.issues);
  const c = r.data;
  const jails = (c.jails ?? DEFAULT_JAILS.map((j) => jailSchema.parse(j))).map((j) => ({
    name: j.name,
    match: j.match,
    by: j.by,
    maxretry: j.maxretry,
    findtimeMs: parseDuration(j.findtime),
    bantimeMs: parseDuration(j.bantime),
    bantimeFactor: j.bantime_factor,
    maxBantimeMs: maxBantimeMs(j.bantime, j.max_bantime),
  }));
  return {
    enabled: c.enabled,
    allowIps: c.allow_list.ips,
    sharedIps: [...sharedIps],
    allowUsers: c.allow_list.users,
    jails,
    banIpv6Prefix: c.ban_ipv6_prefix,
    denialBurst: c.denial_burst && {
      threshold: c.denial_burst.threshold,
      windowMs: parseDuration(c.denial_burst.window),
    },
    fanOut: c.fan_out && {
      distinctRoutes: c.fan_out.distinct_routes,
      windowMs: parseDuration(c.fan_out.window),
    },
    mtlsFailures: c.mtls_failures && {
      threshold: c.mtls_failures.threshold,
      windowMs: parseDuration(c.mtls_failures.window),
    },
    newNetwork: c.new_network && {
      ipv4Prefix: c.new_network.ipv4_prefix,
      ipv6Prefix: c.new_network.ipv6_prefix,
    },
    breakGlass: c.break_glass,
    webhook: c.webhook,
    replayMs: parseDuration(c.replay),
  };
}

/** The default cap of a repeat ban (fail2ban's bantime.maxtime is unbounded; zt's is a week). */
const DEFAULT_MAX_BANTIME_MS = 7 * 86_400_000;

/**
 * A jail's longest ban: its `max_bantime`, or when unset 7d — or its `bantime`, when that
 * is longer (a jail asking for 30d bans gets them, not a silent 7d).
 */
function maxBantimeMs(bantime: string | number, max: string | number | undefined): number {
  if (max !== undefined) return parseDuration(max);
  return Math.max(DEFAULT_MAX_BANTIME_MS, parseDuration(bantime));
}
