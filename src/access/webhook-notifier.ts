import type { AppContext } from "../app/index.js";
import type { NotificationsConfig } from "./access-config.js";
import { discardBody } from "../core/discard-body.js";

export interface Notification {
  /** e.g. access.requested, access.approved, breakglass.opened */
  event: string;
  severity: "info" | "warning" | "critical";
  summary: string;
  data: Record<string, unknown>;
}

/**
 * Posts notifications as JSON to the configured webhook. A failed delivery is audited
 * and never fails the action that caused it (the audit record is the source of truth).
 */
export class WebhookNotifier {
  readonly #ctx: AppContext;
  readonly #config: NotificationsConfig;

  constructor(ctx: AppContext, config: NotificationsConfig) {
    this.#ctx = ctx;
    this.#config = config;
  }

  async notify(n: Notification): Promise<boolean> {
    const url = this.#config.webhook;
    if (!url) return false;
    const body = JSON.stringify({
      source: "zt",
      ts: new Date(this.#ctx.clock.now()).toISOString(),
      ...n,
    });
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "zt-notifier" },
        body,
        // A redirect is a failure (res.ok is false), never followed: it would carry who asked
        // for what, and why, to whatever host it names.
        redirect: "manual",
        signal: AbortSignal.timeout(this.#config.timeoutMs),
      });
      await discardBody(res);
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      return true;
    } catch (e) {
      this.#ctx.audit.record({
        kind: "notify.webhook",
        outcome: "failure",
        reason: "webhook-failed",
        data: { event: n.event, error: (e as Error).message },
      });
      return false;
    }
  }
}
