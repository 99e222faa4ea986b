import type { CedarValue, EntityUid } from "./types.js";

/** Cedar `ip("…")` value in JSON form (an IPv4/IPv6 address or CIDR range). */
export function cedarIp(address: string): CedarValue {
  return { __extn: { fn: "ip", arg: address } };
}

/** Cedar `datetime("…")` for an epoch-milliseconds instant (UTC, millisecond precision). */
export function cedarDatetime(epochMs: number): CedarValue {
  return { __extn: { fn: "datetime", arg: new Date(epochMs).toISOString() } };
}

/** Cedar `duration("…")` for a number of milliseconds. */
export function cedarDuration(ms: number): CedarValue {
  return { __extn: { fn: "duration", arg: `${Math.trunc(ms)}ms` } };
}

/** Cedar `decimal("…")` (up to 4 fractional digits). */
export function cedarDecimal(text: string): CedarValue {
  return { __extn: { fn: "decimal", arg: text } };
}

/** An entity reference value. */
export function cedarEntity(uid: EntityUid): CedarValue {
  return { __entity: { type: uid.type, id: uid.id } };
}

/** What the PEP knows about a request; `httpContext` turns it into zt's Cedar context record. */
export interface HttpContextInput {
  sourceIp: string;
  host: string;
  /** The canonical path. */
  path: string;
  /** Seconds since MFA was last verified (use a large number when never). */
  mfaAgeSeconds: number;
  /** Decision time, epoch milliseconds (from the injected clock). */
  timeMs: number;
  /** Network label: office / vpn / unknown … (default "unknown"). */
  network?: string;
  /** Hour of day in the organisation's zone (default: UTC hour of `timeMs`). */
  localHour?: number;
  authenticatedBy: "session" | "mtls" | "bearer";
  /** Ids of resources with an active just-in-time grant. */
  grants?: Iterable<string>;
  breakglass?: boolean;
  device?: { compliant: boolean; score: number; os?: string } | undefined;
  failedAttempts?: number;
  newNetwork?: boolean;
}

/**
 * zt's HTTP context record (see docs/policy.md), with every required attribute present
 * and typed as the schema says, so strictly validated policies evaluate without errors.
 */
export function httpContext(input: HttpContextInput): Record<string, CedarValue> {
  const ctx: Record<string, CedarValue> = {
    source_ip: cedarIp(input.sourceIp),
    host: input.host,
    path: input.path,
    mfa_age_seconds: Math.max(0, Math.trunc(input.mfaAgeSeconds)),
    time: cedarDatetime(input.timeMs),
    network: input.network ?? "unknown",
    local_hour: input.localHour ?? new Date(input.timeMs).getUTCHours(),
    authenticated_by: input.authenticatedBy,
    grants: [...(input.grants ?? [])],
    breakglass: input.breakglass ?? false,
    failed_attempts: input.failedAttempts ?? 0,
    new_network: input.newNetwork ?? false,
  };
  if (input.device) {
    const d: Record<string, CedarValue> = {
      compliant: input.device.compliant,
      score: Math.trunc(input.device.score),
    };
    if (input.device.os !== undefined) d["os"] = input.device.os;
    ctx["device"] = d;
  }
  return ctx;
}
