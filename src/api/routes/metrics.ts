import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { AppContext } from "../../app/index.js";
import { ZtError } from "../../core/errors.js";
import { safeEqual } from "../../core/ids.js";
import { bearerToken, newDecisionId } from "../../proxy/index.js";
import { clientIp } from "../api-auth.js";
import { AggregatorRegistry } from "prom-client";
import { enableProcessMetrics, renderMetrics, throttledStoreMetrics } from "../../audit/index.js";
import { metrics } from "../../audit/metrics.js";

/**
 * `GET /metrics`: Prometheus text exposition of zt's registry. When
 * `audit.metrics_token_file` is set, scrapers must send `Authorization: Bearer <token>`;
 * a request without it is refused (401) and audited (`recordOperatorTokenRefusal`).
 */
export function registerMetricsRoutes(
  app: FastifyInstance,
  ctx: AppContext,
  extraMetrics?: () => Promise<unknown[]>,
): void {
  enableProcessMetrics();
  const token = operatorToken(ctx);
  const collectStoreMetrics = throttledStoreMetrics(ctx.store);
  app.get("/metrics", async (req, reply) => {
    if (token !== undefined && !hasOperatorToken(req.headers.authorization, token)) {
      const { reason, decisionId } = recordOperatorTokenRefusal(ctx, req, "/metrics");
      throw new ZtError(
        "ZT_AUTH_REQUIRED",
        reason === "no-credentials"
          ? "metrics need the operator's bearer token (audit.metrics_token_file)"
          : "metrics need the operator's bearer token: the one sent is not it",
        { reason, decision_id: decisionId },
      );
    }
    await collectStoreMetrics(ctx.clock.now());
    if (extraMetrics) {
      // PEP workers: counters and histograms summed over every process (prom-client's
      // cluster aggregation), so decisions made in any worker are counted once.
      const others = (await extraMetrics()).filter(Array.isArray);
      const all = AggregatorRegistry.aggregate([await metrics.getMetricsAsJSON(), ...others]);
      void reply.header("content-type", all.contentType);
      return all.metrics();
    }
    const { contentType, body } = await renderMetrics();
    void reply.header("content-type", contentType);
    return body;
  });
}

/**
 * The operator's bearer token (`audit.metrics_token_file`): it opens `/metrics` and the
 * detail of `/readyz`. Undefined when the key is unset.
 */
export function operatorToken(ctx: AppContext): string | undefined {
  const tokenFile = (ctx.config.audit as Record<string, unknown> | undefined)?.[
    "metrics_token_file"
  ];
  return typeof tokenFile === "string" ? readMetricsToken(ctx, tokenFile) : undefined;
}

/** Whether the request carries the operator's bearer token (never, when none is set). */
export function hasOperatorToken(
  authorization: string | undefined,
  token: string | undefined,
): boolean {
  if (token === undefined) return false;
  const presented = bearerToken(authorization);
  return presented !== undefined && safeEqual(presented, token);
}

/**
 * Audits a request that did not carry the operator token where it was asked for
 * (`authn.operator-token`, outcome `deny`, under a fresh decision id): a wrong token
 * (`operator-token-invalid`) is a guess at a secret, which the `api-ip` jail counts as it
 * counts a guessed join token; none at all (`no-credentials`: a scraper not yet given the
 * token) is recorded, not counted. The record names the source and the path, never what
 * was presented.
 */
export function recordOperatorTokenRefusal(
  ctx: AppContext,
  req: FastifyRequest,
  path: string,
): { reason: "operator-token-invalid" | "no-credentials"; decisionId: string } {
  const reason = bearerToken(req.headers.authorization)
    ? "operator-token-invalid"
    : "no-credentials";
  const decisionId = newDecisionId(ctx.clock.now());
  ctx.audit.record({
    kind: "authn.operator-token",
    outcome: "deny",
    sourceIp: clientIp(req),
    decisionId,
    reason,
    data: { listener: "api", path, code: "ZT_AUTH_REQUIRED" },
  });
  return { reason, decisionId };
}

/**
 * The scrape token, read once at start: relative to zt.yaml's folder like every path in
 * it. A missing, unreadable or empty file stops zt from starting, naming the key.
 */
function readMetricsToken(ctx: AppContext, file: string): string {
  const path = resolve(ctx.config.configDir, file);
  const refuse = (why: string) =>
    new ZtError("ZT_CONFIG_INVALID", `audit.metrics_token_file: ${why}`, {
      key: "audit.metrics_token_file",
      path,
    });
  let token: string;
  try {
    token = readFileSync(path, "utf8").trim();
  } catch (e) {
    throw refuse(`cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? "unreadable"})`);
  }
  if (token === "") throw refuse(`${path} is empty`);
  return token;
}
