import { newId } from "../core/ids.js";
import {
  cedarDatetime,
  cedarIp,
  EntityStore,
  type CedarValue,
  type EntityUid,
  type PolicyEngine,
} from "../policy/index.js";

/**
 * "Who may SSH where, for how long" is a policy decision: signing a user certificate
 * asks the policy engine `User::"<name>"` / `Action::"ssh:sign"` / `HostGroup::"<group>"`.
 */
export interface SshSignAuthzRequest {
  /** Who asks: a zt user (default), or a workload by its SPIFFE ID (`Service::"spiffe://…"`). */
  principalType?: "User" | "Service" | undefined;
  /** The zt user name, or the SPIFFE ID when `principalType` is `Service`. */
  user: string;
  /** Groups of that user (entity parents; none for a service). */
  groups: readonly string[];
  /** The user's e-mail address, when it has one (the `email` attribute, as at the PEP). */
  email?: string | null | undefined;
  hostGroup: string;
  principals: readonly string[];
  ttlSeconds: number;
  sourceAddresses: readonly string[];
  forceCommand: string | undefined;
  /** The extensions the certificate will carry (e.g. `permit-port-forwarding`). */
  extensions: readonly string[];
  /** Where the request came from (API client address), when known. */
  sourceIp: string | undefined;
  nowMs: number;
  /** Seconds since the requester's last MFA (unknown: treated as no MFA). */
  mfaAgeSeconds?: number | undefined;
  /**
   * `context.grants`: the host groups (bare names) the user holds an active JIT grant
   * for, as the PEP gives the Apps (see sshGrantContext).
   */
  grants?: readonly string[] | undefined;
  /** `context.breakglass`: the user holds an active break-glass for this host group. */
  breakglass?: boolean | undefined;
}

export interface SshSignAuthzResult {
  allowed: boolean;
  decisionId: string;
  /** Stable kebab-case reason (the policy's `@reason`, or `no-matching-permit`). */
  reason: string;
  policies: string[];
}

export type SshSignAuthorizer = (request: SshSignAuthzRequest) => Promise<SshSignAuthzResult>;

/**
 * An `ssh:sign` authorizer over zt's policy engine. The request becomes
 * `User::"<user>"` (in its groups) or `Service::"<spiffe id>"` / `Action::"ssh:sign"` / `HostGroup::"<group>"` with an
 * `SshContext` (time, MFA age, grants, break-glass, the requested logins, source IP, and
 * what the certificate would carry: lifetime, force-command, source addresses, extensions).
 */
export function createPolicySshAuthorizer(engine: () => PolicyEngine): SshSignAuthorizer {
  return async (req) => {
    const service = req.principalType === "Service";
    const user: EntityUid = { type: service ? "Service" : "User", id: req.user };
    const entities = new EntityStore([
      {
        uid: user,
        // The attributes the PEP's entity snapshot gives a user: a policy reading
        // `principal.email` or `principal.disabled` means the same here (an attribute
        // missing only here would make it error, and an erroring forbid is skipped).
        // Disabled users never get this far.
        attrs: service
          ? { spiffe_id: req.user }
          : { name: req.user, disabled: false, ...(req.email ? { email: req.email } : {}) },
        parents: req.groups.map((g) => ({ type: "Group", id: g })),
      },
      ...req.groups.map((g) => ({ uid: { type: "Group", id: g }, attrs: {}, parents: [] })),
      { uid: { type: "HostGroup", id: req.hostGroup }, attrs: {}, parents: [] },
    ]);
    const context: Record<string, CedarValue> = {
      time: cedarDatetime(req.nowMs),
      mfa_age_seconds: req.mfaAgeSeconds ?? NO_MFA_AGE,
      grants: [...(req.grants ?? [])],
      breakglass: req.breakglass ?? false,
      logins: [...req.principals],
      ttl_seconds: req.ttlSeconds,
      force_command: req.forceCommand ?? "",
      source_addresses: [...req.sourceAddresses],
      extensions: [...req.extensions],
    };
    if (req.sourceIp) context["source_ip"] = cedarIp(req.sourceIp);
    const result = engine().authorize(
      {
        principal: user,
        action: { type: "Action", id: "ssh:sign" },
        resource: { type: "HostGroup", id: req.hostGroup },
        context,
      },
      entities,
    );
    return {
      allowed: result.verdict === "allow",
      decisionId: newId("dec"),
      reason: result.verdict === "step-up" ? "mfa-required" : result.reason,
      policies: result.reasons,
    };
  };
}

/** No MFA in this request: policies asking for recent MFA deny. */
const NO_MFA_AGE = 2_147_483_647;
