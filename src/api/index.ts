export { createApiServer } from "./api-server.js";
export type { ApiServerOptions } from "./api-server.js";
export type { ApiTlsOptions } from "./api-server.js";
export { apiListenerTls } from "./api-tls.js";
export { ApiAuthenticator } from "./api-auth.js";
export type { ApiCaller } from "./api-auth.js";
