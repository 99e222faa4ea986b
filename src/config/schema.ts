import { z } from "zod";
import { parseCidr } from "../core/cidr.js";

/**
 * The zt.yaml schema. Top-level keys and the `routes` entries are a public contract;
 * unknown keys are refused so a typo is an error, not a silently ignored setting.
 */

const duration = z.union([z.string(), z.number()]);

/** A time zone the PEP's Intl.DateTimeFormat accepts (it throws at start otherwise). */
function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-GB", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const listenAddress = z
  .string()
  .regex(
    /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/,
    'expected "host:port", e.g. "127.0.0.1:8443"',
  )
  .refine((s) => Number(/:(\d+)$/.exec(s)?.[1] ?? 0) <= 65535, "expected a port from 0 to 65535");

/** An IP address or CIDR (strict: see parseCidr). */
const cidr = z
  .string()
  .refine((s) => parseCidr(s) !== undefined, "expected an IP address or CIDR, e.g. 10.0.0.0/8");

const urlString = (what: string) =>
  z.string().refine((s) => {
    try {
      const u = new URL(s);
      return u.protocol === "http:" || u.protocol === "https:";
    } catch {
      return false;
    }
  }, `expected an http:// or https:// URL (${what})`);

export const routeSchema = z
  .object({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "expected a lowercase name of letters, digits, - or _"),
    from: urlString("the public address users open: scheme, host, optional port and path prefix"),
    to: urlString("the upstream to forward to"),
    /** Pass the original Host header to the upstream instead of the upstream's own. */
    preserve_host: z.boolean().default(false),
    /** Allow WebSocket upgrades (decided like any other request). */
    websockets: z.boolean().default(true),
    /**
     * Other pages (`scheme://host[:port]` origins) whose scripts may open a WebSocket on
     * this route with the user's session; the route's own origin always may.
     */
    websocket_origins: z.array(z.string()).optional(),
    /** Cedar action to use instead of the HTTP method (e.g. "ssh:sign"). */
    action: z.string().optional(),
    /** Upstream request timeout. */
    timeout: duration.default("30s"),
    /** Present zt's own SVID to the upstream (mTLS) when it is https. */
    upstream_mtls: z.boolean().default(false),
    /**
     * PEM file of the CA certificates that verify an https upstream (a private CA),
     * instead of the system's trusted CAs (or zt's bundle, with upstream_mtls).
     */
    upstream_ca: z.string().min(1, "expected the path of a PEM file of CA certificates").optional(),
  })
  .strict();

export const tlsSchema = z
  .object({
    cert: z.string().optional(),
    key: z.string().optional(),
    /** Issue the listener certificate from zt's own CA. */
    from_ca: z.boolean().default(false),
    /** Ask clients for a certificate (SVID) and verify it against zt's CA. */
    client_certs: z.enum(["off", "optional", "require"]).default("optional"),
  })
  .strict();

export const configSchema = z
  .object({
    data_dir: z.string().default("./data"),
    database_url: z.string().optional(),
    trust_domain: z
      .string()
      .regex(/^[a-z0-9._-]+$/, "expected a lowercase trust domain name, e.g. example.test")
      .default("example.test"),
    listen: z
      .object({
        proxy: listenAddress.default("127.0.0.1:8443"),
        api: listenAddress.default("127.0.0.1:8400"),
        /**
         * PEP worker processes sharing listen.proxy (node:cluster): 1 = the PEP runs in
         * the zt process itself; "auto" = one per CPU.
         */
        proxy_workers: z
          .union([
            z.literal("auto"),
            z
              .number({ error: 'expected a whole number of workers (1–64) or "auto"' })
              .int("expected a whole number of workers")
              .min(1)
              .max(64),
          ])
          .default(1),
      })
      .strict()
      .default({ proxy: "127.0.0.1:8443", api: "127.0.0.1:8400", proxy_workers: 1 }),
    /** Public URL of the PEP listener, used for login redirects. Defaults from listen.proxy. */
    public_url: urlString("the PEP's public URL").optional(),
    tls: tlsSchema.optional(),
    routes: z.array(routeSchema).default([]),
    policies: z.string().default("./policies"),
    /** compiled: zt's own evaluator (fast); reference: @cedar-policy/cedar-wasm. */
    policy_engine: z.enum(["compiled", "reference"]).default("compiled"),
    /** Policy test files that must pass before a policy set is loaded. */
    policy_tests: z.array(z.string()).default([]),
    /** File holding the 32-byte master key (base64 or hex) that encrypts keys at rest. */
    master_key_file: z.string().optional(),
    trusted_proxies: z.array(cidr).default(["127.0.0.1/32", "::1/128"]),
    api: z
      .object({
        /**
         * Reverse proxies in front of the control-plane API (listen.api): from a peer in
         * this list, the caller's address is the right-most X-Forwarded-For entry that is
         * not itself listed, as on the PEP. Empty (the default): the API reads no
         * X-Forwarded-For; the caller is the TCP peer. Separate from the top-level
         * trusted_proxies, which is the PEP's.
         */
        trusted_proxies: z.array(cidr).default([]),
      })
      .strict()
      .default({ trusted_proxies: [] }),
    forward_auth: z
      .object({
        /**
         * Answer forward-auth (`/.zt/authz` on the PEP listener, the SPOE agent). Off
         * when zt is only a proxy: then a client behind a trusted TLS terminator cannot
         * ask it for decisions on other paths or for an assertion of its own.
         */
        enabled: z.boolean().default(true),
        /**
         * Which headers name the original request: "auto" (either convention, both at
         * once refused), or pinned to the front proxy's own: "x-original" (nginx
         * auth_request) or "x-forwarded" (Caddy, Traefik, HAProxy); the other
         * convention's headers are then never read.
         */
        headers: z
          .enum(["auto", "x-original", "x-forwarded"], {
            error:
              'expected "auto", "x-original" (nginx) or "x-forwarded" (Caddy, Traefik, HAProxy)',
          })
          .default("auto"),
        /**
         * Where zt answers HAProxy's SPOE (forward-auth without Lua), e.g.
         * "127.0.0.1:12345". Off when absent. Only trusted_proxies may connect.
         */
        spoa_listen: listenAddress.optional(),
      })
      .strict()
      .refine((f) => f.enabled || f.spoa_listen === undefined, {
        message: "spoa_listen is forward-auth: it needs forward_auth.enabled: true",
        path: ["spoa_listen"],
      })
      .default({ enabled: true, headers: "auto" }),
    session: z
      .object({
        ttl: duration.default("12h"),
        idle_timeout: duration.default("2h"),
        cookie_name: z
          .string()
          .regex(/^[A-Za-z0-9_-]+$/)
          .default("zt_session"),
        /** Written into Set-Cookie as is: a domain name, nothing else. */
        cookie_domain: z
          .string()
          .regex(
            /^\.?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
            'expected a domain name, e.g. ".example.test"',
          )
          .optional(),
        /** Re-check live sessions at least this often, so time-based conditions apply. */
        recheck_interval: duration.default("30s"),
      })
      .strict()
      // RFC 6265bis §4.1.3.2: a `__Host-` cookie (the prefix matched case-insensitively)
      // with a Domain attribute is dropped by the browser, so no sign-in would stick.
      .refine(
        (s) => s.cookie_domain === undefined || !s.cookie_name.toLowerCase().startsWith("__host-"),
        {
          message:
            "a __Host- cookie cannot have a Domain (browsers drop it): remove session.cookie_domain, or the __Host- prefix",
          path: ["cookie_name"],
        },
      )
      .default({
        ttl: "12h",
        idle_timeout: "2h",
        cookie_name: "zt_session",
        recheck_interval: "30s",
      }),
    limits: z
      .object({
        max_header_bytes: z.number().int().positive().default(16_384),
        max_body_bytes: z
          .number()
          .int()
          .positive()
          .default(10 * 1024 * 1024),
        header_timeout: duration.default("10s"),
        request_timeout: duration.default("60s"),
        max_connections_per_source: z.number().int().positive().default(256),
        /**
         * How long an exchange under way on a route a reload removed or changed may run on
         * before it is cut; "0s" cuts at once.
         */
        reload_grace: duration.default("10s"),
      })
      .strict()
      .default({
        max_header_bytes: 16_384,
        max_body_bytes: 10 * 1024 * 1024,
        header_timeout: "10s",
        request_timeout: "60s",
        max_connections_per_source: 256,
        reload_grace: "10s",
      }),
    mfa: z
      .object({
        issuer: z.string().default("zt"),
        max_failures: z.number().int().positive().default(3),
        failure_window: duration.default("30s"),
      })
      .strict()
      .default({ issuer: "zt", max_failures: 3, failure_window: "30s" }),
    /** CIDR → label, exposed to policies as context.network. */
    network_labels: z.record(z.string(), z.array(cidr)).default({}),
    /** Time zone for context.local_hour / business-hours policies. */
    time_zone: z
      .string()
      .refine(isTimeZone, 'expected an IANA time zone, e.g. "UTC" or "Europe/Paris"')
      .default("UTC"),
    /** How long a PEP keeps deciding from cached state when the store is unreachable. */
    max_staleness: duration.default("5m"),
    /** The event bus's `events` table (revocations, policy and membership changes …). */
    events: z
      .object({
        /**
         * Events older than this are pruned. A process whose position fell further behind
         * (cut off or suspended longer) re-reads its state from the store instead.
         */
        retention: duration.default("24h"),
      })
      .strict()
      .default({ retention: "24h" }),
    /** Capability sections owned by their folders (validated there). */
    pki: z.record(z.string(), z.unknown()).optional(),
    audit: z.record(z.string(), z.unknown()).optional(),
    alerts: z.record(z.string(), z.unknown()).optional(),
    devices: z.record(z.string(), z.unknown()).optional(),
    access: z.record(z.string(), z.unknown()).optional(),
    notifications: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type RawConfig = z.infer<typeof configSchema>;
export type RouteConfig = z.infer<typeof routeSchema>;
