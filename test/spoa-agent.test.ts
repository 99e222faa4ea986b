/**
 * zt's SPOE agent on a real socket, driven with hand-made SPOP frames for what HAProxy
 * itself never sends (garbage, a wrong first frame, oversized frames): the agent answers
 * AGENT-DISCONNECT with the SPOP status and hangs up, and keeps serving others. The
 * exchange with the real HAProxy is in forward-auth-proxies.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import net from "node:net";
import { FRAME, SPOP_STATUS, kvFrame, readKvList, splitFrames } from "../src/proxy/spop.js";
import { startPep, type PepFixture } from "./pep-fixture.js";

/** Sends bytes to the agent and collects the frames it answers until it closes. */
function exchange(port: number, bytes: Buffer) {
  return new Promise<{ type: number; kv: Record<string, unknown> }[]>((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(bytes));
    let got = Buffer.alloc(0);
    s.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
    s.on("error", () => undefined);
    s.on("close", () =>
      resolve(
        splitFrames(got, 1 << 20).frames.map((f) => ({
          type: f.type,
          kv: Object.fromEntries(readKvList(f.payload)),
        })),
      ),
    );
  });
}

describe("zt's SPOE agent", () => {
  let zt: PepFixture;
  let port: number;
  beforeAll(async () => {
    zt = await startPep({ policies: "permit (principal, action, resource);", routes: [] });
    port = (await zt.pep.listenSpoa("127.0.0.1", 0)).port;
  });
  afterAll(async () => {
    await zt?.close();
  });

  const hello = (kv: Record<string, string | number | boolean>) => kvFrame(FRAME.HAPROXY_HELLO, kv);

  it("hangs up on garbage, on a first frame that is not HAPROXY-HELLO and on oversized frames, saying why", async () => {
    const garbage = await exchange(port, Buffer.from([0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    expect(garbage).toEqual([
      {
        type: FRAME.AGENT_DISCONNECT,
        kv: expect.objectContaining({ "status-code": SPOP_STATUS.INVALID }),
      },
    ]);
    const notify = await exchange(port, kvFrame(FRAME.NOTIFY, {}));
    expect(notify[0]).toMatchObject({
      type: FRAME.AGENT_DISCONNECT,
      kv: { "status-code": SPOP_STATUS.INVALID },
    });
    const big = Buffer.alloc(8);
    big.writeUInt32BE(1_000_000, 0);
    const tooBig = await exchange(port, big);
    expect(tooBig[0]).toMatchObject({
      type: FRAME.AGENT_DISCONNECT,
      kv: { "status-code": SPOP_STATUS.TOO_BIG },
    });
    const oldVersion = await exchange(
      port,
      hello({ "supported-versions": "1.0", "max-frame-size": 16380, capabilities: "" }),
    );
    expect(oldVersion[0]).toMatchObject({ kv: { "status-code": SPOP_STATUS.BAD_VERSION } });
  });

  it("answers a health check with AGENT-HELLO (SPOP 2.0, the smaller frame size) and closes", async () => {
    const r = await exchange(
      port,
      hello({
        "supported-versions": "2.0",
        "max-frame-size": 4096,
        capabilities: "pipelining,async",
        healthcheck: true,
      }),
    );
    expect(r).toEqual([
      {
        type: FRAME.AGENT_HELLO,
        kv: { version: "2.0", "max-frame-size": 4096, capabilities: "pipelining" },
      },
    ]);
  });
});
