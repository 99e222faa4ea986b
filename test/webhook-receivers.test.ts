/**
 * zt's webhook senders (the access notifier, alerts.webhook, the audit webhook sink and
 * witness) against a real HTTP receiver that misbehaves: it answers 200 and then streams
 * a body that never ends. zt reads at most a few KiB of an answer it has no use for; each
 * used to buffer the whole body in memory until its timeout. And a receiver that
 * redirects has failed: the notification is not carried to the host it names.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { validateConfig } from "../src/config/index.js";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { WebhookNotifier } from "../src/access/index.js";
import { webhookWitness } from "../src/audit/index.js";
import { webhookSink } from "../src/audit/sinks/http-sinks.js";
import { postAlert } from "../src/audit/alerts/raise-alert.js";

/** What the receiver had written when zt closed the connection. */
const TOTAL = 64 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, "x");

let dir: string;
let ctx: AppContext;
let server: http.Server;
let url: string;
const closedAfter: number[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "zt-webhook-body-"));
  ctx = await openAppContext(
    validateConfig({ data_dir: join(dir, "data") }, join(dir, "zt.yaml")),
    {
      env: { ZT_MASTER_KEY: randomBytes(32).toString("base64") },
      create: true,
    },
  );
  server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "application/octet-stream" });
    let written = 0;
    res.on("close", () => closedAfter.push(written));
    // 64 MiB as fast as the client takes it, then nothing more and no end: a client that
    // buffers the whole answer waits for its timeout.
    const pump = () => {
      while (written < TOTAL && !res.destroyed) {
        written += CHUNK.length;
        if (!res.write(CHUNK)) return void res.once("drain", pump);
      }
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await ctx.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Waits until the receiver has seen `n` connections close; returns what each had written. */
async function closed(n: number): Promise<number[]> {
  for (let i = 0; i < 200 && closedAfter.length < n; i++)
    await new Promise<void>((r) => setTimeout(r, 25));
  return closedAfter.slice(0, n);
}

describe("a webhook receiver streaming an endless answer", () => {
  it("the access notifier reads at most a few KiB of it and hangs up (it was buffered whole)", async () => {
    const notifier = new WebhookNotifier(ctx, { webhook: url, timeoutMs: 10_000 });
    const delivered = await notifier.notify({
      event: "access.requested",
      severity: "info",
      summary: "bob asks for prod",
      data: {},
    });
    // A 200 is a delivery: the body is not waited for (it never ends).
    expect(delivered).toBe(true);
    const [written] = await closed(1);
    // zt hung up long before the receiver had written its 64 MiB.
    expect(written).toBeLessThan(TOTAL);
  }, 30_000);

  it("so do alerts.webhook, the audit webhook sink and the webhook witness", async () => {
    const before = closedAfter.length;
    await postAlert(url, {
      rule: "r",
      severity: "warning",
      key: "ip:192.0.2.1",
      message: "m",
      seq: 1,
      ts: 0,
      data: {},
    });
    await webhookSink("w", url, {}, "jsonl").deliver([]);
    await webhookWitness(url).push("note", { origin: "o", size: 1, headHash: "00" });
    const written = (await closed(before + 3)).slice(before);
    expect(written).toHaveLength(3);
    for (const w of written) expect(w).toBeLessThan(TOTAL);
  }, 60_000);
});

describe("a webhook receiver answering with a redirect", () => {
  it("fails the notification, audited, and the notification is not sent where it points (it was followed)", async () => {
    const elsewhere: string[] = [];
    const other = http.createServer((req, res) => {
      elsewhere.push(`${req.method} ${req.url}`);
      req.resume();
      res.end("ok");
    });
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", () => r()));
    const redirecting = http.createServer((req, res) => {
      req.resume();
      res.writeHead(307, {
        location: `http://127.0.0.1:${(other.address() as AddressInfo).port}/collect`,
      });
      res.end();
    });
    await new Promise<void>((r) => redirecting.listen(0, "127.0.0.1", () => r()));
    try {
      const notifier = new WebhookNotifier(ctx, {
        webhook: `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}/hook`,
        timeoutMs: 10_000,
      });
      const delivered = await notifier.notify({
        event: "breakglass.opened",
        severity: "critical",
        summary: "bob opened break-glass",
        data: { justification: "incident 42" },
      });
      expect(delivered).toBe(false);
      expect(elsewhere).toEqual([]);
      await ctx.audit.flush();
      const rows = await ctx.store.db
        .selectFrom("audit_events")
        .selectAll()
        .where("kind", "=", "notify.webhook")
        .execute();
      expect(rows.map((r) => r.outcome)).toContain("failure");
      expect(JSON.stringify(rows)).toContain("HTTP 307");
    } finally {
      await new Promise<void>((r) => redirecting.close(() => r()));
      await new Promise<void>((r) => other.close(() => r()));
    }
  });
});
