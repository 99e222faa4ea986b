import type { PeerCertificate } from "node:tls";
import type { AppContext } from "../app/index.js";
import { toPem } from "./der.js";
import { PkiService, type PkiServiceOptions } from "./pki-service.js";
import { parsePkiSettings } from "./pki-config.js";
import {
  IntermediateRotationRunner,
  type IntermediateRotationOptions,
} from "./intermediate-rotation.js";
import type { ClientCertResult } from "./client-cert.js";
import { createPolicySshAuthorizer, type SshSignAuthorizer } from "./ssh-authorize.js";
import {
  assertPolicyTests,
  createPolicyEngine,
  loadPolicySet,
  type PolicyEngine,
} from "../policy/index.js";

export { PkiService, AUTO_ROTATE_ACTOR, RENEW_PROOF_SKEW_MS } from "./pki-service.js";
export { IntermediateRotationRunner } from "./intermediate-rotation.js";
export type {
  IntermediateRotationOptions,
  IntermediateRotationStatus,
} from "./intermediate-rotation.js";
export { renewProofInput, nextRenewalAtMs, buildRenewalRequest, describeSvid } from "./renewal.js";
export type { RenewalRequest } from "./renewal.js";
export type {
  IssueAuth,
  IssueSvidRequest,
  IssuedSvid,
  RevokeRequest,
  CertListRow,
  RegistrationInput,
  PkiServiceOptions,
  IntermediateCheckResult,
} from "./pki-service.js";
export type { ClientCertResult } from "./client-cert.js";
export type {
  SshSignAuthorizer,
  SshSignAuthzRequest,
  SshSignAuthzResult,
} from "./ssh-authorize.js";
export type { SshUserSignRequest, SshHostSignRequest, SignedSshCert } from "./ssh-authority.js";
export { parseSpiffeId, spiffeIdProblem } from "./spiffe-id.js";
export type { SpiffeId } from "./spiffe-id.js";
export { parsePkiSettings };
export type { PkiSettings } from "./pki-config.js";
export { parseSshPublicKey } from "./ssh/ssh-key.js";
export { DEFAULT_USER_EXTENSIONS } from "./ssh/ssh-cert.js";
export { createPolicySshAuthorizer } from "./ssh-authorize.js";

const services = new WeakMap<AppContext, Promise<PkiService>>();
const ready = new WeakMap<AppContext, PkiService>();
const authorizers = new WeakMap<AppContext, SshSignAuthorizer>();

/**
 * Sets how `ssh:sign` is decided for this context (the composition root passes the
 * policy engine; tests pass their own). Call before the first `pkiService(ctx)`.
 */
export function setSshSignAuthorizer(ctx: AppContext, authorize: SshSignAuthorizer): void {
  authorizers.set(ctx, authorize);
}

/**
 * The policy set configured in zt.yaml (`policies`, `policy_engine`), loaded on first use
 * and held to its `policy_tests`, as `zt up` holds it: for one-shot processes (the CLI).
 * A long-running process hands over its live, reloading engine with setSshSignAuthorizer.
 */
function configuredEngine(ctx: AppContext): () => PolicyEngine {
  let engine: PolicyEngine | undefined;
  return () => {
    if (engine) return engine;
    const loaded = createPolicyEngine(ctx.config.policy_engine, loadPolicySet(ctx.config.policies));
    assertPolicyTests(loaded, ctx.config.policy_tests);
    return (engine = loaded);
  };
}

/** The PKI service for a context, loaded once (CAs, deny list, revocation events). */
export function pkiService(
  ctx: AppContext,
  options: { create?: boolean } = {},
): Promise<PkiService> {
  let p = services.get(ctx);
  if (!p) {
    let fallback: SshSignAuthorizer | undefined;
    const opts: PkiServiceOptions & { create?: boolean } = {
      create: options.create ?? false,
      // Decided at call time, so the composition root can hand over its live engine later.
      authorizeSshSign: (req) => {
        const chosen = authorizers.get(ctx);
        if (chosen) return chosen(req);
        fallback ??= createPolicySshAuthorizer(configuredEngine(ctx));
        return fallback(req);
      },
    };
    p = PkiService.open(ctx, opts).then((svc) => {
      ready.set(ctx, svc);
      return svc;
    });
    p.catch(() => services.delete(ctx));
    services.set(ctx, p);
  }
  return p;
}

/**
 * Creates the root CA, the intermediate and the SSH user and host CAs when missing.
 * Idempotent; `zt init` and `zt up` call it.
 */
export async function initPki(ctx: AppContext): Promise<void> {
  const existing = services.get(ctx);
  if (existing) {
    await existing;
    return;
  }
  await pkiService(ctx, { create: true });
}

/**
 * Starts the automatic rotation of the intermediate CA for a long-lived control-plane
 * process (`zt up`): a check at once, then periodically; `stop()` it before closing the
 * context. With `pki.auto_rotate: false` the checks only warn when rotation is due.
 *
 * @example const rotation = startIntermediateRotation(ctx, { warn: (m) => log(m) }); … await rotation.stop();
 */
export function startIntermediateRotation(
  ctx: AppContext,
  options: IntermediateRotationOptions = {},
): IntermediateRotationRunner {
  const settings = parsePkiSettings(ctx.config.pki, ctx.config.trust_domain);
  const runner = new IntermediateRotationRunner(
    () => pkiService(ctx),
    settings,
    ctx.clock,
    options,
  );
  runner.start();
  return runner;
}

/**
 * TLS material for a zt listener (PEP or API) from zt's own CA: an SVID for
 * `spiffe://<td>/zt/server` with `hostnames` as DNS/IP SANs, its chain, the trust
 * bundle for verifying client SVIDs, and the current CRL. Re-issued at half-life:
 * call again (e.g. every few minutes) and `server.setSecureContext(...)`.
 *
 * @example https.createServer({ ...(await pkiServerTlsOptions(ctx, { hostnames: ["localhost"] })), requestCert: true, rejectUnauthorized: false })
 */
export async function pkiServerTlsOptions(
  ctx: AppContext,
  options: { hostnames: string[] },
): Promise<{ key: string; cert: string; ca: string; crl?: string }> {
  const svc = await pkiService(ctx);
  const tls = await svc.serverTls("/zt/server", options.hostnames);
  const crl = toPem(await svc.crlDer(), "X509 CRL");
  return { ...tls, crl };
}

/** zt's own SVID for presenting to upstreams (`upstream_mtls: true`). */
export async function pkiClientTlsOptions(
  ctx: AppContext,
): Promise<{ key: string; cert: string; ca: string }> {
  const svc = await pkiService(ctx);
  return svc.serverTls("/zt/pep", []);
}

/**
 * Verifies a client certificate presented to a zt listener: chain to zt's CA, validity
 * at `nowMs`, SPIFFE ID in our trust domain, and the instant deny list (fed by
 * `cert.revoked` events). Synchronous for the hot path; fails closed
 * (`cert-untrusted`) until `pkiService(ctx)` (or `pkiServerTlsOptions`) has loaded.
 * An ok result maps to the Cedar principal `Service::"<spiffeId>"`.
 */
export function verifyClientCertificate(
  ctx: AppContext,
  peer: PeerCertificate | Uint8Array | undefined | null,
  nowMs: number,
): ClientCertResult {
  const svc = ready.get(ctx);
  if (!svc) return { ok: false, reason: "cert-untrusted" };
  return svc.verifyClientCertificate(peer as { raw?: Buffer } | Uint8Array | undefined, nowMs);
}
