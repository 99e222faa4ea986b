import { afterEach, describe, expect, it } from "vitest";
import { createSocket } from "node:dgram";
import { createServer, type AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { openStore } from "../src/store/index.js";
import { ManualClock } from "../src/core/clock.js";
import { KeyStore, loadMasterKey } from "../src/keys/index.js";
import { parseConfigText } from "../src/config/index.js";
import { openAppContext } from "../src/app/index.js";
import {
  AuditLog,
  auditHead,
  Checkpointer,
  parseCheckpoint,
  startAuditServices,
  syslogWitness,
  verifyCheckpointSignature,
} from "../src/audit/index.js";
import { makeEnv } from "./audit-helpers.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** `<PRI>1 TS HOST APP PROCID MSGID [zt@32473 size=".." origin=".."] MSG` */
const CHECKPOINT_MSG =
  /^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\d+) audit\.checkpoint \[zt@32473 size="(\d+)" origin="([^"]+)"\] (.*)$/s;

interface WitnessBody {
  origin: string;
  size: number;
  head_hash: string;
  note: string;
}

function parseMessage(m: string): { pri: number; app: string; size: number; body: WitnessBody } {
  const g = CHECKPOINT_MSG.exec(m);
  if (!g) throw new Error(`not a checkpoint message: ${m}`);
  return { pri: Number(g[1]), app: g[4]!, size: Number(g[6]), body: JSON.parse(g[8]!) };
}

/** Waits for a real socket to deliver (never for time to pass). */
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 2_000 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!check()) throw new Error("condition not reached");
}

describe("syslog checkpoint witness", () => {
  it("UDP: one RFC 5424 message carrying the signed note, which verifies with the audit key", async () => {
    const t = makeEnv();
    const clock = new ManualClock();
    const store = await openStore({ dataDir: t.dataDir });
    cleanups.push(() => store.close());
    const server = createSocket("udp4");
    const got: string[] = [];
    server.on("message", (m) => got.push(m.toString()));
    await new Promise<void>((r) => server.bind(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));

    const keys = new KeyStore(
      store,
      loadMasterKey({ dataDir: t.dataDir, envValue: t.env["ZT_MASTER_KEY"] }),
      clock,
    );
    const log = new AuditLog(store, { clock });
    for (let i = 0; i < 7; i++) log.record({ kind: "decision", outcome: "allow", data: { i } });
    await log.close();
    const witness = syslogWitness(
      { host: "127.0.0.1", port: server.address().port, protocol: "udp", appName: "zt-audit" },
      clock,
    );
    cleanups.push(() => witness.close?.());
    const cp = new Checkpointer({
      store,
      keys,
      clock,
      origin: "audit.test/zt/audit",
      every: 100,
      intervalMs: 60_000,
      witnesses: [witness],
      onWitnessError: (_w, e) => {
        throw e;
      },
    });
    const note = await cp.checkpointNow();
    await until(() => got.length === 1);
    const m = parseMessage(got[0]!);
    expect(m.pri).toBe(13 * 8 + 5); // log audit, notice
    expect(m.app).toBe("zt-audit");
    expect(m.size).toBe(7);
    expect(m.body.note).toBe(note);
    const parsed = parseCheckpoint(m.body.note);
    const head = await auditHead(store);
    expect(parsed).toMatchObject({ origin: "audit.test/zt/audit", size: 7 });
    expect(parsed.headHash).toBe(head.hash);
    expect(m.body.head_hash).toBe(head.hash);
    const key = await keys.activeKey("audit-checkpoint", "EdDSA");
    expect(verifyCheckpointSignature(parsed, key.publicKey)).toBe(true);
    // A note altered in transit does not verify.
    const forged = parseCheckpoint(m.body.note.replace("\n7\n", "\n8\n"));
    expect(verifyCheckpointSignature(forged, key.publicKey)).toBe(false);
    await cp.stop();
  });

  it("TCP from `audit.witness.syslog` in zt.yaml (zt up wiring): octet-counted notes that verify", async () => {
    const frames: string[] = [];
    let pending = "";
    const server = createServer((sock) => {
      sock.on("data", (d: Buffer) => {
        pending += d.toString();
        // RFC 6587 octet counting: `LEN SP MSG`.
        for (;;) {
          const sp = pending.indexOf(" ");
          if (sp < 0) break;
          const len = Number(pending.slice(0, sp));
          if (Buffer.byteLength(pending.slice(sp + 1)) < len) break;
          const rest = Buffer.from(pending.slice(sp + 1));
          frames.push(rest.subarray(0, len).toString());
          pending = rest.subarray(len).toString();
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as AddressInfo).port;

    const t = makeEnv();
    const yaml =
      readFileSync(t.config, "utf8") +
      [
        "audit:",
        "  checkpoint_every: 5",
        "  checkpoint_interval: 1h",
        "  witness:",
        "    syslog:",
        "      host: 127.0.0.1",
        `      port: ${port}`,
        "      protocol: tcp",
        "",
      ].join("\n");
    const ctx = await openAppContext(parseConfigText(yaml, t.config), {
      env: { ZT_MASTER_KEY: t.env["ZT_MASTER_KEY"] },
    });
    cleanups.push(() => ctx.close());
    const services = await startAuditServices(ctx);
    let stopped = false;
    cleanups.push(() => (stopped ? undefined : services.stop()));
    for (let i = 0; i < 12; i++)
      ctx.audit.record({ kind: "decision", outcome: "deny", data: { i } });
    await ctx.audit.flush();
    await services.stop(); // the final checkpoint covers all 12
    stopped = true;
    await until(() => frames.some((f) => parseMessage(f).size === 12));
    const key = await ctx.keys.activeKey("audit-checkpoint", "EdDSA");
    const head = await auditHead(ctx.store);
    const last = parseMessage(frames.find((f) => parseMessage(f).size === 12)!);
    expect(last.app).toBe("zt");
    const cp = parseCheckpoint(last.body.note);
    expect(cp).toMatchObject({ size: 12, origin: "audit.test/zt/audit", headHash: head.hash });
    expect(verifyCheckpointSignature(cp, key.publicKey)).toBe(true);
    for (const f of frames) {
      const m = parseMessage(f);
      expect(verifyCheckpointSignature(parseCheckpoint(m.body.note), key.publicKey)).toBe(true);
    }
  });
});
