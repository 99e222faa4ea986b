export { createPep } from "./pep-server.js";
export type { Pep, PepOptions, PepServices } from "./pep-server.js";
export { DecisionPoint } from "./decision-point.js";
export type { Decision, DecisionFacts } from "./decision-point.js";
export { AssertionSigner, ASSERTION_KEY_PURPOSE, ASSERTION_LIFETIME_S } from "./assertion.js";
export type { AssertionClaims } from "./assertion.js";
export { canonicalizeRequest, canonicalPath, canonicalHost } from "./canonical-request.js";
export type { CanonicalRequest, CanonicalRefusal } from "./canonical-request.js";
export { RouteTable } from "./route-table.js";
