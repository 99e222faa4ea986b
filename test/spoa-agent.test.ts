/**
 * zt's SPOE agent on a real socket, driven with hand-made SPOP frames for what HAProxy
 * itself never sends (garbage, a wrong first frame, oversized frames: the agent answers
 * AGENT-DISCONNECT with the SPOP status and hangs up, and keeps serving others), for the
 * frame size it agrees to, for fragments (refused), and for the session cookie HAProxy
 * counted. The exchange with the real HAProxy is in forward-auth-proxies.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import net from "node:net";
import {
  FRAME,
  SPOP_STATUS,
  kvFrame,
  readKvList,
  readSetVars,
  splitFrames,
  writeVarint,
} from "../src/proxy/spop.js";
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

type Arg = string | number | { ipv4: string } | null;

/** A NOTIFY frame (§3.2.6) of one message, as HAProxy writes it; `flags` 1 is FIN alone. */
function notify(streamId: number, frameId: number, args: Record<string, Arg>, flags = 1): Buffer {
  const body: number[] = [];
  const str = (s: string) => {
    const b = Buffer.from(s);
    writeVarint(body, b.length);
    body.push(...b);
  };
  str("zt-authz");
  body.push(Object.keys(args).length);
  for (const [k, v] of Object.entries(args)) {
    str(k);
    if (v === null) body.push(0);
    else if (typeof v === "number") {
      body.push(4); // INT64, as HAProxy sends req.cook_cnt and req.hdr_cnt
      writeVarint(body, v);
    } else if (typeof v === "string") {
      body.push(8);
      str(v);
    } else body.push(6, ...v.ipv4.split(".").map(Number));
  }
  const head = [FRAME.NOTIFY, (flags >>> 24) & 255, (flags >>> 16) & 255, (flags >>> 8) & 255];
  head.push(flags & 255);
  writeVarint(head, streamId);
  writeVarint(head, frameId);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length + body.length, 0);
  return Buffer.concat([len, Buffer.from(head), Buffer.from(body)]);
}

/**
 * Sends the first chunk, each next one once a frame has come back (the handshake first, as
 * HAProxy does), and collects the frames answered until `n` have come or the agent closes.
 */
function frames(port: number, chunks: Buffer[], n: number) {
  return new Promise<{ type: number; streamId: number; payload: Buffer }[]>((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(chunks[0]!));
    let got = Buffer.alloc(0);
    let seen = 0;
    const done = () => {
      s.destroy();
      resolve(splitFrames(got, 1 << 20).frames);
    };
    s.on("data", (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const count = splitFrames(got, 1 << 20).frames.length;
      if (count >= n) return done();
      for (; seen < count; seen++) if (chunks[seen + 1]) s.write(chunks[seen + 1]!);
    });
    s.on("error", () => undefined);
    s.on("close", done);
  });
}

describe("zt's SPOE agent", () => {
  let zt: PepFixture;
  let port: number;
  beforeAll(async () => {
    zt = await startPep({
      policies: "permit (principal, action, resource);",
      routes: [{ name: "app", from: "http://app.localhost", to: "http://127.0.0.1:9" }],
    });
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

  const open = hello({
    "supported-versions": "2.0",
    "max-frame-size": 16380,
    capabilities: "pipelining,async,fragmentation",
  });

  it("takes frames as large as HAProxy's up to 1 MiB, and never announces fragmentation", async () => {
    for (const [theirs, ours] of [
      [4096, 4096],
      [65532, 65532],
      [4 * 1024 * 1024 - 4, 1_048_572],
    ] as const) {
      const [h] = await frames(
        port,
        [
          hello({
            "supported-versions": "2.0",
            "max-frame-size": theirs,
            capabilities: "pipelining,async,fragmentation",
          }),
        ],
        1,
      );
      expect(h!.type).toBe(FRAME.AGENT_HELLO);
      expect(Object.fromEntries(readKvList(h!.payload))).toEqual({
        version: "2.0",
        "max-frame-size": ours,
        capabilities: "pipelining",
      });
    }
  });

  it("hangs up on a fragmented NOTIFY (status 10) without answering it: HAProxy then refuses the request", async () => {
    const args = {
      method: "GET",
      url: "/",
      host: "app.localhost",
      hosts: 1,
      src: { ipv4: "127.0.0.1" },
    };
    for (const flags of [0, 3]) {
      const r = await frames(port, [open, notify(1, 1, args, flags)], 3);
      expect(
        r.map((f) => f.type),
        `flags ${flags}`,
      ).toEqual([FRAME.AGENT_HELLO, FRAME.AGENT_DISCONNECT]);
      expect(readKvList(r[1]!.payload).get("status-code")).toBe(SPOP_STATUS.FRAGMENTATION);
    }
  });

  describe("the session cookie HAProxy counted (session, sessions)", () => {
    const base = {
      method: "GET",
      url: "/",
      host: "app.localhost",
      hosts: 1,
      ssl: null,
      src: { ipv4: "127.0.0.1" },
      authorization: null,
      authorizations: 0,
      accept: "application/json",
    };
    const answer = async (args: Record<string, Arg>) => {
      const r = await frames(port, [open, notify(7, 1, args)], 2);
      expect(r.map((f) => f.type)).toEqual([FRAME.AGENT_HELLO, FRAME.ACK]);
      return Object.fromEntries(readSetVars(r[1]!.payload));
    };

    it("decides on the one session cookie HAProxy found", async () => {
      await zt.addUser("alice", ["eng"]);
      const { token } = await zt.session("alice");
      expect(await answer({ ...base, session: token, sessions: 1 })).toMatchObject({
        status: 200,
        user: "alice",
      });
      expect(await answer({ ...base, session: null, sessions: 0 })).toMatchObject({
        status: 401,
      });
    });

    it("refuses two session cookies, whichever one is valid (session-cookie-duplicate)", async () => {
      const { token } = await zt.session("alice");
      expect(await answer({ ...base, session: token, sessions: 2 })).toMatchObject({
        status: 403,
        reason: "session-cookie-duplicate",
      });
    });

    it("refuses a request with two Authorization headers HAProxy counted, even with one valid session (authorization-duplicate)", async () => {
      const { token } = await zt.session("alice");
      const bearer = `Bearer ${token}`;
      const none = { session: null, sessions: 0 };
      expect(
        await answer({ ...base, ...none, authorization: bearer, authorizations: 1 }),
      ).toMatchObject({
        status: 200,
        user: "alice",
      });
      for (const args of [
        { authorization: bearer, authorizations: 2 },
        { authorization: "Basic eDp5", authorizations: 2, session: token, sessions: 1 },
      ]) {
        const vars = await answer({ ...base, ...none, ...args });
        expect(vars, JSON.stringify(args)).toMatchObject({
          status: 403,
          reason: "authorization-duplicate",
        });
        expect(String(vars["decision_id"])).toMatch(/^dec_/);
      }
    });

    it("refuses the message of a zt-spoe.conf written before: no count of Authorization headers", async () => {
      const { token } = await zt.session("alice");
      const { authorizations: _, ...old } = base;
      const vars = await answer({ ...old, session: token, sessions: 1 });
      expect(vars).toMatchObject({ status: 400, reason: "forwarded-missing" });
      expect(String(vars["body"])).toContain("regenerate zt-spoe.conf");
    });

    it("refuses the message of a zt-spoe.conf written before: a Cookie header, no count", async () => {
      const { cookie } = await zt.session("alice");
      const vars = await answer({ ...base, cookie });
      expect(vars).toMatchObject({ status: 400 });
      expect(String(vars["body"])).toContain("regenerate zt-spoe.conf");
    });
  });
});
