export { loadMasterKey } from "./master-key.js";
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
