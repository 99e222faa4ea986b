/**
 * A WebSocket or streaming response authenticated by an mTLS client certificate (an
 * X.509-SVID from zt's own PKI, no session) is cut when that certificate expires: its
 * notAfter is the connection's absolute deadline, as a session's expiry is for a
 * session's connections. `zt up` in process with a TLS listener from zt's CA, a real
 * `ws` upstream and real TLS clients over loopback.
 *
 * The deadline timer (first suite) runs on the system clock: zt is not given a clock.
 * The PKI will not issue an SVID shorter than a minute, so to have one with a few
 * seconds left, the test issues it from zt's own CA and store through a second PKI
 * service whose clock reads 52 s in the past: the certificate is a real one from zt's
 * PKI, signed when "now" was 52 s ago; nothing of the PEP or re-evaluator under test
 * sees that clock. `session.recheck_interval` is an hour and every wait is bounded far
 * below it, so a socket that is cut was cut by its own deadline.
 *
 * The periodic pass (second suite) is the fallback for a deadline with no timer yet:
 * there zt runs on a manual clock, moved past notAfter, and the pass is run by hand.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import https from "node:https";
import WebSocket from "ws";
import { ManualClock, type Clock } from "../src/core/clock.js";
import { runUp, type RunningZt } from "../src/app/run-up.js";
import { PkiService, pkiService } from "../src/pki/index.js";
import { tempDir, writeConfig } from "./helpers/zt-process.js";
import { startStreamingUpstream } from "./helpers/upstream.js";
import { relay } from "./helpers/websocket-client.js";

const TD = "expiry.test";
const HOST = "chat.localhost";
/** Bounds every wait for a cut: far below the hour-long recheck_interval. */
const WAIT = { timeout: 20_000, interval: 50 };
/** The PKI's shortest SVID lifetime (MIN_SVID_TTL_MS): what the SVIDs here are issued for. */
const MIN_TTL_MS = 60_000;

type Svid = { keyPem: string; chainPem: string; serial: string; notAfterMs: number };

/** zt with one WebSocket route (and /stream, a response that never ends) to a real upstream. */
function mtlsFixture(clock?: Clock) {
  const f = {
    zt: undefined as unknown as RunningZt,
    port: 0,
    bundle: "",
    upstream: undefined as Awaited<ReturnType<typeof startStreamingUpstream>> | undefined,
  };

  beforeAll(async () => {
    f.upstream = await startStreamingUpstream();
    const to = f.upstream.url;
    const config = writeConfig(
      tempDir("zt-mtls-expiry-"),
      `data_dir: ./data
trust_domain: ${TD}
tls: { from_ca: true, client_certs: optional }
routes:
  - { name: chat, from: "https://${HOST}", to: "${to}", websockets: true }
policies: ./policies
session: { ttl: 1h, idle_timeout: 1h, recheck_interval: 1h }
`,
      { "main.cedar": "permit (principal, action, resource);" },
    );
    f.zt = await runUp({
      configPath: config,
      env: { ZT_LISTEN__PROXY: "127.0.0.1:0", ZT_LISTEN__API: "127.0.0.1:0" },
      out: () => undefined,
      ...(clock ? { clock } : {}),
    });
    f.port = f.zt.pepAddress.port;
    f.bundle = (await pkiService(f.zt.ctx)).bundlePem();
  }, 120_000);

  afterAll(async () => {
    await f.zt?.close();
    await f.upstream?.close();
  });

  const tlsOf = (svid: Svid) => ({
    servername: "localhost",
    ca: f.bundle,
    key: svid.keyPem,
    cert: svid.chainPem,
  });

  /** A WebSocket through zt authenticated by `svid`: both ends and whether the client's is open. */
  const openWs = async (svid: Svid) => {
    const up = f.upstream!.nextSocket();
    const ws = new WebSocket(`wss://127.0.0.1:${f.port}/ws`, {
      headers: { host: HOST },
      ...tlsOf(svid),
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_q, res) => reject(new Error(`refused ${res.statusCode}`)));
    });
    let open = true;
    ws.once("close", () => (open = false));
    return { ws, upstream: await up, isOpen: () => open };
  };

  /** A streaming response through zt authenticated by `svid`, once its first event is in. */
  const openStream = (svid: Svid) =>
    new Promise<{ isOpen: () => boolean }>((resolve, reject) => {
      const req = https.get(
        {
          host: "127.0.0.1",
          port: f.port,
          path: "/stream",
          headers: { host: HOST },
          agent: false,
          ...tlsOf(svid),
        },
        (res) => {
          if (res.statusCode !== 200) return reject(new Error(`refused ${res.statusCode}`));
          let open = true;
          res.once("close", () => (open = false));
          res.on("error", () => undefined);
          res.once("data", () => resolve({ isOpen: () => open }));
        },
      );
      req.once("error", reject);
    });

  /** `session.cut` records of a workload's live connections (`svc:<spiffeId>`): reason, cause. */
  const cuts = async (spiffeId: string) => {
    await f.zt.ctx.audit.flush();
    const rows = await f.zt.ctx.store.db
      .selectFrom("audit_events")
      .select(["reason", "data", "subject"])
      .where("kind", "=", "session.cut")
      .orderBy("seq")
      .execute();
    return rows
      .map((r) => ({
        reason: r.reason,
        subject: r.subject,
        data: JSON.parse(String(r.data)) as Record<string, unknown>,
      }))
      .filter((r) => r.data["session_id"] === `svc:${spiffeId}`)
      .map((r) => ({ reason: r.reason, cause: r.data["cause"], subject: r.subject }));
  };

  return { f, openWs, openStream, cuts };
}

describe("mTLS connections at their client certificate's expiry (system clock, recheck_interval 1h)", () => {
  const { f, openWs, openStream, cuts } = mtlsFixture();
  /**
   * Issues from zt's CA as if 52 s ago: a minimum-lifetime SVID with about 8 s left
   * (time enough to connect on a busy machine).
   */
  let backdated: PkiService;
  const issue = (path: string): Promise<Svid> =>
    backdated.issueSvidWithNewKey({
      spiffeId: `spiffe://${TD}${path}`,
      ttlMs: MIN_TTL_MS,
      actor: "test",
    });

  beforeAll(async () => {
    const past: Clock = { now: () => Date.now() - (MIN_TTL_MS - 8_000) };
    backdated = await PkiService.open({ ...f.zt.ctx, clock: past });
  });
  afterAll(() => backdated?.close());

  it("cuts an mTLS WebSocket in use when its client certificate expires (cert-expired), without waiting for the periodic re-check", async () => {
    const svid = await issue("/ws-client");
    expect(svid.notAfterMs).toBeGreaterThan(Date.now());
    const c = await openWs(svid);
    // Frames keep flowing (an mTLS socket has no idle cut anyway) until zt cuts it.
    const chatter = setInterval(() => c.upstream.send("news"), 200);
    try {
      await relay(c.ws, c.upstream, "hello");
      await expect.poll(c.isOpen, WAIT).toBe(false);
    } finally {
      clearInterval(chatter);
    }
    const id = `spiffe://${TD}/ws-client`;
    await expect
      .poll(() => cuts(id), WAIT)
      .toEqual([{ reason: "cert-expired", cause: "deadline", subject: id }]);
    expect(f.zt.continuous.reevaluator.armedDeadlines()).toBe(0);
  });

  it("cuts an mTLS streaming response when its client certificate expires (cert-expired), without waiting for the periodic re-check", async () => {
    const svid = await issue("/stream-client");
    const stream = await openStream(svid);
    await expect.poll(stream.isOpen, WAIT).toBe(false);
    const id = `spiffe://${TD}/stream-client`;
    await expect
      .poll(() => cuts(id), WAIT)
      .toEqual([{ reason: "cert-expired", cause: "deadline", subject: id }]);
  });
});

describe("mTLS connections past their client certificate's expiry at the periodic pass (manual clock)", () => {
  // Set to the system time when the test starts (the first suite takes a while).
  const clock = new ManualClock(Date.now());
  const { f, openWs, cuts } = mtlsFixture(clock);

  it("cuts an mTLS WebSocket whose client certificate expired at the periodic pass (cert-expired), and keeps one still valid", async () => {
    clock.set(Date.now());
    const svc = await pkiService(f.zt.ctx);
    const id = (p: string) => `spiffe://${TD}${p}`;
    const short = await svc.issueSvidWithNewKey({
      spiffeId: id("/short"),
      ttlMs: MIN_TTL_MS,
      actor: "test",
    });
    const long = await svc.issueSvidWithNewKey({
      spiffeId: id("/long"),
      ttlMs: 10 * MIN_TTL_MS,
      actor: "test",
    });
    const a = await openWs(short);
    const b = await openWs(long);
    // Past the short SVID's notAfter on zt's clock (the timers armed on the system clock
    // are a minute away): only the periodic pass can see it. The event bus then reads
    // the store, as its poll would have meanwhile (else zt, out of contact for that long
    // by its clock, fails closed and cuts both).
    clock.set(short.notAfterMs + 1_000);
    await (f.zt.ctx.events as { catchUp?: () => Promise<void> }).catchUp?.();
    const result = await f.zt.continuous.tick();
    expect(result.closed).toBe(1);
    await expect.poll(a.isOpen, WAIT).toBe(false);
    expect(await cuts(id("/short"))).toEqual([
      { reason: "cert-expired", cause: "periodic", subject: id("/short") },
    ]);
    await relay(b.ws, b.upstream, "still here");
    expect(b.isOpen()).toBe(true);
    expect(await cuts(id("/long"))).toEqual([]);
  });
});
