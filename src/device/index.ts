/**
 * Device trust: enrolment (Ed25519 device keys linked to their owner), approval,
 * signed posture reports with a compliance score, session binding, and the hot-path
 * `context.device` contributor. This file is the capability's only public face.
 */
export { DEVICE_REPORTS_KEPT, DeviceService, deviceInfoFromRow } from "./device-service.js";
export type { DeviceInfo, EnrollResult } from "./device-service.js";
export { DeviceTrust } from "./device-trust.js";
export { parseDevicesConfig, POSTURE_CHECKS, DEFAULT_WEIGHTS } from "./device-config.js";
export type { DevicesConfig, PostureCheck } from "./device-config.js";
export { scorePosture, isCompliantAt } from "./posture-score.js";
export type { PostureChecks, PostureScore } from "./posture-score.js";
export { parsePostureReport, bindPayload } from "./posture-report.js";
export type { PostureReport } from "./posture-report.js";
export { collectPosture } from "./posture-collector.js";
export type { CollectedPosture, CommandResult, CommandRunner } from "./posture-collector.js";
export {
  generateDeviceKey,
  signWithDeviceKey,
  verifyDeviceSignature,
  defaultKeyDir,
  deviceKeyPath,
  saveDeviceKey,
  loadDeviceKey,
  parseDevicePublicKey,
} from "./device-keys.js";
export type { DeviceKeyFile } from "./device-keys.js";
