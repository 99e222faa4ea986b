import { describe, expect, it } from "vitest";
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { parseConfigText } from "../src/config/index.js";
import { openAppContext } from "../src/app/index.js";
import { createApiServer } from "../src/api/index.js";
import {
  parseCheckpoint,
  splitCheckpointNotes,
  startAuditServices,
  verifyAuditLog,
} from "../src/audit/index.js";
import { makeEnv } from "./audit-helpers.js";

/** The newest note of the witness file (it keeps every note, appended); none before the first. */
function newestNote(file: string): ReturnType<typeof parseCheckpoint> | undefined {
  const notes = existsSync(file) ? splitCheckpointNotes(readFileSync(file, "utf8")) : [];
  return notes.length ? parseCheckpoint(notes[notes.length - 1]!) : undefined;
}

/** Waits for I/O the services do in the background (never for time to pass). */
async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 2_000; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("condition not reached");
}

describe("startAuditServices (zt up wiring) and /metrics on the API listener", () => {
  it("checkpoints every N events to the witness file, ships to a file sink, serves /metrics with a token", async () => {
    const t = makeEnv();
    const witness = join(t.dir, "witness.txt");
    const sinkFile = join(t.dir, "events.jsonl");
    const tokenFile = join(t.dir, "metrics.token");
    const token = randomBytes(16).toString("hex");
    (await import("node:fs")).writeFileSync(tokenFile, token + "\n", { mode: 0o600 });
    const yaml =
      readFileSync(t.config, "utf8") +
      [
        "audit:",
        "  checkpoint_every: 10",
        "  checkpoint_interval: 1h",
        "  poll_interval: 50ms",
        `  metrics_token_file: ${tokenFile}`,
        "  witness:",
        `    file: ${witness}`,
        "  sinks:",
        "    - type: file",
        `      path: ${sinkFile}`,
        "      start_at: beginning",
        "alerts:",
        "  break_glass: true",
        "",
      ].join("\n");
    const config = parseConfigText(yaml, t.config);
    const ctx = await openAppContext(config, { env: { ZT_MASTER_KEY: t.env["ZT_MASTER_KEY"] } });
    const services = await startAuditServices(ctx);
    try {
      for (let i = 0; i < 25; i++)
        ctx.audit.record({ kind: "decision", outcome: "allow", subject: "alice", data: { i } });
      ctx.audit.record({
        kind: "login",
        outcome: "failure",
        subject: "eve",
        reason: "bad-password",
      });
      await ctx.audit.flush();
      // The first write is checkpointed at once; then every 10 more events.
      await until(() => newestNote(witness)?.size === 26);
      for (let i = 0; i < 9; i++)
        ctx.audit.record({ kind: "decision", outcome: "allow", data: { i } });
      await ctx.audit.flush();
      await services.checkpointer.stop(); // drain: no checkpoint for 9 new events
      expect(newestNote(witness)?.size).toBe(26);
      services.checkpointer.start();
      ctx.audit.record({ kind: "decision", outcome: "allow" });
      await ctx.audit.flush();
      await until(() => newestNote(witness)?.size === 36);
      const cp = newestNote(witness);
      expect(cp?.origin).toBe("audit.test/zt/audit");
      // The file sink received every event, in order.
      await until(
        () =>
          existsSync(sinkFile) && readFileSync(sinkFile, "utf8").trim().split("\n").length >= 36,
      );
      const seqs = readFileSync(sinkFile, "utf8")
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { seq: number }).seq);
      expect(seqs.slice(0, 36)).toEqual(Array.from({ length: 36 }, (_, i) => i + 1));

      const app = await createApiServer(ctx);
      await app.listen({ host: "127.0.0.1", port: 0 });
      try {
        const { port } = app.server.address() as { port: number };
        const url = `http://127.0.0.1:${port}/metrics`;
        const denied = await fetch(url);
        expect(denied.status).toBe(401);
        expect(((await denied.json()) as { error: { code: string } }).error.code).toBe(
          "ZT_AUTH_REQUIRED",
        );
        const ok = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
        expect(ok.status).toBe(200);
        expect(ok.headers.get("content-type")).toContain("text/plain");
        const text = await ok.text();
        expect(text).toContain("# TYPE zt_decisions_total counter");
        expect(text).toMatch(/zt_audit_checkpoints_total [1-9]/);
        expect(text).toContain("zt_process_cpu_user_seconds_total");
        expect(text).toContain('zt_logins_total{outcome="bad-password"} 1');
      } finally {
        await app.close();
      }
    } finally {
      await services.stop();
      await ctx.close();
    }
    // After a clean stop the final checkpoint covers everything and verify passes.
    const ctx2 = await openAppContext(config, { env: { ZT_MASTER_KEY: t.env["ZT_MASTER_KEY"] } });
    try {
      const res = await verifyAuditLog(ctx2.store);
      expect(res.ok).toBe(true);
      expect(res.checkpointsChecked).toBeGreaterThanOrEqual(2);
    } finally {
      await ctx2.close();
    }
  });
});
