export {
  loadMasterKey,
  masterKeyFile,
  newMasterKeyText,
  pendingMasterKeyFile,
  readMasterKeyFile,
} from "./master-key.js";
export { assertStoreIdle, resealSecrets, sealedWith } from "./master-key-rotation.js";
export { assertMasterKeyOpensStore } from "./master-key-check.js";
export type { ResealCounts } from "./master-key-rotation.js";
export { sealedPurpose } from "./sealed-purposes.js";
export type { MasterKeyOptions } from "./master-key.js";
export { KeyStore, KEYS_LOCK_KEY } from "./key-store.js";
export type {
  SigningKey,
  KeyAlg,
  KeyInfo,
  KeyStatus,
  RotateKeyOptions,
  RotateKeyResult,
} from "./key-store.js";
