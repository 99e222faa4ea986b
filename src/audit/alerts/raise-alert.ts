import type { Store } from "../../store/index.js";
import { newId } from "../../core/ids.js";
import { discardBody } from "../../core/discard-body.js";
import type { AuditLog } from "../audit-log.js";
import { countAlert } from "../metrics.js";
import type { Alert } from "./alert-engine.js";

export interface RaiseAlertOptions {
  store: Store;
  /** Where the alert is also written as a `kind: alert` event. */
  audit?: AuditLog | undefined;
  /** `alerts.webhook`: the alert is POSTed there. */
  webhook?: string | undefined;
  /** Told about a failed webhook (never thrown), under this name. */
  onWebhookError?: (error: unknown) => void;
  /**
   * Keep going when the `audit_alerts` row cannot be written (the database may be what
   * was tampered with); otherwise that failure rejects.
   */
  bestEffortStore?: boolean;
}

/**
 * Raises an alert everywhere alerts go: a row in `audit_alerts`, a `kind: alert` audit
 * event, the `zt_alerts_fired_total` metric and the alert webhook.
 */
export async function raiseAlert(a: Alert, o: RaiseAlertOptions): Promise<void> {
  const row = o.store.db.insertInto("audit_alerts").values({
    id: newId("alr"),
    ts: a.ts,
    rule: a.rule,
    severity: a.severity,
    key: a.key,
    message: a.message,
    seq: a.seq,
    data: JSON.stringify(a.data),
  });
  if (o.bestEffortStore) await row.execute().catch(() => undefined);
  else await row.execute();
  o.audit?.record({
    kind: "alert",
    outcome: "info",
    reason: a.rule,
    data: { severity: a.severity, key: a.key, message: a.message, seq: a.seq, ...a.data },
  });
  countAlert(a.rule, a.severity);
  if (!o.webhook) return;
  try {
    await postAlert(o.webhook, a);
  } catch (e) {
    o.onWebhookError?.(e);
  }
}

/** POSTs one alert to `alerts.webhook` as JSON; rejects on a failure or a non-2xx answer. */
export async function postAlert(url: string, a: Alert, timeoutMs = 5_000): Promise<void> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ source: "zt", ...a, time: new Date(a.ts).toISOString() }),
    redirect: "manual", // a redirect is a failure: never carry the alert to another host
    signal: AbortSignal.timeout(timeoutMs),
  });
  await discardBody(res);
  if (!res.ok) throw new Error(`alert webhook answered ${res.status}`);
}
