import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { parsePositiveConfigDuration } from "../core/duration.js";

/** The posture checks zt knows; each is true (pass), false (fail) or null (unknown). */
export const POSTURE_CHECKS = [
  "os_updates",
  "disk_encryption",
  "firewall",
  "screen_lock",
  "antivirus",
] as const;
export type PostureCheck = (typeof POSTURE_CHECKS)[number];

const duration = z.union([z.string(), z.number()]);
const checkName = z.enum(POSTURE_CHECKS);

const devicesSchema = z
  .object({
    /** Users in any of these groups get their devices approved at enrolment. */
    auto_approve_groups: z.array(z.string()).default([]),
    /** A device without a verified report for this long is non-compliant. */
    report_interval: duration.default("24h"),
    /** Score weights per check (a passing check adds its weight). */
    weights: z.partialRecord(checkName, z.number().int().min(0).max(1000)).default({}),
    /** Checks that must pass, or the device is non-compliant whatever its score. */
    required: z.array(checkName).default(["disk_encryption", "firewall"]),
    /** Minimum score (0–100) for compliance. */
    min_score: z.number().int().min(0).max(100).default(0),
    /** How far a report's collected_at may be from the server's clock. */
    max_report_skew: duration.default("5m"),
  })
  .strict();

export const DEFAULT_WEIGHTS: Record<PostureCheck, number> = {
  os_updates: 20,
  disk_encryption: 30,
  firewall: 20,
  screen_lock: 15,
  antivirus: 15,
};

export interface DevicesConfig {
  autoApproveGroups: string[];
  reportIntervalMs: number;
  weights: Record<PostureCheck, number>;
  required: PostureCheck[];
  minScore: number;
  maxReportSkewMs: number;
}

/** Validates the `devices:` section of zt.yaml; errors name the key path. */
export function parseDevicesConfig(raw: unknown): DevicesConfig {
  const r = devicesSchema.safeParse(raw ?? {});
  if (!r.success) {
    const i = r.error.issues[0]!;
    const path = ["devices", ...i.path.map(String)].join(".");
    throw new ZtError("ZT_CONFIG_INVALID", `${path}: ${i.message}`, { path });
  }
  const c = r.data;
  return {
    autoApproveGroups: c.auto_approve_groups,
    reportIntervalMs: parsePositiveConfigDuration(c.report_interval, "devices.report_interval"),
    weights: { ...DEFAULT_WEIGHTS, ...c.weights },
    required: c.required,
    minScore: c.min_score,
    maxReportSkewMs: parsePositiveConfigDuration(c.max_report_skew, "devices.max_report_skew"),
  };
}
