import { readFileSync } from "node:fs";
import type { Server as TlsServer } from "node:tls";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { readPrivateFile } from "../core/secure-files.js";
import { pkiServerTlsOptions } from "./index.js";

/** TLS for a zt listener (PEP or API) from the `tls:` block of zt.yaml. */
export interface ListenerTls {
  key: string | Buffer;
  cert: string | Buffer;
  ca?: string | undefined;
  clientCerts: "off" | "optional" | "require";
  /**
   * For a certificate from zt's own CA (short-lived): the current key/cert — the same
   * ones until half their life, then new ones. See `keepCertificateFresh`.
   */
  refresh?: (() => Promise<{ key: string; cert: string; ca?: string }>) | undefined;
}

/**
 * The configured cert/key files, or (`from_ca: true`) a certificate from zt's own CA
 * for `hostnames` (a function: asked again at each refresh, so that the names can follow
 * a config reload). Undefined when there is no `tls:` block (plain HTTP, loopback only).
 */
export async function listenerTlsFromConfig(
  ctx: AppContext,
  hostnames: readonly string[] | (() => readonly string[]),
): Promise<ListenerTls | undefined> {
  const names = typeof hostnames === "function" ? hostnames : () => hostnames;
  const t = ctx.config.tls;
  if (!t) return undefined;
  if (t.cert && t.key)
    return { cert: readFileSync(t.cert), key: readPrivateFile(t.key), clientCerts: t.client_certs };
  if (t.from_ca) {
    const pki = await pkiServerTlsOptions(ctx, { hostnames: [...names()] });
    return {
      key: pki.key,
      cert: pki.cert,
      ca: pki.ca,
      clientCerts: t.client_certs,
      refresh: async () => {
        const next = await pkiServerTlsOptions(ctx, { hostnames: [...names()] });
        return { key: next.key, cert: next.cert, ca: next.ca };
      },
    };
  }
  throw new ZtError(
    "ZT_CONFIG_INVALID",
    `${ctx.config.configPath}: tls: give cert and key files, or from_ca: true`,
  );
}

/**
 * Swaps a re-issued certificate into a listening TLS server without a restart (open
 * connections keep theirs): asks `tls.refresh` every `everyMs` and calls
 * `setSecureContext` when the certificate changed. `stop` ends it; `now` refreshes at
 * once (rejecting when no certificate could be had), e.g. after the names changed.
 */
export function keepCertificateFresh(
  server: TlsServer,
  tls: Pick<ListenerTls, "cert" | "refresh">,
  everyMs = 5 * 60_000,
): { stop(): void; now(): Promise<void> } {
  const refresh = tls.refresh;
  if (!refresh) return { stop: () => undefined, now: async () => undefined };
  let current = String(tls.cert);
  const now = async () => {
    const t = await refresh();
    if (t.cert === current) return;
    current = t.cert;
    server.setSecureContext({ key: t.key, cert: t.cert, ...(t.ca ? { ca: t.ca } : {}) });
  };
  const timer = setInterval(() => {
    // On failure keep serving the current certificate; the next tick tries again.
    now().catch(() => undefined);
  }, everyMs);
  timer.unref();
  return { stop: () => clearInterval(timer), now };
}
