import { readFileSync } from "node:fs";
import type { AppContext } from "../app/index.js";
import { ZtError } from "../core/errors.js";
import { readPrivateFile } from "../core/secure-files.js";
import { pkiServerTlsOptions } from "../pki/index.js";
import type { ApiTlsOptions } from "./api-server.js";

/**
 * TLS for the API listener from the `tls:` block of zt.yaml (the same block the PEP
 * uses): the configured cert/key files, or a certificate from zt's own CA
 * (`from_ca: true`) for `host` and localhost. Undefined when there is no `tls:` block
 * (plain HTTP, loopback only). `client_certs` other than "off" asks clients for an SVID.
 */
export async function apiListenerTls(
  ctx: AppContext,
  host: string,
): Promise<ApiTlsOptions | undefined> {
  const t = ctx.config.tls;
  if (!t) return undefined;
  if (t.cert && t.key)
    return { cert: readFileSync(t.cert), key: readPrivateFile(t.key), clientCerts: t.client_certs };
  if (t.from_ca) {
    // An unspecified listen address (0.0.0.0, ::) names no host.
    const named = host === "0.0.0.0" || host === "::" ? [] : [host];
    const hostnames = [...new Set([...named, "localhost", "127.0.0.1"])];
    const pki = await pkiServerTlsOptions(ctx, { hostnames });
    return {
      key: pki.key,
      cert: pki.cert,
      ca: pki.ca,
      clientCerts: t.client_certs,
      // An SVID lives pki.svid_ttl: re-issued at half-life, swapped in by the server.
      refresh: async () => {
        const next = await pkiServerTlsOptions(ctx, { hostnames });
        return { key: next.key, cert: next.cert, ca: next.ca };
      },
    };
  }
  throw new ZtError(
    "ZT_CONFIG_INVALID",
    `${ctx.config.configPath}: tls: give cert and key files, or from_ca: true`,
  );
}
