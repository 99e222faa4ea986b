export { loadConfig, parseConfigText, validateConfig, configPathFrom } from "./load-config.js";
export type { ZtConfig, ResolvedRoute, LoadConfigOptions } from "./load-config.js";
export { configSchema, routeSchema } from "./schema.js";
