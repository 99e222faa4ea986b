export { createApiServer } from "./api-server.js";
export type { ApiServerOptions } from "./api-server.js";
