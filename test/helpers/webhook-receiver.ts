/**
 * A real local HTTP server standing in for a notifications webhook: it records the JSON
 * body of every POST it receives and answers 200.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface WebhookReceiver<T> {
  /** http://127.0.0.1:<port>/hook, for `notifications.webhook`. */
  url: string;
  /** The bodies received so far, parsed, in order of arrival. */
  received: T[];
  /** The first body received (so far, or later) that `pred` holds for. */
  waitFor(pred: (body: T) => boolean): Promise<T>;
  close(): Promise<void>;
}

/** Starts a receiver on an ephemeral loopback port. */
export async function startWebhookReceiver<T = Record<string, unknown>>(): Promise<
  WebhookReceiver<T>
> {
  const received: T[] = [];
  const waiters: { pred: (body: T) => boolean; resolve: (body: T) => void }[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      const json = JSON.parse(body) as T;
      received.push(json);
      for (const w of [...waiters]) if (w.pred(json)) w.resolve(json);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    waitFor: (pred) => {
      const hit = received.find(pred);
      if (hit !== undefined) return Promise.resolve(hit);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
