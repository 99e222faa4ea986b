import { readFileSync } from "node:fs";
import { createPublicKey, type KeyObject } from "node:crypto";
import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { configDurationIssue, parseDuration, TIMER_MAX_MS } from "../core/duration.js";

/**
 * A config duration: `positive` refuses 0, `maxMs` bounds it (TIMER_MAX_MS for one that
 * sets a timer's period). The issue names the key (`audit.poll_interval: …`).
 */
export function configDuration(o: { positive?: boolean; maxMs?: number } = {}) {
  return z.union([z.string(), z.number()]).superRefine((v, ctx) => {
    const why = configDurationIssue(v, o);
    if (why !== undefined) ctx.addIssue({ code: "custom", message: why });
  });
}

/** The period of a timer: more than 0 (it would spin) and at most 2^31-1 ms (it would fire at once). */
const timerPeriod = configDuration({ positive: true, maxMs: TIMER_MAX_MS });

/**
 * An http(s) URL zt sends to (webhooks, SIEM sinks). Without credentials: fetch() refuses
 * a URL with `user:password@` and its error quotes the URL whole, so every delivery would
 * fail and the error of each (printed, audited) would carry the password. The message
 * never echoes the URL.
 */
export const outgoingHttpUrl = z
  .string()
  .refine(
    (s) => URL.canParse(s) && ["http:", "https:"].includes(new URL(s).protocol),
    "expected an http:// or https:// URL",
  )
  .refine((s) => {
    if (!URL.canParse(s)) return true; // refused above, as not a URL
    const u = new URL(s);
    return u.username === "" && u.password === "";
  }, "expected a URL without credentials (user:password@): send them another way (a header, a token in the path or query)");

const syslogTarget = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535),
    protocol: z.enum(["udp", "tcp", "tls"]).default("udp"),
    /** PEM CA file to verify a TLS receiver with (default: system roots). */
    ca_file: z.string().optional(),
    app_name: z
      .string()
      .regex(/^[\x21-\x7e]{1,48}$/, "expected 1-48 printable ASCII characters")
      .default("zt"),
  })
  .strict();

const sinkCommon = {
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "expected a lowercase name")
    .optional(),
  /** Events a sink may fall behind before it skips ahead (counted as dropped). */
  max_lag: z.number().int().positive().default(1_000_000),
  batch: z.number().int().positive().max(10_000).default(500),
  /** Only these kinds (prefix match, e.g. "decision", "login"). */
  kinds: z.array(z.string()).optional(),
  format: z.enum(["jsonl", "ocsf"]).default("jsonl"),
  /** Where a new sink starts: events written from now on (head) or the whole log (beginning). */
  start_at: z.enum(["head", "beginning"]).default("head"),
};

export const sinkSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("stdout"), ...sinkCommon }).strict(),
  z.object({ type: z.literal("file"), path: z.string().min(1), ...sinkCommon }).strict(),
  z.object({ type: z.literal("syslog"), ...syslogTarget.shape, ...sinkCommon }).strict(),
  z
    .object({
      type: z.literal("loki"),
      url: outgoingHttpUrl,
      labels: z.record(z.string(), z.string()).default({ job: "zt" }),
      ...sinkCommon,
    })
    .strict(),
  z
    .object({
      type: z.literal("webhook"),
      url: outgoingHttpUrl,
      headers: z.record(z.string(), z.string()).default({}),
      ...sinkCommon,
    })
    .strict(),
]);

export const auditConfigSchema = z
  .object({
    /** Checkpoint origin line; default `<trust_domain>/zt/audit`. */
    origin: z
      .string()
      .regex(/^[^\s+]+$/, "expected a name without spaces or '+'")
      .optional(),
    checkpoint_every: z.number().int().positive().default(1000),
    checkpoint_interval: timerPeriod.default("60s"),
    witness: z
      .object({
        file: z.string().optional(),
        webhook: outgoingHttpUrl.optional(),
        syslog: syslogTarget.optional(),
      })
      .strict()
      .default({}),
    /**
     * PEM file with the checkpoint public key (`zt audit public-key`), kept outside the
     * database: `zt audit verify` then trusts only it, not the keys table, and the
     * checkpointer checks a witness's notes against it.
     */
    checkpoint_public_key: z.string().min(1).optional(),
    sinks: z.array(sinkSchema).default([]),
    /** File holding a bearer token Prometheus must send to `/metrics` (optional). */
    metrics_token_file: z.string().optional(),
    /** How often sinks poll the audit table for new events. */
    poll_interval: timerPeriod.default("1s"),
    /**
     * Which allowed requests the PEP holds until their decision record is committed:
     * none (`false`, the default: the record follows within ~50 ms), requests with an
     * unsafe method (`unsafe-methods`: all but GET, HEAD, OPTIONS, TRACE), or `all`.
     */
    durable_before_forward: z
      .union([z.literal(false), z.enum(["unsafe-methods", "all"])], {
        error: 'expected false, "unsafe-methods" or "all"',
      })
      .default(false),
  })
  .strict();

export type AuditConfigRaw = z.infer<typeof auditConfigSchema>;
export type SinkConfig = z.infer<typeof sinkSchema>;
export type SyslogTarget = z.infer<typeof syslogTarget>;

export interface AuditConfig extends Omit<
  AuditConfigRaw,
  "checkpoint_interval" | "poll_interval" | "origin"
> {
  origin: string;
  checkpointIntervalMs: number;
  pollIntervalMs: number;
}

/** Validates the `audit:` section of zt.yaml; errors name the key path (`audit.sinks.0.url: …`). */
export function parseAuditConfig(raw: unknown, trustDomain: string): AuditConfig {
  const result = auditConfigSchema.safeParse(raw ?? {});
  if (!result.success) throw configError("audit", result.error.issues);
  const c = result.data;
  return {
    ...c,
    origin: c.origin ?? `${trustDomain}/zt/audit`,
    checkpointIntervalMs: parseDuration(c.checkpoint_interval),
    pollIntervalMs: parseDuration(c.poll_interval),
  };
}

export function configError(section: string, issues: readonly z.core.$ZodIssue[]): ZtError {
  const text = issues
    .slice(0, 5)
    .map((i) => `${[section, ...i.path.map(String)].join(".")}: ${i.message}`)
    .join("; ");
  return new ZtError("ZT_CONFIG_INVALID", text, { section });
}

/** RFC 9110 §9.2.1: the methods defined as safe (read-only). */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

/**
 * `audit.durable_before_forward` as a test on the request method: whether an allowed
 * request waits for its decision record to be committed (`AuditLog.whenDurable()`)
 * before it is forwarded. `undefined` when the setting is off (the default), so the hot
 * path pays nothing. Throws ZT_CONFIG_INVALID for an invalid `audit:` section.
 *
 * @example
 * const durableFor = durableBeforeForward(config.audit); // once, at start
 * if (durableFor?.(req.method ?? "GET")) await ctx.audit.whenDurable();
 */
export function durableBeforeForward(
  auditSection: unknown,
): ((method: string) => boolean) | undefined {
  const result = auditConfigSchema.safeParse(auditSection ?? {});
  if (!result.success) throw configError("audit", result.error.issues);
  const mode = result.data.durable_before_forward;
  if (mode === "all") return () => true;
  if (mode === "unsafe-methods") return (method) => !SAFE_METHODS.has(method);
  return undefined;
}

/**
 * Reads `audit.checkpoint_public_key`: an Ed25519 public key in PEM. Throws
 * ZT_CONFIG_INVALID naming the key, since a pinned key that cannot be used must not
 * quietly fall back to the keys in the database.
 */
export function readCheckpointPublicKey(file: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (e) {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `audit.checkpoint_public_key: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { key: "audit.checkpoint_public_key" },
    );
  }
  let key: KeyObject | undefined;
  try {
    key = createPublicKey(pem);
  } catch {
    key = undefined;
  }
  if (key?.asymmetricKeyType !== "ed25519") {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `audit.checkpoint_public_key: ${file} is not an Ed25519 public key in PEM (zt audit public-key prints it)`,
      { key: "audit.checkpoint_public_key" },
    );
  }
  return key;
}
