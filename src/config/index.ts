export { loadConfig, parseConfigText, validateConfig, configPathFrom } from "./load-config.js";
export type { ZtConfig, ResolvedRoute, LoadConfigOptions } from "./load-config.js";
export { configSchema, routeSchema } from "./schema.js";
export {
  planConfigReload,
  adoptConfigReload,
  reloadableConfigVersion,
  RELOADABLE_KEYS,
} from "./config-reload.js";
export type { ConfigReloadPlan } from "./config-reload.js";
