import type { Store } from "../../store/index.js";
import type { Clock } from "../../core/clock.js";
import type { EventBus } from "../../events/index.js";
import type { AuditLog, AuditRowOut } from "../audit-log.js";
import { AuditCursor, headSeq } from "../audit-cursor.js";
import { queryAudit } from "../audit-query.js";
import { AlertEngine, type Alert, type AlertEvent, type Ban } from "./alert-engine.js";
import type { AlertsConfig } from "./alerts-config.js";
import { postAlert, raiseAlert } from "./raise-alert.js";

/** Alerts that may wait for the webhook; beyond that they are only stored and logged. */
const MAX_WEBHOOK_QUEUE = 1_000;

export interface AlertServiceOptions {
  store: Store;
  clock: Clock;
  audit: AuditLog;
  events: EventBus;
  config: AlertsConfig;
  pollIntervalMs?: number;
  /** Process as soon as this process writes audit events (default true). */
  wakeOnWrite?: boolean;
  /** Told about webhook failures (never thrown). */
  onError?: (what: string, error: unknown) => void;
}

export function toAlertEvent(r: AuditRowOut): AlertEvent {
  let data: Record<string, unknown> = {};
  try {
    data = JSON.parse(r.data) as Record<string, unknown>;
  } catch {
    /* keep {} */
  }
  return {
    seq: r.seq,
    ts: r.ts,
    kind: r.kind,
    outcome: r.outcome,
    subject: r.subject,
    source_ip: r.source_ip,
    route: r.route,
    reason: r.reason,
    data,
  };
}

/**
 * Runs the alert rules over the audit stream: reads by its own cursor (`alerts`), feeds
 * the pure {@link AlertEngine}, and acts on what it returns — alerts to `audit_alerts`,
 * the audit log and the webhook; bans to `audit_bans` plus a `ban.changed` event that
 * every PEP's ban cache hears.
 */
export class AlertService {
  readonly #o: AlertServiceOptions;
  readonly #cursor: AuditCursor;
  #engine: AlertEngine;
  /** The options' config, with the never-ban list as the last reload left it. */
  #config: AlertsConfig;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> = Promise.resolve();
  #unsubs: (() => void)[] = [];
  /** Alerts waiting for `alerts.webhook`, posted one at a time off the rules' path. */
  readonly #webhookQueue: Alert[] = [];
  #webhookDone: Promise<void> | undefined;
  #stopped = false;

  constructor(options: AlertServiceOptions) {
    this.#o = options;
    this.#cursor = new AuditCursor(options.store, "alerts");
    this.#config = options.config;
    this.#engine = new AlertEngine(options.config);
  }

  /** Loads ban history, replays recent events (without firing) and starts following. */
  async start(): Promise<void> {
    const { store, clock } = this.#o;
    const counts = await store.db.selectFrom("audit_bans").select(["key", "count"]).execute();
    const banCounts = new Map(counts.map((c) => [c.key, Number(c.count)]));
    const pos = await this.#cursor.position(() => headSeq(store), clock.now());
    this.#engine = new AlertEngine(this.#config, new Map());
    const since = clock.now() - this.#config.replayMs;
    let after = 0;
    while (true) {
      const rows = (await queryAudit(store, { afterSeq: after, since, limit: 5_000 })).filter(
        (r) => r.seq <= pos,
      );
      for (const r of rows) this.#engine.evaluate(toAlertEvent(r));
      if (rows.length < 5_000) break;
      after = rows[rows.length - 1]!.seq;
    }
    // Replay rebuilt the windows; ban history comes from the table, not the replay.
    const replayed = this.#engine;
    // The list as it is now: a reload during the replay is not lost.
    this.#engine = new AlertEngine(this.#config, banCounts);
    this.#engine.adoptWindows(replayed);
    this.#engine.replaceBans(await activeBans(store));

    if (this.#o.wakeOnWrite !== false) {
      this.#unsubs.push(
        this.#o.audit.addWrittenListener(() => void this.processNow().catch(() => undefined)),
      );
    }
    this.#unsubs.push(
      this.#o.events.subscribe((e) => {
        if (
          e.kind === "ban.changed" &&
          e.data["action"] === "remove" &&
          typeof e.data["key"] === "string"
        ) {
          this.#engine.lift(e.data["key"]);
        }
      }),
    );
    // Events pruned past this process's position: a `ban.changed` removal may be lost.
    this.#unsubs.push(this.#o.events.onResync(() => this.#reloadBans()));
    this.#timer = setInterval(
      () => void this.processNow().catch(() => undefined),
      this.#o.pollIntervalMs ?? 1_000,
    );
    this.#timer.unref();
  }

  /**
   * Replaces the addresses IP jails never ban (`trusted_proxies` and
   * `api.trusted_proxies`, as a reload of zt.yaml left them): the rules judge every event
   * they take up from now on by the new list.
   */
  setSharedIps(cidrs: readonly string[]): void {
    this.#engine.setSharedIps(cidrs);
    this.#config = { ...this.#config, sharedIps: [...cidrs] };
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const u of this.#unsubs.splice(0)) u();
    await this.#running.catch(() => undefined);
    this.#stopped = true;
    const left = this.#webhookQueue.splice(0).length;
    if (left > 0)
      this.#o.onError?.(
        "alert webhook",
        new Error(`stopping: ${left} alert(s) not posted (they are in zt alerts list)`),
      );
    await this.#webhookDone;
  }

  /** Re-reads the active bans into the engine, serialised with the rules' runs. */
  #reloadBans(): Promise<void> {
    const next = this.#running
      .catch(() => undefined)
      .then(async () => this.#engine.replaceBans(await activeBans(this.#o.store)));
    this.#running = next;
    return next;
  }

  /** Processes everything after the cursor now (serialised). Resolves with the alerts fired. */
  processNow(): Promise<Alert[]> {
    const next = this.#running.catch(() => undefined).then(() => this.#process());
    this.#running = next;
    return next;
  }

  async #process(): Promise<Alert[]> {
    const fired: Alert[] = [];
    const { store, clock } = this.#o;
    while (true) {
      await this.#cursor.position(() => headSeq(store), clock.now());
      const rows = await this.#cursor.read(1_000);
      if (rows.length === 0) return fired;
      const alerts: Alert[] = [];
      const bans: Ban[] = [];
      for (const r of rows) {
        const res = this.#engine.evaluate(toAlertEvent(r));
        alerts.push(...res.alerts);
        bans.push(...res.bans);
      }
      if (!(await this.#cursor.commit(rows[rows.length - 1]!.seq, clock.now()))) continue; // another replica has it
      for (const b of bans) await this.#applyBan(b);
      for (const a of alerts) await this.#applyAlert(a);
      fired.push(...alerts);
    }
  }

  async #applyBan(b: Ban): Promise<void> {
    const { store, audit, events } = this.#o;
    await store.db
      .insertInto("audit_bans")
      .values({
        key: b.key,
        kind: b.kind,
        value: b.value,
        rule: b.rule,
        reason: b.reason,
        created_at: b.createdAt,
        until: b.until,
        count: b.count,
        lifted_at: null,
      })
      .onConflict((oc) =>
        oc.column("key").doUpdateSet({
          rule: b.rule,
          reason: b.reason,
          created_at: b.createdAt,
          until: b.until,
          count: b.count,
          lifted_at: null,
        }),
      )
      .execute();
    audit.record({
      kind: "ban.add",
      outcome: "info",
      // A network ban has no one source address (its key names the network).
      ...(b.kind === "ip"
        ? b.value.includes("/")
          ? {}
          : { sourceIp: b.value }
        : { subject: b.value }),
      reason: b.rule,
      data: { key: b.key, until: b.until, count: b.count, why: b.reason },
    });
    await events.publish("ban.changed", {
      action: "add",
      key: b.key,
      until: b.until,
      rule: b.rule,
    });
  }

  /**
   * Stores, logs and counts the alert, and queues it for the webhook: the rules never
   * wait for the webhook, so a slow or unreachable receiver cannot hold back the bans
   * of the events that follow (an attacker could otherwise fire alerts to delay them).
   */
  async #applyAlert(a: Alert): Promise<void> {
    const { store, audit, config } = this.#o;
    await raiseAlert(a, { store, audit });
    if (!config.webhook || this.#stopped) return;
    if (this.#webhookQueue.length >= MAX_WEBHOOK_QUEUE) {
      this.#o.onError?.(
        "alert webhook",
        new Error(
          `${MAX_WEBHOOK_QUEUE} alerts already wait to be posted: ${a.rule} ${a.key} is not (it is in zt alerts list)`,
        ),
      );
      return;
    }
    this.#webhookQueue.push(a);
    this.#webhookDone ??= this.#postQueued(config.webhook);
  }

  async #postQueued(url: string): Promise<void> {
    try {
      for (let a = this.#webhookQueue.shift(); a; a = this.#webhookQueue.shift()) {
        await postAlert(url, a).catch((e: unknown) => this.#o.onError?.("alert webhook", e));
      }
    } finally {
      this.#webhookDone = undefined;
    }
  }
}

/** The bans not lifted, as the engine tracks them (expired ones are swept by the engine). */
async function activeBans(store: Store): Promise<{ key: string; until: number }[]> {
  const rows = await store.db
    .selectFrom("audit_bans")
    .select(["key", "until"])
    .where("lifted_at", "is", null)
    .execute();
  return rows.map((b) => ({ key: b.key, until: Number(b.until) }));
}
