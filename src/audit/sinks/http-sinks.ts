import type { AuditRowChained } from "../audit-log.js";
import { discardBody } from "../../core/discard-body.js";
import {
  CONTENT_REJECTED_STATUSES,
  formatEvent,
  SinkRejectedError,
  type Sink,
  type SinkFormat,
} from "./sink.js";

async function post(
  url: string,
  body: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<void> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
    // A redirect is a failure (res.ok is false), never followed: it would carry the events
    // (and any credential header but Authorization) to whatever host it names.
    redirect: "manual",
    signal: AbortSignal.timeout(timeoutMs),
  });
  await discardBody(res);
  if (res.ok) return;
  const message = `${new URL(url).host} answered ${res.status}`;
  throw CONTENT_REJECTED_STATUSES.has(res.status)
    ? new SinkRejectedError(message, res.status)
    : new Error(message);
}

/**
 * Grafana Loki push API (`POST /loki/api/v1/push`, JSON): one stream per
 * (kind, outcome) with the configured labels; values are `[ns timestamp, line]`.
 */
export function lokiSink(
  name: string,
  url: string,
  labels: Record<string, string>,
  format: SinkFormat,
  timeoutMs = 10_000,
): Sink {
  const pushUrl = new URL(url);
  if (pushUrl.pathname === "/" || pushUrl.pathname === "") pushUrl.pathname = "/loki/api/v1/push";
  return {
    name,
    async deliver(rows: AuditRowChained[]) {
      const streams = new Map<
        string,
        { stream: Record<string, string>; values: [string, string][] }
      >();
      for (const r of rows) {
        const key = `${r.kind}\u0000${r.outcome}`;
        let s = streams.get(key);
        if (!s)
          streams.set(
            key,
            (s = { stream: { ...labels, kind: r.kind, outcome: r.outcome }, values: [] }),
          );
        s.values.push([
          `${BigInt(r.ts) * 1_000_000n + BigInt(r.seq % 1_000_000)}`,
          JSON.stringify(formatEvent(r, format)),
        ]);
      }
      await post(pushUrl.href, JSON.stringify({ streams: [...streams.values()] }), {}, timeoutMs);
    },
    close: async () => undefined,
  };
}

/** POSTs `{ "events": [...] }` to a URL. */
export function webhookSink(
  name: string,
  url: string,
  headers: Record<string, string>,
  format: SinkFormat,
  timeoutMs = 10_000,
): Sink {
  return {
    name,
    async deliver(rows) {
      await post(
        url,
        JSON.stringify({ source: "zt", events: rows.map((r) => formatEvent(r, format)) }),
        headers,
        timeoutMs,
      );
    },
    close: async () => undefined,
  };
}
