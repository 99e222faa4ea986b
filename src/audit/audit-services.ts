import { resolve } from "node:path";
import type { AppContext } from "../app/index.js";
import { parseAuditConfig, readCheckpointPublicKey, type AuditConfig } from "./audit-config.js";
import { CHECKPOINT_KEY_PURPOSE } from "./audit-verify.js";
import { rawEd25519 } from "./checkpoint-note.js";
import {
  Checkpointer,
  fileWitness,
  syslogWitness,
  webhookWitness,
  type Witness,
} from "./checkpointer.js";
import { parseAlertsConfig } from "./alerts/alerts-config.js";
import { AlertService } from "./alerts/alert-service.js";
import { startBanCache } from "./alerts/ban-cache.js";
import { SinkRunner } from "./sinks/sink-runner.js";
import { buildSink } from "./sinks/build-sink.js";
import { countLogin } from "./metrics.js";

export interface AuditServices {
  config: AuditConfig;
  checkpointer: Checkpointer;
  sinks: SinkRunner[];
  alerts: AlertService | undefined;
  /**
   * Applies what a reload of zt.yaml changed that this capability reads: the addresses
   * IP jails never ban (`trusted_proxies` and `api.trusted_proxies`, together). The
   * config reloader calls it as it adopts the new config, so the jails exempt exactly
   * the proxies whose X-Forwarded-For the PEP and the API now trust.
   */
  applyConfigReload(config: Pick<AppContext["config"], "trusted_proxies" | "api">): void;
  stop(): Promise<void>;
}

/**
 * The addresses IP jails never ban: the PEP's `trusted_proxies` and the API's
 * `api.trusted_proxies`. Every client behind a proxy shares its address, so a ban would
 * shut them all out; a jail raises an alert instead.
 */
export function neverBannedIps(
  config: Pick<AppContext["config"], "trusted_proxies" | "api">,
): string[] {
  return [...config.trusted_proxies, ...config.api.trusted_proxies];
}

export interface StartAuditServicesOptions {
  /** Run the alert rules in this process (default true; run them on one replica). */
  alerts?: boolean;
  /** Ship to the configured sinks from this process (default true). */
  sinks?: boolean;
  /** Where to report background problems (sink down, witness unreachable). */
  warn?: (message: string) => void;
}

/**
 * Starts the audit capability's background work for a server process (`zt up`):
 * signed checkpoints every N events / T seconds pushed to the witnesses, the sink
 * runners, the alert rules, and the ban cache behind `isBanned`. Stop it before
 * closing the AppContext.
 */
export async function startAuditServices(
  ctx: AppContext,
  options: StartAuditServicesOptions = {},
): Promise<AuditServices> {
  const config = parseAuditConfig(ctx.config.audit, ctx.config.trust_domain);
  // Both lists name proxies whose clients share their address: never banned (and kept
  // current by applyConfigReload).
  const alertsConfig = parseAlertsConfig(ctx.config.alerts, neverBannedIps(ctx.config));
  const warn = options.warn ?? (() => undefined);
  const path = (p: string) => resolve(ctx.config.configDir, p);

  const witnesses: Witness[] = [];
  if (config.witness.file) witnesses.push(fileWitness(path(config.witness.file)));
  if (config.witness.webhook) witnesses.push(webhookWitness(config.witness.webhook));
  if (config.witness.syslog) {
    const s = config.witness.syslog;
    witnesses.push(
      syslogWitness(
        {
          host: s.host,
          port: s.port,
          protocol: s.protocol,
          appName: s.app_name,
          ca: s.ca_file && path(s.ca_file),
        },
        ctx.clock,
      ),
    );
  }
  const pinned = config.checkpoint_public_key
    ? readCheckpointPublicKey(path(config.checkpoint_public_key))
    : undefined;
  if (pinned) {
    const active = await ctx.keys.activeKey(CHECKPOINT_KEY_PURPOSE, "EdDSA");
    if (!rawEd25519(active.publicKey).equals(rawEd25519(pinned)))
      warn(
        "audit.checkpoint_public_key is not the checkpoint signing key in use: checkpoints signed now will fail zt audit verify",
      );
  }
  const checkpointer = new Checkpointer({
    store: ctx.store,
    keys: ctx.keys,
    clock: ctx.clock,
    origin: config.origin,
    every: config.checkpoint_every,
    intervalMs: config.checkpointIntervalMs,
    witnesses,
    onWitnessError: (w, e) => warn(`audit witness ${w}: ${(e as Error).message}`),
    ...(pinned ? { publicKeys: [pinned] } : {}),
    audit: ctx.audit,
    ...(alertsConfig.webhook ? { alertWebhook: alertsConfig.webhook } : {}),
    onChainBroken: (p) =>
      warn(
        `ERROR: not signing audit checkpoints: the chain no longer leads on from the last signed head: ${p.kind} at seq ${p.seq}: ${p.detail}`,
      ),
  });
  checkpointer.start();

  const sinks: SinkRunner[] = [];
  if (options.sinks !== false) {
    config.sinks.forEach((c, i) => {
      const sinkConf = c.type === "file" ? { ...c, path: path(c.path) } : c;
      sinks.push(
        new SinkRunner({
          store: ctx.store,
          clock: ctx.clock,
          sink: buildSink(sinkConf, i),
          batch: c.batch,
          maxLag: c.max_lag,
          kinds: c.kinds,
          startAt: c.start_at,
          pollIntervalMs: config.pollIntervalMs,
          onError: (name, e) => warn(`audit sink ${name}: ${(e as Error).message}`),
        }),
      );
    });
    for (const s of sinks) s.start();
  }
  const unlisten = ctx.audit.addWrittenListener((rows) => {
    // Logins are counted from the log itself, so the identity code needs no metrics calls.
    for (const r of rows) {
      if (r.kind === "login")
        countLogin(r.outcome === "failure" ? (r.reason ?? "failure") : r.outcome);
    }
    checkpointer.maybeCheckpoint(rows[rows.length - 1]!.seq);
    for (const s of sinks) s.poke();
  });

  let alerts: AlertService | undefined;
  if (options.alerts !== false && alertsConfig.enabled) {
    alerts = new AlertService({
      store: ctx.store,
      clock: ctx.clock,
      audit: ctx.audit,
      events: ctx.events,
      config: alertsConfig,
      pollIntervalMs: config.pollIntervalMs,
      onError: (what, e) => warn(`${what}: ${(e as Error).message}`),
    });
    await alerts.start();
  }
  const stopBans = await startBanCache(ctx.store, ctx.events, () => ctx.clock.now());

  return {
    config,
    checkpointer,
    sinks,
    alerts,
    applyConfigReload(next) {
      alerts?.setSharedIps(neverBannedIps(next));
    },
    async stop() {
      unlisten();
      stopBans();
      await alerts?.stop();
      await Promise.all(sinks.map((s) => s.stop()));
      await ctx.audit.flush().catch(() => undefined);
      await checkpointer.checkpointNow().catch(() => undefined);
      await checkpointer.stop();
      await Promise.all(witnesses.map((w) => w.close?.()));
    },
  };
}
