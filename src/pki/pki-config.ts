import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { parseDuration } from "../core/duration.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const duration = z.union([z.string(), z.number()]);

/** The longest a join token may live: the bound of `pki.join_token_ttl` and of `zt cert token --ttl`. */
export const MAX_JOIN_TOKEN_TTL_MS = 30 * DAY;

const pkiSchema = z
  .object({
    /** Default SVID lifetime. */
    svid_ttl: duration.default("1h"),
    /** Longest SVID lifetime anyone may ask for (never above 24h). */
    svid_max_ttl: duration.default("24h"),
    root_ttl: duration.default("3650d"),
    intermediate_ttl: duration.default("365d"),
    /**
     * Rotate the intermediate when it has less than this left. Default: a third of
     * intermediate_ttl (about 122 days for 365d).
     */
    intermediate_rotate_before: duration.optional(),
    /** Rotate the intermediate automatically (`zt up`); false: by hand only. */
    auto_rotate: z.boolean().default(true),
    /** CRL nextUpdate distance. */
    crl_ttl: duration.default("24h"),
    join_token_ttl: duration.default("1h"),
    ssh: z
      .object({
        user_ttl: duration.default("8h"),
        max_ttl: duration.default("24h"),
        host_ttl: duration.default("30d"),
      })
      .strict()
      .default({ user_ttl: "8h", max_ttl: "24h", host_ttl: "30d" }),
  })
  .strict();

/** The validated `pki` section, durations in milliseconds. */
export interface PkiSettings {
  trustDomain: string;
  svidTtlMs: number;
  svidMaxTtlMs: number;
  rootTtlMs: number;
  intermediateTtlMs: number;
  /** The intermediate is rotated when it has less than this left. */
  intermediateRotateBeforeMs: number;
  /** Whether `zt up` rotates the intermediate by itself. */
  autoRotate: boolean;
  crlTtlMs: number;
  joinTokenTtlMs: number;
  sshUserTtlMs: number;
  sshMaxTtlMs: number;
  sshHostTtlMs: number;
}

/**
 * Parses the `pki` section of zt.yaml. Errors name the key path, e.g.
 * `pki.svid_ttl: expected a duration like 30s, 15m, 1h or 7d`.
 */
export function parsePkiSettings(raw: unknown, trustDomain: string): PkiSettings {
  const result = pkiSchema.safeParse(raw ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = ["pki", ...issue.path.map(String)].join(".");
    const msg =
      issue.code === "unrecognized_keys"
        ? `unknown key(s) ${issue.keys.join(", ")}`
        : issue.message;
    throw new ZtError("ZT_CONFIG_INVALID", `${path}: ${msg}`, { key: path });
  }
  const c = result.data;
  const d = (v: string | number, key: string): number => {
    try {
      return parseDuration(v, `pki.${key}`);
    } catch (e) {
      throw new ZtError("ZT_CONFIG_INVALID", (e as Error).message, { key: `pki.${key}` });
    }
  };
  const intermediateTtlMs = d(c.intermediate_ttl, "intermediate_ttl");
  const settings: PkiSettings = {
    trustDomain,
    svidTtlMs: d(c.svid_ttl, "svid_ttl"),
    svidMaxTtlMs: d(c.svid_max_ttl, "svid_max_ttl"),
    rootTtlMs: d(c.root_ttl, "root_ttl"),
    intermediateTtlMs,
    intermediateRotateBeforeMs:
      c.intermediate_rotate_before === undefined
        ? Math.round(intermediateTtlMs / 3)
        : d(c.intermediate_rotate_before, "intermediate_rotate_before"),
    autoRotate: c.auto_rotate,
    crlTtlMs: d(c.crl_ttl, "crl_ttl"),
    joinTokenTtlMs: d(c.join_token_ttl, "join_token_ttl"),
    sshUserTtlMs: d(c.ssh.user_ttl, "ssh.user_ttl"),
    sshMaxTtlMs: d(c.ssh.max_ttl, "ssh.max_ttl"),
    sshHostTtlMs: d(c.ssh.host_ttl, "ssh.host_ttl"),
  };
  const bound = (ms: number, max: number, key: string, what: string) => {
    if (ms <= 0 || ms > max) {
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `pki.${key}: expected a duration above 0 and at most ${what}`,
        {
          key: `pki.${key}`,
        },
      );
    }
  };
  bound(settings.svidMaxTtlMs, DAY, "svid_max_ttl", "24h");
  bound(settings.svidTtlMs, settings.svidMaxTtlMs, "svid_ttl", "pki.svid_max_ttl");
  bound(settings.sshMaxTtlMs, DAY, "ssh.max_ttl", "24h");
  bound(settings.sshUserTtlMs, settings.sshMaxTtlMs, "ssh.user_ttl", "pki.ssh.max_ttl");
  bound(settings.sshHostTtlMs, 400 * DAY, "ssh.host_ttl", "400d");
  bound(settings.intermediateTtlMs, settings.rootTtlMs, "intermediate_ttl", "pki.root_ttl");
  bound(settings.rootTtlMs, 30 * 365 * DAY, "root_ttl", "30 years");
  const rotateBefore = settings.intermediateRotateBeforeMs;
  // Equal to the lifetime would mean "rotate as soon as it is made", for ever.
  if (rotateBefore <= 0 || rotateBefore >= intermediateTtlMs) {
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      "pki.intermediate_rotate_before: expected a duration above 0 and below pki.intermediate_ttl",
      { key: "pki.intermediate_rotate_before" },
    );
  }
  bound(settings.crlTtlMs, 30 * DAY, "crl_ttl", "30d");
  bound(settings.joinTokenTtlMs, MAX_JOIN_TOKEN_TTL_MS, "join_token_ttl", "30d");
  return settings;
}
