/**
 * zt's Cedar schema: the vocabulary policies are written against (a public contract,
 * documented in docs/policy.md). Kept as a TS string so the build ships it without
 * copying files. A policy directory may replace it with its own `schema.cedarschema`.
 *
 * Optional attributes (`email?`, `device?` …) must be tested with `has` before use,
 * or strict validation rejects the policy: `context has device && context.device.compliant`.
 */
export const ZT_SCHEMA = `// zt Cedar schema (public contract; see docs/policy.md)

entity Group;

entity User in [Group] {
  name: String,
  email?: String,
  disabled?: Bool,
};

entity App {
  name: String,
};

// A workload identified by its SPIFFE ID (mTLS client certificate).
entity Service {
  spiffe_id: String,
};

entity Device {
  owner?: User,
  compliant: Bool,
  score: Long,
  os?: String,
  last_seen?: Long,
};

// A set of hosts that SSH certificates are signed for.
entity HostGroup;

type DevicePosture = {
  compliant: Bool,
  score: Long,
  os?: String,
};

type HttpContext = {
  source_ip: ipaddr,
  host: String,
  path: String,
  mfa_age_seconds: Long,
  time: datetime,
  network: String,
  local_hour: Long,
  authenticated_by: String,
  grants: Set<String>,
  breakglass: Bool,
  device?: DevicePosture,
  failed_attempts: Long,
  new_network: Bool,
};

type SshContext = {
  time: datetime,
  mfa_age_seconds: Long,
  grants: Set<String>,
  breakglass: Bool,
  logins: Set<String>,
  // What the certificate would carry: lifetime, force-command ("" when none),
  // source-address CIDRs, extensions (e.g. "permit-port-forwarding").
  ttl_seconds: Long,
  force_command: String,
  source_addresses: Set<String>,
  extensions: Set<String>,
  source_ip?: ipaddr,
  device?: DevicePosture,
};

action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE" appliesTo {
  principal: [User, Service],
  resource: [App],
  context: HttpContext,
};

action "ssh:sign" appliesTo {
  principal: [User, Service],
  resource: [HostGroup],
  context: SshContext,
};
`;

/** The HTTP methods that are Cedar actions in zt's vocabulary (WebSocket upgrades are GET). */
export const HTTP_ACTIONS = [
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
  "CONNECT",
  "TRACE",
] as const;
