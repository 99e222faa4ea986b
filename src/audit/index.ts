export type { AuditInput, AuditRecord, AuditSink } from "./audit-types.js";
export { AuditLog } from "./audit-log.js";
export type { AuditLogOptions, AuditRowOut } from "./audit-log.js";
export { queryAudit } from "./audit-query.js";
export type { AuditQueryOptions } from "./audit-query.js";
