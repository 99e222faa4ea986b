/**
 * Just-in-time access and break-glass: requests, approvals (never self-approval),
 * time-boxed grants visible to policies as `context.grants` / `context.breakglass`,
 * webhook notifications. This file is the capability's only public face.
 */
export {
  AccessService,
  announceEndedAccess,
  endAccessOfUser,
  parseResource,
  toRequest,
} from "./access-service.js";
export type { AccessRequest, AccessStatus } from "./access-service.js";
export { GrantCache, grantContext } from "./grant-cache.js";
export type { GrantFacts } from "./grant-cache.js";
export { parseAccessConfig, parseNotificationsConfig, BREAKGLASS_MAX_MS } from "./access-config.js";
export type { AccessConfig, NotificationsConfig, ResourceAccessConfig } from "./access-config.js";
export { WebhookNotifier } from "./webhook-notifier.js";
export type { Notification } from "./webhook-notifier.js";
export { RiskSignals } from "./risk-signals.js";
