import type { FastifyInstance } from "fastify";
import type { AppContext } from "../../app/index.js";
import { registerPkiRoutes } from "./pki.js";
import { registerMetricsRoutes } from "./metrics.js";
import { registerDeviceRoutes } from "./device.js";
import { registerSshRoutes } from "./ssh.js";
import type { ApiAuthenticator } from "../api-auth.js";

/** What routes share: the caller authenticator (sessions and mTLS SVIDs). */
export interface ApiRouteDeps {
  auth: ApiAuthenticator;
  /** Registries (as JSON) of other processes to add to /metrics (PEP workers). */
  extraMetrics?: (() => Promise<unknown[]>) | undefined;
}

/**
 * Every API route group. Each capability's routes live in their own file here and
 * export a `register…Routes(app, ctx)` function; add one import and one call per group.
 */
export function registerAllApiRoutes(
  app: FastifyInstance,
  ctx: AppContext,
  deps: ApiRouteDeps,
): void {
  registerPkiRoutes(app, ctx, deps);
  registerSshRoutes(app, ctx, deps);
  registerMetricsRoutes(app, ctx, deps.extraMetrics);
  registerDeviceRoutes(app, ctx);
}
