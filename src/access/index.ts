/**
 * Just-in-time access and break-glass: requests, approvals (never self-approval),
 * time-boxed grants to Apps and SSH host groups, visible to policies as
 * `context.grants` / `context.breakglass` (at the PEP and for `ssh:sign`),
 * webhook notifications. This file is the capability's only public face.
 */
export {
  AccessService,
  announceEndedAccess,
  endAccessOfUser,
  parseResource,
  toRequest,
} from "./access-service.js";
export type { AccessRequest, AccessStatus, Approval } from "./access-service.js";
export { GrantCache, grantContext, sshGrantContext } from "./grant-cache.js";
export type { ActiveGrant, GrantFacts } from "./grant-cache.js";
export { readActiveGrants, readRevokedGrants } from "./held-grants.js";
export {
  hostGroupOfKey,
  parseAccessResource,
  resourceKey,
  type AccessResource,
} from "./access-resource.js";
export { parseAccessConfig, parseNotificationsConfig, BREAKGLASS_MAX_MS } from "./access-config.js";
export type { AccessConfig, NotificationsConfig, ResourceAccessConfig } from "./access-config.js";
export { WebhookNotifier } from "./webhook-notifier.js";
export type { Notification } from "./webhook-notifier.js";
export { RiskSignals } from "./risk-signals.js";
