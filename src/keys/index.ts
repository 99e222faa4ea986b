export { loadMasterKey } from "./master-key.js";
export type { MasterKeyOptions } from "./master-key.js";
export { KeyStore } from "./key-store.js";
export type { SigningKey, KeyAlg } from "./key-store.js";
