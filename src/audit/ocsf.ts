import type { AuditRowOut } from "./audit-log.js";

/**
 * Maps an audit record to an OCSF 1.x event:
 * - logins / MFA (`login*`, `mfa*`, `auth*`): Authentication (class 3002);
 * - access decisions (`decision*`) and requests the PEP refused before deciding
 *   (`request.refused`): Network Activity (class 4001) with the security_control
 *   profile (action allowed/denied, disposition, policy, rule);
 * - anything else: Base Event (class 0).
 * zt's own fields (decision id, determining policies, reason, mode, PEP id, seq, hash
 * chain position) go under `unmapped` so nothing is lost.
 */
export function toOcsf(r: AuditRowOut & { hash?: string | null }): Record<string, unknown> {
  const data = safeJson(r.data);
  const policies = r.policies ? (safeJson(r.policies) as unknown as string[]) : [];
  const failed = r.outcome === "failure" || r.outcome === "deny";
  const metadata = {
    version: "1.1.0",
    product: { name: "zt", vendor_name: "zt", feature: { name: r.kind } },
    uid: r.id,
    sequence: r.seq,
    logged_time: r.ts,
  };
  const unmapped = {
    zt_kind: r.kind,
    zt_outcome: r.outcome,
    decision_id: r.decision_id,
    determining_policies: policies,
    reason: r.reason,
    mode: data["mode"] ?? null,
    pep_id: data["pep_id"] ?? null,
    hash: r.hash ?? null,
    data,
  };
  const srcEndpoint = r.source_ip ? { ip: r.source_ip } : undefined;
  const user = r.subject ? { name: r.subject } : undefined;
  const severityId = failed ? 3 : 1;

  if (/^(login|mfa|auth)/.test(r.kind)) {
    const activityId = r.kind.includes("logout") ? 2 : 1;
    return {
      class_uid: 3002,
      class_name: "Authentication",
      category_uid: 3,
      category_name: "Identity & Access Management",
      activity_id: activityId,
      type_uid: 300200 + activityId,
      time: r.ts,
      severity_id: severityId,
      status_id: failed ? 2 : r.outcome === "success" ? 1 : 99,
      status: failed ? "Failure" : r.outcome === "success" ? "Success" : "Other",
      status_detail: r.reason ?? undefined,
      is_mfa: r.kind.startsWith("mfa") || data["mfa"] === true || undefined,
      user,
      src_endpoint: srcEndpoint,
      metadata,
      unmapped,
    };
  }
  if (r.kind.startsWith("decision") || r.kind === "request.refused") {
    const allowed = r.outcome === "allow";
    const activityId = allowed ? 6 : 5; // Traffic / Refuse
    const rule = policies[0];
    return {
      class_uid: 4001,
      class_name: "Network Activity",
      category_uid: 4,
      category_name: "Network Activity",
      activity_id: activityId,
      type_uid: 400100 + activityId,
      time: r.ts,
      severity_id: severityId,
      status_id: allowed ? 1 : 2,
      // security_control profile
      action_id: allowed ? 1 : 2,
      action: allowed ? "Allowed" : "Denied",
      disposition_id: allowed ? 1 : 2,
      disposition: allowed ? "Allowed" : "Blocked",
      firewall_rule: rule ? { uid: rule, name: rule, condition: r.reason ?? undefined } : undefined,
      policy: rule ? { uid: rule, name: rule } : undefined,
      actor: user ? { user } : undefined,
      src_endpoint: srcEndpoint,
      dst_endpoint: r.route ? { name: r.route } : undefined,
      http_request: r.action
        ? { http_method: r.action }
        : typeof data["method"] === "string"
          ? { http_method: data["method"] }
          : undefined,
      message: r.reason ?? undefined,
      metadata: { ...metadata, profiles: ["security_control"] },
      unmapped,
    };
  }
  return {
    class_uid: 0,
    class_name: "Base Event",
    category_uid: 0,
    activity_id: 0,
    type_uid: 0,
    time: r.ts,
    severity_id: severityId,
    status_id: failed ? 2 : 1,
    message: r.reason ?? r.kind,
    actor: user ? { user } : undefined,
    src_endpoint: srcEndpoint,
    metadata,
    unmapped,
  };
}

/** The plain JSON-lines form of a record (policies and data parsed). */
export function toJsonRecord(
  r: AuditRowOut & { prev_hash?: string | null; hash?: string | null },
): Record<string, unknown> {
  return {
    seq: r.seq,
    id: r.id,
    time: new Date(r.ts).toISOString(),
    ts: r.ts,
    kind: r.kind,
    outcome: r.outcome,
    subject: r.subject,
    source_ip: r.source_ip,
    route: r.route,
    action: r.action,
    decision_id: r.decision_id,
    policies: r.policies ? safeJson(r.policies) : null,
    reason: r.reason,
    data: safeJson(r.data),
    ...(r.hash !== undefined ? { prev_hash: r.prev_hash ?? null, hash: r.hash } : {}),
  };
}

function safeJson(text: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { unparsed: text };
  }
}
