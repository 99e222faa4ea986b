import { availableParallelism } from "node:os";
import { resolve, relative } from "node:path";
import qrcode from "qrcode-terminal";
import type { AddressInfo } from "node:net";
import { loadConfig, type ZtConfig } from "../config/index.js";
import { validateCapabilityConfig } from "./capability-config.js";
import { ZtError } from "../core/errors.js";
import { apiListenerTls, createApiServer } from "../api/index.js";
import { auditCut, LiveConnections, type Pep } from "../proxy/index.js";
import {
  countEventResync,
  countEventsPruned,
  startAuditServices,
  type AuditServices,
} from "../audit/index.js";
import { EventPruner } from "../events/index.js";
import { describePgError } from "../store/index.js";
import {
  createPolicySshAuthorizer,
  initPki,
  setSshSignAuthorizer,
  startIntermediateRotation,
  type IntermediateRotationRunner,
} from "../pki/index.js";
import { openAppContext, type AppContext } from "./app-context.js";
import { createServices, type Services } from "./services.js";
import { startWhoamiApp, type WhoamiApp } from "./whoami-app.js";
import type { Clock } from "../core/clock.js";
import type { ContinuousVerification } from "../session/reevaluator.js";
import { createPepNode, splitHostPort, startProcessVerification } from "./pep-node.js";
import { startPepCluster, type PepCluster } from "./pep-cluster.js";
import { ConfigReloader } from "./config-reloader.js";
import {
  DEMO_USER,
  ensureDemoFiles,
  randomPassword,
  readDemoCredentials,
  saveDemoCredentials,
  type DemoCredentials,
} from "./demo.js";

export interface RunUpOptions {
  configPath: string;
  env: Record<string, string | undefined>;
  /** Demo mode: this folder holds the demo config and data. */
  demoDir?: string | undefined;
  /** Port for the demo upstream app (0 = any). */
  demoPort?: number | undefined;
  out?: (line: string) => void;
  /** Injected clock (tests); defaults to the system clock. */
  clock?: Clock | undefined;
}

export interface RunningZt {
  ctx: AppContext;
  services: Services;
  /** The PEP of this process; undefined when it runs in worker processes (proxy_workers > 1). */
  pep: Pep | undefined;
  /** The PEP worker processes, when listen.proxy_workers > 1. */
  workers: PepCluster | undefined;
  pepAddress: AddressInfo;
  apiAddress: AddressInfo;
  /** Device posture, grants, risk signals and the re-evaluator (continuous verification). */
  continuous: ContinuousVerification;
  /**
   * Automatic rotation of the intermediate CA (`pki.intermediate_rotate_before`); its
   * passes also prune consumed renewal proofs that no longer matter.
   */
  pkiRotation: IntermediateRotationRunner;
  /** Deletes events older than `events.retention` from the event bus's table. */
  eventPruner: EventPruner;
  demo?: { credentials: DemoCredentials; app: WhoamiApp; urls: string[] } | undefined;
  /**
   * SIGHUP: re-reads zt.yaml and applies its reloadable keys (refusing an invalid file,
   * keeping the last good config), reloads the policy set, and has every PEP worker do
   * the same. Reloads run one at a time; never rejects.
   */
  reload(): Promise<void>;
  close(): Promise<void>;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/**
 * `zt up`: control plane (API) + PEP (+ the demo upstream in demo mode), one process.
 * Refuses to start on an invalid config or policy set.
 */
export async function runUp(o: RunUpOptions): Promise<RunningZt> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + "\n"));
  let demoApp: WhoamiApp | undefined;
  let configPath = o.configPath;
  if (o.demoDir) {
    const dir = resolve(o.demoDir);
    demoApp = await startWhoamiApp({
      host: "127.0.0.1",
      port: o.demoPort ?? 9000,
      jwksUrl: () => jwksUrl,
    });
    try {
      ensureDemoFiles(dir, demoApp.port);
    } catch (e) {
      // A --demo-dir that cannot hold the demo: the app's listener would keep zt running.
      await demoApp.close();
      throw e;
    }
    configPath = resolve(dir, "zt.yaml");
  }
  let jwksUrl = "";
  let config: ZtConfig;
  try {
    config = loadConfig(configPath, { env: o.env });
    validateCapabilityConfig(config);
  } catch (e) {
    await demoApp?.close();
    throw e;
  }
  if (demoApp) pointAtDemoApp(config, demoApp.port);
  const proxyListen = splitHostPort(config.listen.proxy);
  const apiListen = splitHostPort(config.listen.api);
  // Plain HTTP only on loopback, for both listeners: the API carries session tokens,
  // join tokens and SVID requests as much as the PEP carries cookies.
  for (const [key, l] of [
    ["listen.proxy", proxyListen],
    ["listen.api", apiListen],
  ] as const) {
    if (!config.tls && !isLoopback(l.host)) {
      await demoApp?.close();
      throw new ZtError(
        "ZT_CONFIG_INVALID",
        `${configPath}: ${key}: plain HTTP is allowed only on loopback; add a tls block (cert/key, or from_ca: true) or listen on 127.0.0.1`,
      );
    }
  }
  const ctx = await openAppContext(config, {
    env: o.env,
    create: true,
    ...(o.clock ? { clock: o.clock } : {}),
  });
  let services: Services | undefined;
  let pepNode: Awaited<ReturnType<typeof createPepNode>> | undefined;
  let workers: PepCluster | undefined;
  let continuous: ContinuousVerification | undefined;
  let audit: AuditServices | undefined;
  let pkiRotation: IntermediateRotationRunner | undefined;
  let eventPruner: EventPruner | undefined;
  let stopResyncReport: (() => void) | undefined;
  let api: Awaited<ReturnType<typeof createApiServer>> | undefined;
  let configs: ConfigReloader | undefined;
  const workerCount = proxyWorkers(config);
  const closeAll = async () => {
    // Listeners first (workers included: from here a worker that exits is not replaced,
    // though every process of the group may have had the SIGTERM), then the background
    // work, so that the audit flush and last checkpoint follow the last decision.
    await workers?.close().catch(() => undefined);
    await pepNode?.close().catch(() => undefined);
    await api?.close().catch(() => undefined);
    await pkiRotation?.stop();
    await eventPruner?.stop();
    stopResyncReport?.();
    continuous?.close();
    await audit?.stop().catch(() => undefined);
    services?.close();
    await ctx.close().catch(() => undefined);
    await demoApp?.close();
  };
  try {
    // Event position before any state is loaded (the PKI's deny list included): what
    // commits meanwhile is delivered at start().
    await ctx.events.mark();
    await initPki(ctx);
    services = await createServices(ctx, {
      watchPolicies: (r) => {
        if (r.ok) out(`zt: policies reloaded (${r.policies} policies)`);
        else out(`zt: policy reload refused, keeping the last good set: ${r.error}`);
      },
      policyWatchError: (m) =>
        out(`zt: policy folder watch failed, polling it instead (edits still apply): ${m}`),
    });
    // ssh:sign is decided by the policy set in force, reloads included.
    const policies = services.policies;
    setSshSignAuthorizer(
      ctx,
      createPolicySshAuthorizer(() => policies.engine),
    );
    let credentials: DemoCredentials | undefined;
    if (o.demoDir) credentials = await ensureDemoUser(services, o.demoDir);
    let live: LiveConnections;
    if (workerCount > 1) {
      // The PEP runs in worker processes; this one keeps the API and the background work.
      // Workers run this config (the demo's upstream port included), not zt.yaml re-read.
      workers = await startPepCluster({ workers: workerCount, config, out });
      live = new LiveConnections(auditCut(ctx.audit));
    } else {
      // Listens only once everything it consults is loaded (below).
      pepNode = await createPepNode(ctx, services, { host: proxyListen.host });
      live = pepNode.pep.live;
    }
    configs = new ConfigReloader({
      ctx,
      services,
      pep: pepNode,
      log: (l) => out(`zt: ${l}`),
      primary: true,
      // The jails exempt the proxies the PEP and the API trust, as the reload left them.
      onAdopted: (c) => audit?.applyConfigReload(c),
    });
    const scheme = config.tls ? "https" : "http";
    const apiTls = await apiListenerTls(ctx, apiListen.host);
    api = await createApiServer(ctx, {
      tls: apiTls,
      sessions: services.sessions,
      ...(workers ? { extraMetrics: () => workers!.workerMetrics() } : {}),
      readiness: async () => {
        const version = services!.policies.engine.policySet.version;
        const configStatus = configs!.status();
        // With PEP workers, every listening one must answer, run the primary's policy
        // set, config and reloads, and be in contact with the store; none listening is no PEP.
        const cluster = workers
          ? await workers.readiness({
              policyVersion: version,
              configVersion: configStatus.config_version,
            })
          : undefined;
        const rotation = pkiRotation?.status();
        const policyError = services!.policies.lastError;
        return {
          ready: cluster?.ready ?? true,
          // Stable codes anyone may see; the text behind them is in `detail`.
          checks: {
            policy: policyError ? "policy-reload-failed" : "ok",
            policy_watch: services!.policies.watchStatus().error ? "policy-watch-failed" : "ok",
            config: configStatus.config_error ? "config-reload-failed" : "ok",
            events: ctx.events.resyncing() ? "events-resyncing" : "ok",
            ...(cluster ? { proxy_workers: cluster.ready ? "ok" : "proxy-workers-not-ready" } : {}),
            ...(rotation
              ? { pki_rotation: rotation.last_outcome === "failed" ? "pki-rotation-failed" : "ok" }
              : {}),
          },
          detail: {
            policy_version: version,
            policy_error: policyError ?? null,
            policy_watch: services!.policies.watchStatus(),
            ...configStatus,
            events_resyncing: ctx.events.resyncing(),
            ...cluster?.detail,
            ...(rotation ? { pki_rotation: rotation } : {}),
          },
        };
      },
    });
    await api.listen({ host: apiListen.host, port: apiListen.port });
    const apiAddress = api.server.address() as AddressInfo;
    continuous = await startProcessVerification(services, live);
    // Events pruned past this process's position (it was cut off or suspended for longer
    // than events.retention): every holder re-reads its state; this reports it.
    stopResyncReport = ctx.events.onResync(async (r) => {
      countEventResync();
      ctx.audit.record({
        kind: "events.resync",
        outcome: "info",
        reason: "events-pruned",
        data: { after_seq: r.afterSeq, pruned_through: r.prunedThrough },
      });
      out(
        `zt: events: position ${r.afterSeq} is behind the pruned events (through ${r.prunedThrough}): re-reading state from the store, denying until done`,
      );
    });
    await ctx.events.start();
    // From here the bus tracks contact with the store: past max_staleness, deny all.
    services.decisions.failClosedWhenStale();
    // Checkpoints, witnesses, sinks, alert rules and the ban cache the PEP consults.
    audit = await startAuditServices(ctx, { warn: (m) => out(`zt: audit: ${m}`) });
    // The intermediate CA is rotated ahead of expiry by whichever replica checks first.
    pkiRotation = startIntermediateRotation(ctx, {
      warn: (m) => out(`zt: pki: ${m}`),
      info: (m) => out(`zt: pki: ${m}`),
    });
    // Events older than events.retention are deleted, in short batches (any replica).
    eventPruner = new EventPruner(ctx.store, {
      clock: ctx.clock,
      retentionMs: config.eventRetentionMs,
      onPass: (r) => countEventsPruned(r.deleted),
      onError: (e) =>
        out(
          `zt: events: pruning failed (retried next pass): ${describePgError(e, typeof ctx.store.pgConfig?.password === "string" ? ctx.store.pgConfig.password : undefined)}`,
        ),
    });
    eventPruner.start();
    // The PEP answers only now: sessions, policies, grants, device posture and the ban
    // cache it consults are loaded and kept current (a banned source was served before).
    let pepAddress: AddressInfo;
    if (pepNode) {
      pepAddress = await pepNode.pep.listen(proxyListen.host, proxyListen.port);
      if (config.forward_auth.spoa_listen) {
        const spoa = splitHostPort(config.forward_auth.spoa_listen);
        const a = await pepNode.pep.listenSpoa(spoa.host, spoa.port);
        out(`zt: SPOE agent (HAProxy forward-auth) listening on ${a.address}:${a.port}`);
      }
    } else pepAddress = workers!.address;
    jwksUrl = `${scheme}://127.0.0.1:${pepAddress.port}/.well-known/zt/jwks.json`;
    out(
      `zt: PEP listening on ${scheme}://${fmtHost(pepAddress)}${workers ? ` (${workers.size} worker processes)` : ""}`,
    );
    out(`zt: API listening on ${apiTls ? "https" : "http"}://${fmtHost(apiAddress)}`);
    let demo: RunningZt["demo"];
    if (o.demoDir && credentials && demoApp) {
      const urls = config.routes.map((r) => {
        const u = new URL(r.from);
        return `${u.protocol}//${u.hostname}:${pepAddress.port}${r.pathPrefix === "/" ? "/" : r.pathPrefix}`;
      });
      demo = { credentials, app: demoApp, urls };
      printDemoBanner(out, credentials, urls, relative(process.cwd(), configPath) || configPath);
    }
    out("zt: ready");
    const reloader = configs;
    const readConfig = () => {
      const next = loadConfig(configPath, { env: o.env });
      // As at start: a value the next start would refuse is refused now, the old config kept.
      validateCapabilityConfig(next);
      if (demoApp) pointAtDemoApp(next, demoApp.port);
      return next;
    };
    const running: RunningZt = {
      ctx,
      services,
      pep: pepNode?.pep,
      workers,
      pepAddress,
      apiAddress,
      demo,
      continuous,
      pkiRotation,
      eventPruner,
      async reload() {
        await reloader.reload(readConfig);
        const r = services!.policies.reload();
        out(
          r.ok ? `zt: policies reloaded (${r.policies})` : `zt: policy reload refused: ${r.error}`,
        );
        workers?.reload(ctx.config);
      },
      close: closeAll,
    };
    return running;
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/**
 * Demo mode: the demo upstream may have had to take another port; points the demo routes
 * at it (plain http ones only: an https route to 127.0.0.1 is not the demo app's, and
 * rewriting it would drop its TLS).
 */
function pointAtDemoApp(config: ZtConfig, port: number): void {
  config.routes = config.routes.map((r) => {
    const u = new URL(r.to);
    return u.protocol === "http:" && u.hostname === "127.0.0.1"
      ? { ...r, to: `http://127.0.0.1:${port}` }
      : r;
  });
}

/** listen.proxy_workers as a number ("auto": one per CPU). */
export function proxyWorkers(config: ZtConfig): number {
  const w = config.listen.proxy_workers;
  return w === "auto" ? Math.max(1, availableParallelism()) : w;
}

function fmtHost(a: AddressInfo): string {
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

async function ensureDemoUser(services: Services, dir: string): Promise<DemoCredentials> {
  const existing = readDemoCredentials(resolve(dir));
  if (existing && (await services.identity.getUser(existing.username))) return existing;
  const password = randomPassword();
  const r = await services.identity.addUser({ name: DEMO_USER, groups: ["eng"], password });
  const c: DemoCredentials = {
    username: DEMO_USER,
    password,
    totp_secret: r.totpSecret,
    totp_uri: r.totpUri,
    backup_codes: r.backupCodes,
  };
  saveDemoCredentials(resolve(dir), c);
  await services.snapshot.refreshUser(r.user.id);
  return c;
}

function printDemoBanner(
  out: (l: string) => void,
  c: DemoCredentials,
  urls: string[],
  configPath: string,
): void {
  out("");
  out("  zt demo is running.");
  out("");
  out(`  Open            ${urls[0]}`);
  out(`  Username        ${c.username}`);
  out(`  Password        ${c.password}`);
  out(`  TOTP secret     ${c.totp_secret}`);
  out(`  TOTP URI        ${c.totp_uri}`);
  out(`  (or: oathtool --totp -b ${c.totp_secret})`);
  out("");
  out("  Scan this with your authenticator app:");
  out(renderQr(c.totp_uri));
  if (urls[1]) out(`  Then try ${urls[1]} — the demo policy denies it, with a decision id.`);
  out(`  See every decision:  ./bin/zt --config ${configPath} audit tail`);
  out("");
}

function renderQr(text: string): string {
  let result = "";
  qrcode.generate(text, { small: true }, (q: string) => {
    result = q;
  });
  return result;
}
