import type { AppContext } from "../app/index.js";
import { listenerTlsFromConfig } from "../pki/listener-tls.js";
import type { ApiTlsOptions } from "./api-server.js";

/**
 * TLS for the API listener from the `tls:` block of zt.yaml (the same block the PEP
 * uses): the configured cert/key files, or a certificate from zt's own CA
 * (`from_ca: true`) for `host` and localhost, re-issued at half-life and swapped in by
 * the server. Undefined when there is no `tls:` block (plain HTTP, loopback only).
 * `client_certs` other than "off" asks clients for an SVID.
 */
export async function apiListenerTls(
  ctx: AppContext,
  host: string,
): Promise<ApiTlsOptions | undefined> {
  // An unspecified listen address (0.0.0.0, ::) names no host.
  const named = host === "0.0.0.0" || host === "::" ? [] : [host];
  return listenerTlsFromConfig(ctx, [...new Set([...named, "localhost", "127.0.0.1"])]);
}
