export type { AuditInput, AuditRecord, AuditSink } from "./audit-types.js";
export { AuditLog, AUDIT_PG_LOCK_KEY } from "./audit-log.js";
export type {
  AuditLogOptions,
  AuditRowOut,
  AuditRowChained,
  AuditWriterMode,
} from "./audit-log.js";
export { queryAudit, auditHead } from "./audit-query.js";
export type { AuditQueryOptions } from "./audit-query.js";
export { canonicalRecord, chainHash, GENESIS_HASH } from "./audit-chain.js";
export { ChainVerifier } from "./chain-verifier.js";
export type { ChainProblem, ChainProblemKind } from "./chain-verifier.js";
export {
  verifyAuditLog,
  checkChainLeadsOn,
  trustedCheckpointKeys,
  CHECKPOINT_KEY_PURPOSE,
  INTERNAL_ONLY_WARNING,
  NO_WITNESS_WARNING,
} from "./audit-verify.js";
export type {
  VerifyAuditOptions,
  VerifyAuditResult,
  ExternalNote,
  TrustedHead,
} from "./audit-verify.js";
export {
  signCheckpoint,
  parseCheckpoint,
  splitCheckpointNotes,
  verifyCheckpointSignature,
} from "./checkpoint-note.js";
export type { Checkpoint, SignedCheckpoint } from "./checkpoint-note.js";
export {
  Checkpointer,
  CHAIN_BROKEN_RULE,
  fileWitness,
  syslogWitness,
  webhookWitness,
} from "./checkpointer.js";
export type { Witness, CheckpointerOptions } from "./checkpointer.js";
export { parseAuditConfig, durableBeforeForward, readCheckpointPublicKey } from "./audit-config.js";
export type { AuditConfig, SinkConfig } from "./audit-config.js";
export { toOcsf, toJsonRecord } from "./ocsf.js";
export { redactedJson, isSensitiveKey, REDACTED } from "./redact.js";
export {
  metrics,
  renderMetrics,
  enableProcessMetrics,
  countDecision,
  countLogin,
  setActiveSessions,
  setCertificateExpiries,
  setSinkLag,
  countDropped,
  countShed,
  countRefused,
  countBannedRequest,
  countEventsPruned,
  countEventResync,
  countPolicyWatchError,
  countConfigReload,
  countRevocationListBuild,
} from "./metrics.js";
export { collectStoreMetrics, throttledStoreMetrics } from "./store-metrics.js";
export { AlertEngine, networkOf, jailMatches } from "./alerts/alert-engine.js";
export type {
  Alert,
  AlertEvent,
  AlertSeverity,
  Ban,
  EvaluateResult,
} from "./alerts/alert-engine.js";
export { parseAlertsConfig, DEFAULT_JAILS } from "./alerts/alerts-config.js";
export type { AlertsConfig, JailConfig } from "./alerts/alerts-config.js";
export { AlertService, toAlertEvent } from "./alerts/alert-service.js";
export type { AlertServiceOptions } from "./alerts/alert-service.js";
export { isBanned, isUserBanned, refreshBans, startBanCache } from "./alerts/ban-cache.js";
export { addBan, removeBan, listBans, banKey, MAX_BAN_REASON_LENGTH } from "./alerts/ban-admin.js";
export type { BanRow, BanAdminDeps } from "./alerts/ban-admin.js";
export { AuditCursor, headSeq } from "./audit-cursor.js";
export { startAuditServices } from "./audit-services.js";
export type { AuditServices, StartAuditServicesOptions } from "./audit-services.js";
export { SinkRunner } from "./sinks/sink-runner.js";
export type { SinkRunnerOptions } from "./sinks/sink-runner.js";
export type { Sink } from "./sinks/sink.js";
export { buildSink } from "./sinks/build-sink.js";
export { SyslogClient, formatSyslog } from "./sinks/syslog-client.js";
