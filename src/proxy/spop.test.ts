import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  FRAME,
  SPOP_STATUS,
  SpopError,
  ackFrame,
  kvFrame,
  parseFrame,
  readKvList,
  readMessages,
  readSetVars,
  readVarint,
  splitFrames,
  writeVarint,
} from "./spop.js";

const varint = (n: number) => {
  const out: number[] = [];
  writeVarint(out, n);
  return Buffer.from(out);
};

describe("SPOP varint (HAProxy doc/SPOE.txt §3.1, peers encoding)", () => {
  it("uses the byte counts of the spec's table at each boundary", () => {
    // [value, bytes]: 0 ≤ X < 240: 1; < 2288: 2; < 264432: 3; < 33818864: 4; < 4328786160: 5.
    for (const [n, len] of [
      [0, 1],
      [239, 1],
      [240, 2],
      [2287, 2],
      [2288, 3],
      [264431, 3],
      [264432, 4],
      [33818863, 4],
      [33818864, 5],
      [4328786159, 5],
    ] as const) {
      expect(varint(n).length, String(n)).toBe(len);
      expect(readVarint(varint(n))).toBe(n);
    }
    // The first byte of a long form keeps its low bits: 300 → 0xFC 0x03 (252 + 3·16).
    expect([...varint(300)]).toEqual([0xfc, 0x03]);
  });

  it("round-trips every safe integer it is given (property)", () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        expect(readVarint(varint(n))).toBe(n);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("SPOP frames", () => {
  it("reads back the frames it writes: KV lists and set-var actions", () => {
    const hello = kvFrame(FRAME.AGENT_HELLO, {
      version: "2.0",
      "max-frame-size": 16380,
      healthcheck: true,
    });
    const { frames, rest } = splitFrames(Buffer.concat([hello, hello.subarray(0, 3)]), 16380);
    expect(rest.length).toBe(3);
    expect(frames).toHaveLength(1);
    expect(frames[0]).toMatchObject({ type: FRAME.AGENT_HELLO, streamId: 0, frameId: 0 });
    expect(Object.fromEntries(readKvList(frames[0]!.payload))).toEqual({
      version: "2.0",
      "max-frame-size": 16380,
      healthcheck: true,
    });
    const ack = parseFrame(ackFrame(7, 300, { status: 200, user: "alice" }).subarray(4));
    expect(ack).toMatchObject({ type: FRAME.ACK, streamId: 7, frameId: 300 });
  });

  it("reads a NOTIFY's messages with typed arguments (strings, integers, booleans, addresses)", () => {
    const str = (s: string) => [...varint(Buffer.byteLength(s)), ...Buffer.from(s)];
    const payload = Buffer.from([
      ...str("zt-authz"),
      4,
      ...str("method"),
      8,
      ...str("GET"),
      ...str("hosts"),
      3,
      ...varint(1),
      ...str("ssl"),
      0x11,
      ...str("src"),
      6,
      192,
      0,
      2,
      7,
    ]);
    const [m] = readMessages(payload);
    expect(m!.name).toBe("zt-authz");
    expect(Object.fromEntries(m!.args)).toEqual({
      method: "GET",
      hosts: 1,
      ssl: true,
      src: { ip: "192.0.2.7" },
    });
  });

  it("spells an IPv6 source as the HTTP path does (compressed; IPv4-mapped as ::ffff:a.b.c.d)", () => {
    // Bans and policies compare address text: "2001:db8:0:0:0:0:0:1" would miss a ban on
    // "2001:db8::1" that the HTTP path recorded.
    const str = (s: string) => [...varint(Buffer.byteLength(s)), ...Buffer.from(s)];
    const v6 = (hex: string) => [7, ...Buffer.from(hex, "hex")];
    const payload = Buffer.from([
      ...str("zt-authz"),
      2,
      ...str("a"),
      ...v6("20010db8000000000000000000000001"),
      ...str("b"),
      ...v6("00000000000000000000ffff01020304"),
    ]);
    const [m] = readMessages(payload);
    expect(Object.fromEntries(m!.args)).toEqual({
      a: { ip: "2001:db8::1" },
      b: { ip: "::ffff:1.2.3.4" },
    });
  });

  it("refuses malformed input with a SPOP status, never anything else (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const b = Buffer.from(bytes);
        for (const f of [
          () => splitFrames(b, 256),
          () => readMessages(b),
          () => readKvList(b),
          () => parseFrame(b),
        ]) {
          try {
            f();
          } catch (e) {
            expect(e).toBeInstanceOf(SpopError);
          }
        }
      }),
      { numRuns: 3000 },
    );
    // A declared length over the negotiated maximum is refused before it is buffered.
    const big = Buffer.alloc(8);
    big.writeUInt32BE(1_000_000, 0);
    expect(() => splitFrames(big, 16380)).toThrow(
      expect.objectContaining({ status: SPOP_STATUS.TOO_BIG }),
    );
    // Fragmented frames (FIN clear) are not supported: refused, not misread.
    const frag = Buffer.from([FRAME.NOTIFY, 0, 0, 0, 0, 1, 1]);
    expect(() => parseFrame(frag)).toThrow(
      expect.objectContaining({ status: SPOP_STATUS.FRAGMENTATION }),
    );
  });
});

/** A frame with its length prefix: `type`, 32-bit `flags`, stream and frame id, payload. */
function rawFrame(type: number, flags: number, sid: number, fid: number, payload: Buffer): Buffer {
  const head: number[] = [type, (flags >>> 24) & 255, (flags >>> 16) & 255, (flags >>> 8) & 255];
  head.push(flags & 255);
  writeVarint(head, sid);
  writeVarint(head, fid);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length + payload.length, 0);
  return Buffer.concat([len, Buffer.from(head), payload]);
}

const FIN = 1;
const ABORT = 2;

describe("SPOP fragmentation (doc/SPOE.txt §3.2, §3.2.3): refused, never reassembled", () => {
  // §3.2.3 "Notify / Ack exchange (fragmented payload)": NOTIFY (frag 1, FIN clear), then
  // UNSET (type 0) frames of the same STREAM-ID and FRAME-ID, the last with FIN set; and
  // "Aborted fragmentation": an UNSET frame with FIN and ABORT.
  const str = (s: string) => [...varint(Buffer.byteLength(s)), ...Buffer.from(s)];
  const message = Buffer.from([...str("zt-authz"), 1, ...str("url"), 8, ...str("/a")]);
  const spec = {
    "NOTIFY (frag 1)": rawFrame(FRAME.NOTIFY, 0, 5, 9, message.subarray(0, 6)),
    "UNSET (frag 2, the last)": rawFrame(0, FIN, 5, 9, message.subarray(6)),
    "UNSET (frag X, aborted)": rawFrame(0, FIN | ABORT, 5, 9, Buffer.alloc(0)),
  };

  it("refuses each frame of the spec's fragmented exchanges with status 10", () => {
    expect(() => splitFrames(spec["NOTIFY (frag 1)"], 16380)).toThrow(
      expect.objectContaining({ status: SPOP_STATUS.FRAGMENTATION }),
    );
    expect(() => splitFrames(spec["UNSET (frag X, aborted)"], 16380)).toThrow(
      expect.objectContaining({ status: SPOP_STATUS.FRAGMENTATION }),
    );
    // A NOTIFY with FIN and ABORT is not a whole frame either.
    expect(() => splitFrames(rawFrame(FRAME.NOTIFY, FIN | ABORT, 5, 9, message), 16380)).toThrow(
      expect.objectContaining({ status: SPOP_STATUS.FRAGMENTATION }),
    );
    // The whole payload in one NOTIFY with FIN set: the frame zt takes.
    const { frames } = splitFrames(rawFrame(FRAME.NOTIFY, FIN, 5, 9, message), 16380);
    expect(frames).toMatchObject([{ type: FRAME.NOTIFY, streamId: 5, frameId: 9 }]);
    expect(readMessages(frames[0]!.payload)[0]!.args.get("url")).toBe("/a");
  });

  it("never hands on the frames before a fragment, nor a fragment's last piece as a message", () => {
    // A fragmented exchange after a whole frame: the stream is refused at the fragment, so
    // the connection is dropped; no partial payload is ever decided on.
    const whole = rawFrame(FRAME.NOTIFY, FIN, 1, 1, message);
    expect(() =>
      splitFrames(
        Buffer.concat([whole, spec["NOTIFY (frag 1)"], spec["UNSET (frag 2, the last)"]]),
        16380,
      ),
    ).toThrow(expect.objectContaining({ status: SPOP_STATUS.FRAGMENTATION }));
    // An UNSET frame with FIN set alone (a last fragment without its first) has type 0: an
    // unknown frame type, which the agent skips (§3.2.2), never a NOTIFY.
    const { frames } = splitFrames(spec["UNSET (frag 2, the last)"], 16380);
    expect(frames[0]!.type).toBe(0);
  });

  it("takes a frame if and only if FIN is set and ABORT clear, whatever the other bits and ids (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(0, FRAME.HAPROXY_HELLO, FRAME.HAPROXY_DISCONNECT, FRAME.NOTIFY, 42),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.maxSafeNat(),
        fc.maxSafeNat(),
        fc.uint8Array({ maxLength: 64 }),
        (type, flags, sid, fid, payload) => {
          const bytes = rawFrame(type, flags, sid, fid, Buffer.from(payload));
          const whole = (flags & FIN) !== 0 && (flags & ABORT) === 0;
          if (whole) {
            const { frames, rest } = splitFrames(bytes, 1 << 20);
            expect(rest.length).toBe(0);
            expect(frames).toMatchObject([{ type, streamId: sid, frameId: fid }]);
            expect(frames[0]!.payload.equals(Buffer.from(payload))).toBe(true);
          } else
            expect(() => splitFrames(bytes, 1 << 20)).toThrow(
              expect.objectContaining({ status: SPOP_STATUS.FRAGMENTATION }),
            );
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("refuses a fragmented payload however the bytes arrive: split anywhere, never a frame out (property)", () => {
    const stream = Buffer.concat([spec["NOTIFY (frag 1)"], spec["UNSET (frag 2, the last)"]]);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: stream.length }), (cut) => {
        // As the agent reads: the first chunk, then the rest appended to what was left over.
        let rest: Buffer = Buffer.alloc(0);
        let refused = false;
        for (const chunk of [stream.subarray(0, cut), stream.subarray(cut)]) {
          try {
            const r = splitFrames(Buffer.concat([rest, chunk]), 16380);
            expect(r.frames).toEqual([]);
            rest = r.rest;
          } catch (e) {
            expect(e).toMatchObject({ status: SPOP_STATUS.FRAGMENTATION });
            refused = true;
            break;
          }
        }
        expect(refused).toBe(true);
      }),
    );
  });
});

describe("SPOP ACK set-var actions (§3.4)", () => {
  it("reads back the variables ackFrame writes (property)", () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.stringMatching(/^[a-z_]{1,12}$/),
          fc.oneof(fc.string({ maxLength: 300 }), fc.nat({ max: 2 ** 31 - 1 })),
        ),
        (vars) => {
          const f = parseFrame(ackFrame(3, 4, vars).subarray(4));
          expect(Object.fromEntries(readSetVars(f.payload))).toEqual(vars);
        },
      ),
    );
  });
});
