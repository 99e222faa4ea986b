/**
 * "Who may SSH where, for how long" is a policy decision: signing a user certificate
 * asks the policy engine `User::"<name>"` / `Action::"ssh:sign"` / `HostGroup::"<group>"`.
 */
export interface SshSignAuthzRequest {
  /** The zt user the certificate is for. */
  user: string;
  /** Groups of that user (entity parents). */
  groups: readonly string[];
  hostGroup: string;
  principals: readonly string[];
  ttlSeconds: number;
  sourceAddresses: readonly string[];
  forceCommand: string | undefined;
  /** Where the request came from (API client address), when known. */
  sourceIp: string | undefined;
  nowMs: number;
}

export interface SshSignAuthzResult {
  allowed: boolean;
  decisionId: string;
  /** Stable kebab-case reason (the policy's `@reason`, or `no-matching-permit`). */
  reason: string;
  policies: string[];
}

export type SshSignAuthorizer = (request: SshSignAuthzRequest) => Promise<SshSignAuthzResult>;
