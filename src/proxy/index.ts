export { createPep } from "./pep-server.js";
export type { Pep, PepOptions, PepReloadable, PepServices, ReloadCut } from "./pep-server.js";
export { DecisionPoint, newDecisionId } from "./decision-point.js";
export type { Decision, DecisionFacts, ContextContributor } from "./decision-point.js";
export { auditCut, LiveConnections, revocationLink } from "./live-connections.js";
export type { LiveConnection, LiveConnectionWatcher, LiveCut } from "./live-connections.js";
export {
  AssertionSigner,
  ASSERTION_KEY_PURPOSE,
  ASSERTION_LIFETIME_S,
  ASSERTION_KEY_PREVIOUS_PUBLISHED_MS,
  rotateAssertionKey,
} from "./assertion.js";
export type { AssertionClaims } from "./assertion.js";
export { canonicalizeRequest, canonicalPath, canonicalHost } from "./canonical-request.js";
export type { CanonicalRequest, CanonicalRefusal } from "./canonical-request.js";
export { RouteTable } from "./route-table.js";
export { authenticateClientCert, bearerToken, cookieCount, cookieFrom } from "./authenticate.js";
export type { ClientCertMode } from "./authenticate.js";
export { resolveClientIp, TrustedProxies } from "./forwarded-headers.js";
export type { AddressSet } from "./forwarded-headers.js";
