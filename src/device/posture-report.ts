import { z } from "zod";
import { ZtError } from "../core/errors.js";
import { sha256Hex } from "../core/ids.js";
import { POSTURE_CHECKS } from "./device-config.js";
import type { PostureChecks } from "./posture-score.js";

/** The signed statement a device sends: `payload` is this object as JSON text. */
export interface PostureReport {
  v: 1;
  device_id: string;
  /** When the device collected it (ms since the epoch, device clock). */
  collected_at: number;
  os: string;
  checks: PostureChecks;
  evidence?: Record<string, string>;
}

const checksShape = Object.fromEntries(
  POSTURE_CHECKS.map((c) => [c, z.boolean().nullable().optional()]),
) as Record<(typeof POSTURE_CHECKS)[number], z.ZodOptional<z.ZodNullable<z.ZodBoolean>>>;

const reportSchema = z
  .object({
    v: z.literal(1),
    device_id: z.string().min(1).max(64),
    collected_at: z.number().int().nonnegative(),
    // Shown in listings and stored as text (PostgreSQL refuses a NUL): no control characters.
    os: z
      .string()
      .max(200)
      // eslint-disable-next-line no-control-regex -- refusing control characters is the point
      .regex(/^[^\u0000-\u001f\u007f]*$/, "expected text without control characters"),
    checks: z.object(checksShape).strict(),
    evidence: z.record(z.string(), z.string().max(500)).optional(),
  })
  .strict();

/** Parses a report payload (JSON text) at the edge; errors name the field. */
export function parsePostureReport(payload: string): PostureReport {
  if (payload.length > 64 * 1024)
    throw new ZtError("ZT_DEVICE_INVALID", "report: larger than 64 KiB");
  let raw: unknown;
  try {
    raw = JSON.parse(payload);
  } catch {
    throw new ZtError("ZT_DEVICE_INVALID", "report: not valid JSON");
  }
  const r = reportSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new ZtError("ZT_DEVICE_INVALID", `report.${i.path.join(".")}: ${i.message}`, {
      field: i.path.join("."),
    });
  }
  return r.data as PostureReport;
}

/**
 * The text a device signs to bind a session to itself:
 * `zt-device-bind:v2:<device>:<sha256 hex of the session token>:<ms>`. It names the
 * session by a hash of its token, not its id, so a signature made for one session
 * cannot be presented for another, and the bind request must carry that very token
 * (the server hashes the token it was sent). The `v1` form (session id only) is no
 * longer accepted.
 */
export function bindPayload(o: { deviceId: string; sessionToken: string; at: number }): string {
  return `zt-device-bind:v2:${o.deviceId}:${sha256Hex(o.sessionToken)}:${o.at}`;
}
