import type { Server as TlsServer } from "node:tls";
import { pkiClientTlsOptions, pkiService } from "../pki/index.js";
import { keepCertificateFresh, listenerTlsFromConfig } from "../pki/listener-tls.js";
import type { ResolvedRoute, ZtConfig } from "../config/index.js";
import { createPep, type Pep, type ReloadCut } from "../proxy/index.js";
import type { LiveConnections } from "../proxy/live-connections.js";
import {
  startContinuousVerification,
  type ContinuousVerification,
} from "../session/reevaluator.js";
import type { AppContext } from "./app-context.js";
import type { Services } from "./services.js";

/** The PEP of one process (see createPepNode). */
export interface PepNode {
  pep: Pep;
  /**
   * Applies a reloaded config (its reloadable keys, see `planConfigReload`): first what
   * new routes need — zt's SVID for an `upstream_mtls` route, a listener certificate from
   * zt's CA naming a new host — then the routes themselves. Rejects, changing nothing,
   * when what they need cannot be had. Resolves to what it does to the exchanges under
   * way on removed or changed routes (see `Pep.reconfigure`).
   */
  reconfigure(config: ZtConfig): Promise<ReloadCut>;
  close(): Promise<void>;
}

/**
 * The PEP of one process, as `zt up` runs it in the zt process itself or in each PEP
 * worker: listener TLS (files or zt's CA), zt's own SVID for `upstream_mtls` routes
 * (fetched again now and then: it is short-lived). Not yet listening.
 */
export async function createPepNode(
  ctx: AppContext,
  services: Services,
  o: { host: string; pepId?: string; tlsRefreshEveryMs?: number },
): Promise<PepNode> {
  const config = ctx.config;
  let hostnames = listenerHostnames(o.host, config.routes);
  const tls = await listenerTlsFromConfig(ctx, () => hostnames);
  // Client SVIDs are verified against zt's CA and deny list: load them (and hear
  // revocations) in this process too, whatever the listener certificate comes from.
  if (tls && tls.clientCerts !== "off") await pkiService(ctx);
  let upstreamTls = needsUpstreamSvid(config.routes) ? await pkiClientTlsOptions(ctx) : undefined;
  const pep = createPep(services, { tls, upstreamTls, ...(o.pepId ? { pepId: o.pepId } : {}) });
  let renew: NodeJS.Timeout | undefined;
  // A listener certificate from zt's CA lives pki.svid_ttl: swap in the re-issued one.
  const fresh = tls
    ? keepCertificateFresh(pep.server as unknown as TlsServer, tls, o.tlsRefreshEveryMs)
    : undefined;
  const renewUpstreamSvid = () => {
    // zt's client SVID is short-lived: fetch it again (re-issued at half-life) now and then.
    renew = setInterval(() => {
      pkiClientTlsOptions(ctx).then(
        (t) => pep.setUpstreamTls(t),
        () => undefined,
      );
    }, 5 * 60_000);
    renew.unref();
  };
  if (upstreamTls) renewUpstreamSvid();
  return {
    pep,
    async reconfigure(next) {
      if (!upstreamTls && needsUpstreamSvid(next.routes)) {
        upstreamTls = await pkiClientTlsOptions(ctx);
        pep.setUpstreamTls(upstreamTls);
        renewUpstreamSvid();
      }
      const names = listenerHostnames(o.host, next.routes);
      if (tls?.refresh && names.join() !== hostnames.join()) {
        const before = hostnames;
        hostnames = names;
        await fresh!.now().catch((e: unknown) => {
          hostnames = before;
          throw e;
        });
      }
      return pep.reconfigure(next);
    },
    async close() {
      clearInterval(renew);
      fresh?.stop();
      await pep.close();
    },
  };
}

/** The names a listener certificate from zt's CA holds: the listen host, localhost, every route's host. */
function listenerHostnames(host: string, routes: readonly ResolvedRoute[]): string[] {
  return [...new Set([host, "localhost", ...routes.map((r) => r.host).sort()])];
}

/** Whether a route presents zt's SVID to its (https) upstream. */
function needsUpstreamSvid(routes: readonly ResolvedRoute[]): boolean {
  return routes.some((r) => r.upstream_mtls && new URL(r.to).protocol === "https:");
}

/**
 * Continuous verification for the live connections of one process (device posture,
 * grants and risk signals as decision context, and the re-evaluator), plus the
 * break-glass banner on responses allowed under an active break-glass grant.
 */
export async function startProcessVerification(
  services: Services,
  live: LiveConnections,
): Promise<ContinuousVerification> {
  const continuous = await startContinuousVerification(services, live);
  const grants = continuous.grants;
  services.decisions.addResponseHeaderContributor((f) =>
    f.principal.type === "User" && grants.breakglassActive(f.principal.id, f.route)
      ? { "x-zt-breakglass": "active" }
      : undefined,
  );
  return continuous;
}

/** host:port of a listen address ("[::1]:8443" → ::1, 8443). */
export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) };
}
