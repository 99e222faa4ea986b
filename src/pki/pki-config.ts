import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { parseDuration } from "../core/duration.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const duration = z.union([z.string(), z.number()]);

const pkiSchema = z
  .object({
    /** Default SVID lifetime. */
    svid_ttl: duration.default("1h"),
    /** Longest SVID lifetime anyone may ask for (never above 24h). */
    svid_max_ttl: duration.default("24h"),
    root_ttl: duration.default("3650d"),
    intermediate_ttl: duration.default("365d"),
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
  const settings: PkiSettings = {
    trustDomain,
    svidTtlMs: d(c.svid_ttl, "svid_ttl"),
    svidMaxTtlMs: d(c.svid_max_ttl, "svid_max_ttl"),
    rootTtlMs: d(c.root_ttl, "root_ttl"),
    intermediateTtlMs: d(c.intermediate_ttl, "intermediate_ttl"),
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
  bound(settings.crlTtlMs, 30 * DAY, "crl_ttl", "30d");
  bound(settings.joinTokenTtlMs, 30 * DAY, "join_token_ttl", "30d");
  return settings;
}
