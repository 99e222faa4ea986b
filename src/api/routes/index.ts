import type { FastifyInstance } from "fastify";
import type { AppContext } from "../../app/index.js";
import { registerPkiRoutes } from "./pki.js";
import { registerMetricsRoutes } from "./metrics.js";
import { registerDeviceRoutes } from "./device.js";

/**
 * Every API route group. Each capability's routes live in their own file here and
 * export a `register…Routes(app, ctx)` function; add one import and one call per group.
 */
export function registerAllApiRoutes(app: FastifyInstance, ctx: AppContext): void {
  void app;
  void ctx;
  registerPkiRoutes(app, ctx);
  registerMetricsRoutes(app, ctx);
  registerDeviceRoutes(app, ctx);
}
