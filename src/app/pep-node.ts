import { readFileSync } from "node:fs";
import type { Server as TlsServer } from "node:tls";
import type { ZtConfig } from "../config/index.js";
import { ZtError } from "../core/errors.js";
import { readPrivateFile } from "../core/secure-files.js";
import { pkiClientTlsOptions, pkiServerTlsOptions } from "../pki/index.js";
import { createPep, type Pep } from "../proxy/index.js";
import type { LiveConnections } from "../proxy/live-connections.js";
import {
  startContinuousVerification,
  type ContinuousVerification,
} from "../session/reevaluator.js";
import type { AppContext } from "./app-context.js";
import type { Services } from "./services.js";

/**
 * The PEP of one process, as `zt up` runs it in the zt process itself or in each PEP
 * worker: listener TLS (files or zt's CA), zt's own SVID for `upstream_mtls` routes
 * (fetched again now and then: it is short-lived). Not yet listening.
 */
export async function createPepNode(
  ctx: AppContext,
  services: Services,
  o: { host: string; pepId?: string; tlsRefreshEveryMs?: number },
): Promise<{ pep: Pep; close(): Promise<void> }> {
  const config = ctx.config;
  const tls = await listenerTls(ctx, config, o.host);
  const upstreamTls = config.routes.some(
    (r) => r.upstream_mtls && new URL(r.to).protocol === "https:",
  )
    ? await pkiClientTlsOptions(ctx)
    : undefined;
  const pep = createPep(services, { tls, upstreamTls, ...(o.pepId ? { pepId: o.pepId } : {}) });
  let renew: NodeJS.Timeout | undefined;
  let refresh: NodeJS.Timeout | undefined;
  if (tls?.refresh) {
    // A listener certificate from zt's CA lives pki.svid_ttl: the CA re-issues it at
    // half-life; swap the new one in without a restart (open connections keep theirs).
    const next = tls.refresh;
    const server = pep.server as unknown as TlsServer;
    let current = String(tls.cert);
    refresh = setInterval(
      () => {
        next().then(
          (t) => {
            if (t.cert === current) return;
            current = t.cert;
            server.setSecureContext({ key: t.key, cert: t.cert, ca: t.ca });
          },
          () => undefined, // keep serving the current one; the next tick tries again
        );
      },
      o.tlsRefreshEveryMs ?? 5 * 60_000,
    );
    refresh.unref();
  }
  if (upstreamTls) {
    // zt's client SVID is short-lived: fetch it again (re-issued at half-life) now and then.
    renew = setInterval(() => {
      pkiClientTlsOptions(ctx).then(
        (t) => pep.setUpstreamTls(t),
        () => undefined,
      );
    }, 5 * 60_000);
    renew.unref();
  }
  return {
    pep,
    async close() {
      clearInterval(renew);
      clearInterval(refresh);
      await pep.close();
    },
  };
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

/** TLS for the PEP listener: configured files, or a certificate from zt's own CA. */
async function listenerTls(
  ctx: AppContext,
  config: ZtConfig,
  host: string,
): Promise<
  | {
      key: string | Buffer;
      cert: string | Buffer;
      ca?: string;
      requestCert?: boolean;
      clientCerts?: "off" | "optional" | "require";
      refresh?: () => Promise<{ key: string; cert: string; ca: string }>;
    }
  | undefined
> {
  if (!config.tls) return undefined;
  const clientCerts = config.tls.client_certs;
  const requestCert = clientCerts !== "off";
  if (config.tls.cert && config.tls.key) {
    // Client SVIDs are still verified against zt's CA (verifyClientCertificate).
    return {
      cert: readFileSync(config.tls.cert),
      key: readPrivateFile(config.tls.key),
      requestCert,
      clientCerts,
    };
  }
  if (config.tls.from_ca) {
    const hostnames = [...new Set([host, "localhost", ...config.routes.map((r) => r.host)])];
    const t = await pkiServerTlsOptions(ctx, { hostnames });
    const refresh = async () => {
      const n = await pkiServerTlsOptions(ctx, { hostnames });
      return { key: n.key, cert: n.cert, ca: n.ca };
    };
    return { key: t.key, cert: t.cert, ca: t.ca, requestCert, clientCerts, refresh };
  }
  throw new ZtError(
    "ZT_CONFIG_INVALID",
    `${config.configPath}: tls: give cert and key files, or from_ca: true`,
  );
}

/** host:port of a listen address ("[::1]:8443" → ::1, 8443). */
export function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(":");
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) };
}
