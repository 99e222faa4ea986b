import type { DevicesConfig, PostureCheck } from "./device-config.js";
import { POSTURE_CHECKS } from "./device-config.js";

export type PostureChecks = Partial<Record<PostureCheck, boolean | null>>;

export interface PostureScore {
  /** 0–100: the share of the weights whose checks passed. */
  score: number;
  compliant: boolean;
  /** Stable reasons: `required-check-failed:<check>`, `score-below-minimum`. */
  failures: string[];
}

/**
 * Scores a posture report. Pure. An unknown (null/missing) check counts as failed:
 * a device must prove posture, not merely fail to report it.
 */
export function scorePosture(
  checks: PostureChecks,
  cfg: Pick<DevicesConfig, "weights" | "required" | "minScore">,
): PostureScore {
  let total = 0;
  let passed = 0;
  for (const c of POSTURE_CHECKS) {
    const w = cfg.weights[c];
    total += w;
    if (checks[c] === true) passed += w;
  }
  const score = total === 0 ? 100 : Math.round((passed * 100) / total);
  const failures: string[] = [];
  for (const c of cfg.required) if (checks[c] !== true) failures.push(`required-check-failed:${c}`);
  if (score < cfg.minScore) failures.push("score-below-minimum");
  return { score, compliant: failures.length === 0, failures };
}

export interface DeviceState {
  status: string;
  compliant: boolean;
  lastReportAt: number | null;
}

/**
 * Whether a device counts as compliant now: approved, last report compliant, and that
 * report no older than the report interval. Pure (state + time in).
 */
export function isCompliantAt(d: DeviceState, now: number, reportIntervalMs: number): boolean {
  return (
    d.status === "approved" &&
    d.compliant &&
    d.lastReportAt !== null &&
    now - d.lastReportAt <= reportIntervalMs
  );
}
