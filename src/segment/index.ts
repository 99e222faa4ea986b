/** Micro-segmentation: one flow model compiled to nftables and Kubernetes NetworkPolicy. */
export * from "./model.js";
export { parseSegModel, type ParseModelResult } from "./parse-model.js";
export {
  compileNftables,
  ZT_AUDIT_CT_MARK,
  ZT_TABLE,
  type NftTarget,
  type CompileNftOptions,
  type CompileNftResult,
} from "./compile-nftables.js";
export { FlowEvaluator, type FlowProbe, type FlowVerdict } from "./evaluate-flow.js";
export { SegmentIndex } from "./segment-index.js";
export {
  parseCidr,
  parseIp,
  formatIp,
  formatRange,
  normalizeAddress,
  type IpRange,
} from "./ip-range.js";
export { parsePortSpec, formatPortSpec, type PortSpec, type SegProto } from "./port-spec.js";
export { loadSegModelFile } from "./load-model.js";
export {
  systemNftRunner,
  NftCommandError,
  type NftRunner,
  type NftRunnerOptions,
} from "./nft-runner.js";
export {
  applyRuleset,
  confirmApply,
  rollbackIfPending,
  rollbackNow,
  readRolloutState,
  readStatus,
  recordRollbackFailure,
  DEFAULT_SEG_STATE_DIR,
  type RollbackFailure,
  type RolloutState,
  type SegStatus,
  type RuleCounter,
} from "./rollout.js";
export { compileK8s, type CompileK8sResult } from "./compile-k8s.js";
export { checkScriptScope, type ScriptScope } from "./script-scope.js";
export { LogLineParser, type ObservedPacket } from "./log-line.js";
export {
  DEFAULT_MAX_FLOWS,
  FlowAggregator,
  summariseFlows,
  hostSegmentName,
  type ObservedFlow,
  type LearnResult,
  type LearnedFlow,
  type InventoryEntry,
} from "./flow-inventory.js";
export {
  aggregateLogFiles,
  describeUnparsedFile,
  learnFromFiles,
  type LearnOptions,
  type LearnProgress,
  type LearnStats,
} from "./learn-stream.js";
export { simulateFlows, OUTSIDE, type SimulateResult, type DroppedGroup } from "./simulate.js";
export {
  progressBar,
  learnDocument,
  proposedModelYaml,
  readObservedFiles,
} from "./learn-output.js";
