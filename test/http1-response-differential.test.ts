/**
 * Differential test of the hand-written upstream response parser (src/proxy/http1-response.ts).
 * The oracle is Node's own HTTP client parser (llhttp), fed over a real TCP socket by a server
 * that writes generated response bytes and closes. The property proves that ResponseParser,
 * fed the same bytes split at random points, is never more lenient than llhttp, reports the
 * same status, reason, headers and body whenever it accepts, and refuses what llhttp accepts
 * only for the documented strictness cases listed in ALLOWED_STRICTER.
 */
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ResponseParseError,
  ResponseParser,
  type ResponseHead,
} from "../src/proxy/http1-response.js";

/** The one risky change a case may carry (see `render`). */
const MUTATIONS = (
  "bare-lf bare-cr obs-fold space-before-colon cl-conflict cl-duplicate cl-and-te te-gzip-chunked " +
  "te-xchunked te-twice cl-plus cl-inner-space ctl-in-value nul-in-value chunk-0x chunk-long-size " +
  "chunk-missing-crlf bad-name-char proto-name te-http10"
).split(" ");

/** Where ours may refuse what llhttp accepts: each is a deliberate strictness of the parser. */
const ALLOWED_STRICTER: Record<string, string> = {
  // llhttp frames by the final coding only; coding lists are a classic smuggling vector.
  "te-gzip-chunked": "Transfer-Encoding must be exactly `chunked`",
  // llhttp reads an unknown coding until close; we refuse rather than guess the framing.
  "te-xchunked": "Transfer-Encoding must be exactly `chunked`",
  // llhttp takes a second `chunked` header; chunking twice is forbidden (RFC 9112 §7).
  "te-twice": "Transfer-Encoding must be exactly `chunked`, once",
  // llhttp takes any number of leading zeros; 13 hex digits keep every size exact in a double.
  "chunk-long-size": "chunk size is at most 13 hex digits",
  // A `__proto__` key would hit the plain headers object's prototype; llhttp keeps a raw list.
  "proto-name": "`__proto__` header name is refused",
  // llhttp de-chunks it; HTTP/1.0 has no transfer codings, so the framing is faulty (RFC 9112 §6.1).
  "te-http10": "Transfer-Encoding in an HTTP/1.0 response is refused",
};

const BODY_MUTATIONS = ["chunk-0x", "chunk-long-size", "chunk-missing-crlf"];
const CHUNKED_MUTATIONS = [
  ...BODY_MUTATIONS,
  "cl-and-te",
  "te-gzip-chunked",
  "te-xchunked",
  "te-twice",
  "te-http10",
];
const LENGTH_MUTATIONS = ["cl-conflict", "cl-duplicate", "cl-plus", "cl-inner-space"];

const NAMES = ["X-Trace", "x-trace", "X-TRACE", "Vary", "vary", "ETag", "Cache-Control"];
const ODD_NAMES = ["constructor", "Constructor", "toString", "X-Odd!#$%&'*+.^_`|~"];
const FRAMING_NAMES = new Set(["content-length", "transfer-encoding", "connection", "__proto__"]);
const headerName = fc
  .oneof(
    { weight: 6, arbitrary: fc.constantFrom(...NAMES) },
    { weight: 1, arbitrary: fc.constantFrom(...ODD_NAMES) },
    { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z][-!#$%&'*+.^_`|~0-9A-Za-z]{0,12}$/) },
  )
  .filter((n) => !FRAMING_NAMES.has(n.toLowerCase()));
const VALUE_CHARS = [...' aZ0\t=;,"/~\x80\xe9\xff'];
const headerValue = fc
  .array(fc.constantFrom(...VALUE_CHARS), { maxLength: 10 })
  .map((a) => a.join(""));
const ows = fc.constantFrom("", "", " ", "  ", "\t", " \t ");
const headerLine = fc
  .tuple(headerName, ows, headerValue, ows)
  .map(([n, a, v, b]) => `${n}:${a}${v}${b}`);

const chunk = fc.record({
  data: fc
    .uint8Array({ minLength: 1, maxLength: 40 })
    .map((u) => Buffer.from(u).toString("latin1")),
  zeros: fc.nat(3),
  upper: fc.boolean(),
  ext: fc.constantFrom("", "", "", ";a=b", ";a", ';q="x y"', ";a=b;c", " ;a=b", "; a=b"),
});

const caseArb = fc.record({
  minor: fc.constantFrom(1, 1, 1, 0),
  interim: fc.array(fc.constantFrom(100, 103), { maxLength: 2 }),
  status: fc.constantFrom(200, 200, 201, 204, 304, 404, 500),
  reason: fc.constantFrom(" OK", "", " ", " Not Found", " a b\tc", " \xe9t\xe9", " OK  "),
  headers: fc.array(headerLine, { maxLength: 8 }),
  setCookieTwice: fc.boolean(),
  framing: fc.constantFrom("length", "chunked", "close"),
  chunks: fc.array(chunk, { minLength: 1, maxLength: 5 }),
  trailers: fc.array(headerLine, { maxLength: 2 }),
  head: fc.constantFrom(false, false, false, true),
  mutation: fc.option(fc.constantFrom(...MUTATIONS), { freq: 2, nil: null }),
  pick: fc.nat(1000),
  cuts: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }),
});
type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

/** Serialises a case (and its mutation) to the bytes the server writes; `head`: a HEAD request. */
function render(c: Case): { bytes: Buffer; head: boolean } {
  const m = c.mutation;
  let { framing, status, head } = c;
  if (m && CHUNKED_MUTATIONS.includes(m)) framing = "chunked";
  if (m && LENGTH_MUTATIONS.includes(m)) framing = "length";
  if (m && BODY_MUTATIONS.includes(m)) [status, head] = [200, false];
  // HTTP/1.0 with Transfer-Encoding only as its own mutation (refused, unlike llhttp).
  const interim = m === "te-http10" ? [] : c.interim;
  const minor = m === "te-http10" ? 0 : interim.length > 0 || framing === "chunked" ? 1 : c.minor;
  const body = c.chunks.map((k) => k.data).join("");
  const headers = [...c.headers];
  if (c.setCookieTwice)
    headers.splice(c.pick % (headers.length + 1), 0, "Set-Cookie: a=1", "set-cookie: b=2; Path=/");
  const extra = (line: string) => headers.splice(c.pick % (headers.length + 1), 0, line);
  const te = { "te-gzip-chunked": "gzip, chunked", "te-xchunked": "xchunked" }[m ?? ""];
  const [teName, clName] =
    c.pick % 2 ? ["transfer-encoding", "content-length"] : ["Transfer-Encoding", "Content-Length"];
  if (framing === "chunked") extra(`${teName}: ${te ?? ["chunked", "Chunked"][c.pick % 2]}`);
  if (framing === "length") {
    const n = String(body.length);
    const cl = {
      "cl-plus": `+${n}`,
      "cl-inner-space": `${n.padStart(2, "0").slice(0, 1)} ${n.padStart(2, "0").slice(1)}`,
    }[m ?? ""];
    extra(`${clName}: ${cl ?? "0".repeat(c.pick % 3) + n}`);
  }
  const inValue = (ch: string) => {
    if (headers.length === 0) headers.push("X-Mut: ab");
    const i = c.pick % headers.length;
    const line = headers[i]!;
    const at = line.indexOf(":") + 1 + (c.pick % (line.length - line.indexOf(":")));
    headers[i] = line.slice(0, at) + ch + line.slice(at);
  };
  if (m === "cl-conflict") extra(`Content-Length: ${body.length + 1 + (c.pick % 5)}`);
  if (m === "cl-duplicate") extra(`Content-Length: ${body.length}`);
  if (m === "cl-and-te") extra(`Content-Length: ${body.length}`);
  if (m === "te-twice") extra("Transfer-Encoding: chunked");
  if (m === "bare-cr") inValue("\r");
  if (m === "ctl-in-value") inValue(["\x01", "\x7f", "\x1b"][c.pick % 3]!);
  if (m === "nul-in-value") inValue("\x00");
  if (m === "bad-name-char")
    extra(`X${["@", "(", " ", "/", '"', "\xe9", "{", "="][c.pick % 8]}a: b`);
  if (m === "proto-name") extra(["__proto__: x", "__PROTO__: {}"][c.pick % 2]!);
  if (m === "obs-fold")
    headers.splice(c.pick % (headers.length + 1), 0, ["  folded", "\tx"][c.pick % 2]!);
  if (m === "space-before-colon") {
    if (headers.length === 0) headers.push("X-Sp: v");
    const i = c.pick % headers.length;
    headers[i] = headers[i]!.replace(":", [" :", "\t:"][c.pick % 2]!);
  }

  // Segments; `eols` indexes the CRLFs a bare-LF mutation may replace.
  const seg: string[] = [];
  const eols: number[] = [];
  const line = (s: string) => (seg.push(s), eols.push(seg.length), seg.push("\r\n"));
  for (const s of interim) {
    line(`HTTP/1.1 ${s} ${s === 100 ? "Continue" : "Early Hints"}`);
    if (s === 103) line("Link: </s.css>; rel=preload");
    line("");
  }
  line(`HTTP/1.${minor} ${status}${c.reason}`);
  headers.forEach(line);
  line("");
  if (!head && status !== 204 && status !== 304) {
    if (framing !== "chunked") seg.push(body);
    else {
      c.chunks.forEach((k, i) => {
        let size = k.data.length.toString(16);
        size = "0".repeat(k.zeros) + (k.upper ? size.toUpperCase() : size);
        if (i === 0 && m === "chunk-0x") size = `0x${size}`;
        if (i === 0 && m === "chunk-long-size") size = size.padStart(14 + (c.pick % 3), "0");
        line(size + k.ext);
        seg.push(k.data);
        if (m === "chunk-missing-crlf" && i === c.pick % c.chunks.length) return;
        eols.push(seg.length);
        seg.push("\r\n");
      });
      line(`0${c.chunks[0]!.ext}`);
      c.trailers.forEach(line);
      line("");
    }
  }
  if (m === "bare-lf") seg[eols[c.pick % eols.length]!] = "\n";
  return { bytes: Buffer.from(seg.join(""), "latin1"), head };
}

type Outcome =
  | { ok: true; status: number; reason: string; headers: [string, string[]][]; body: string }
  | { ok: false; why: string };

/** The subject: the bytes fed to ResponseParser in pieces, then the connection closes. */
function viaOurs(bytes: Buffer, isHead: boolean, cuts: number[]): Outcome {
  const parser = new ResponseParser();
  let result: Outcome | undefined;
  const body: Buffer[] = [];
  let ended = false;
  parser.begin(
    {
      onHead: (h) => {
        const headers = Object.entries(h.headers).map(([k, v]): [string, string[]] => [
          k,
          typeof v === "string" ? [v] : [...v],
        ]);
        result = { ok: true, status: h.status, reason: h.reason, headers, body: "" };
      },
      onData: (c) => body.push(Buffer.from(c)),
      onEnd: () => (ended = true),
    },
    isHead,
  );
  const at = [0, ...cuts.map((n) => n % (bytes.length + 1)).sort((a, b) => a - b), bytes.length];
  try {
    for (let i = 1; i < at.length; i++) parser.execute(bytes.subarray(at[i - 1], at[i]));
    if (parser.untilClose) parser.finishAtClose();
  } catch (e) {
    if (e instanceof ResponseParseError) return { ok: false, why: e.message };
    throw e;
  }
  if (!ended || !result?.ok) return { ok: false, why: "incomplete at close" };
  return { ...result, body: Buffer.concat(body).toString("latin1") };
}

let server: net.Server;
let port = 0;
let seq = 0;
const pending = new Map<string, Buffer>();

/** The oracle: Node's HTTP client reads the bytes from a real socket. */
function viaLlhttp(bytes: Buffer, isHead: boolean): Promise<Outcome> {
  const id = String(++seq);
  pending.set(id, bytes);
  return new Promise((resolve) => {
    let error: string | undefined;
    let result: Outcome | undefined;
    let open = 1; // the request, then the response: settles once both have closed
    const settle = () => {
      if (--open > 0) return;
      clearTimeout(timer);
      pending.delete(id);
      setImmediate(() =>
        resolve(result && !error ? result : { ok: false, why: error ?? "no end" }),
      );
    };
    const timer = setTimeout(() => ((error ??= "timeout"), req.destroy()), 3000);
    const method = isHead ? "HEAD" : "GET";
    const req = http.request({ host: "127.0.0.1", port, agent: false, method, path: `/${id}` });
    req.on("error", (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
    req.on("response", (res) => {
      open++;
      const body: Buffer[] = [];
      const grouped = new Map<string, string[]>();
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        const name = res.rawHeaders[i]!.toLowerCase();
        grouped.set(name, [...(grouped.get(name) ?? []), res.rawHeaders[i + 1]!]);
      }
      res.on("data", (c: Buffer) => body.push(c));
      res.on("aborted", () => (error ??= "aborted"));
      res.on("error", (e) => (error ??= e.message));
      res.on("end", () => {
        if (!res.complete) return;
        const [status, reason] = [res.statusCode ?? 0, res.statusMessage ?? ""];
        const b = Buffer.concat(body).toString("latin1");
        result = { ok: true, status, reason, headers: [...grouped], body: b };
      });
      res.on("close", settle);
    });
    req.on("close", settle);
    req.end();
  });
}

describe("http1-response parser vs Node's llhttp", () => {
  beforeAll(async () => {
    server = net.createServer((sock) => {
      sock.on("error", () => {});
      let got = "";
      const onData = (d: Buffer) => {
        got += d.toString("latin1");
        if (!got.includes("\r\n\r\n")) return;
        sock.off("data", onData);
        sock.resume();
        sock.end(pending.get(/^\w+ \/(\d+) /.exec(got)?.[1] ?? "") ?? Buffer.alloc(0));
      };
      sock.on("data", onData);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("agrees with Node's llhttp on generated responses: never more lenient, identical when both accept", async () => {
    const stricter = new Set<string>();
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const { bytes, head } = render(c);
        const node = await viaLlhttp(bytes, head);
        const ours = viaOurs(bytes, head, c.cuts);
        const shown = JSON.stringify(bytes.toString("latin1"));
        // Fed one byte at a time, the same verdict (the reason may differ: a bare LF is
        // refused as it arrives, before the line it breaks is read).
        const bytewise = viaOurs(bytes, head, [...bytes.keys()]);
        expect(bytewise.ok ? bytewise : false, `split byte by byte: ${shown}`).toEqual(
          ours.ok ? ours : false,
        );
        if (ours.ok) {
          expect(node, `ours accepted what llhttp refused: ${shown}`).toMatchObject({ ok: true });
          expect(ours, `ours and llhttp disagree on ${shown}`).toEqual(node);
        } else if (node.ok) {
          const kind = c.mutation ?? "no mutation";
          expect(Object.keys(ALLOWED_STRICTER), `ours refused (${ours.why}): ${shown}`).toContain(
            kind,
          );
          stricter.add(kind);
        }
      }),
      { numRuns: Number(process.env.ZT_DIFF_RUNS ?? 300) },
    );
    expect([...stricter].filter((k) => !(k in ALLOWED_STRICTER))).toEqual([]);
  });
});

const latin1 = (s: string) => Buffer.from(s, "latin1");

/** Bytes copied into new buffers by Buffer.from and Buffer.concat while `fn` runs. */
function bytesCopied(fn: () => void): number {
  const { concat, from } = Buffer;
  let n = 0;
  const count = <B extends Buffer>(b: B): B => ((n += b.length), b);
  Buffer.concat = (...a: Parameters<typeof concat>) => count(concat.apply(Buffer, a));
  Buffer.from = ((...a: unknown[]) =>
    count((from as (...x: unknown[]) => Buffer).apply(Buffer, a))) as typeof from;
  try {
    fn();
  } finally {
    Buffer.concat = concat;
    Buffer.from = from;
  }
  return n;
}

describe("http1-response parser, fixed cases", () => {
  it("parses a response fed one byte per execute exactly as in one piece", () => {
    const bytes = latin1(
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\n" +
        "set-cookie:  b=2 \r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n" +
        "A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
    );
    const whole = viaOurs(bytes, false, []);
    expect(whole).toMatchObject({ ok: true, status: 200, body: "hello0123456789" });
    expect(viaOurs(bytes, false, [...bytes.keys()])).toEqual(whole);
  });

  // An upstream that dribbles its head must not make each read copy and rescan all the
  // bytes before it (quadratic: ~2 GB copied for this head); counted, not timed.
  it("parses a 60 KiB head fed one byte per execute as in one piece, copying it a bounded number of times", () => {
    let text = "HTTP/1.1 200 OK\r\n";
    for (let i = 0; text.length < 60 * 1024; i++) text += `X-H${i}: ${"v".repeat(40)}\r\n`;
    const bytes = latin1(`${text}Content-Length: 2\r\n\r\nhi`);
    const whole = viaOurs(bytes, false, []);
    expect(whole).toMatchObject({ ok: true, status: 200, body: "hi" });
    let bytewise: Outcome | undefined;
    const copied = bytesCopied(() => (bytewise = viaOurs(bytes, false, [...bytes.keys()])));
    expect(bytewise).toEqual(whole);
    expect(copied).toBeLessThan(4 * bytes.length);
  });

  it.each(["", "Connection: keep-alive\r\n"])(
    "refuses Transfer-Encoding in an HTTP/1.0 response (%j)",
    (extra) => {
      const bytes = latin1(
        `HTTP/1.0 200 OK\r\n${extra}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n`,
      );
      expect(viaOurs(bytes, false, [])).toMatchObject({ ok: false });
      expect(
        viaOurs(latin1(bytes.toString("latin1").replace("1.0", "1.1")), false, []),
      ).toMatchObject({ ok: true, body: "hi" });
    },
  );

  // [answer, reusable after it, HEAD request]: a 204 declaring a body or a 304 declaring a
  // chunked one may be followed by those bytes in a later read; the connection is not reused.
  it.each([
    ["204 No Content\r\nContent-Length: 5", false, false],
    ["204 No Content\r\nTransfer-Encoding: chunked", false, false],
    ["304 Not Modified\r\nTransfer-Encoding: chunked", false, false],
    ["304 Not Modified\r\nContent-Length: 5", true, false],
    ["204 No Content\r\nContent-Length: 0", true, false],
    ["204 No Content\r\nContent-Length: 5", true, true],
  ])("ends %j at its head; reusable: %s (HEAD request: %s)", (answer, reusable, isHead) => {
    const parser = new ResponseParser();
    const seen: string[] = [];
    const sink = {
      onHead: (h: ResponseHead) => seen.push(`head ${h.keepAlive}`),
      onData: () => seen.push("data"),
      onEnd: () => seen.push("end"),
    };
    parser.begin(sink, isHead);
    parser.execute(latin1(`HTTP/1.1 ${answer}\r\n\r\n`));
    expect(seen).toEqual([`head ${reusable}`, "end"]);
    expect([parser.busy, parser.reusable]).toEqual([false, reusable]);
  });

  it("refuses a second response glued after a complete one (desync)", () => {
    const one = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    expect(viaOurs(latin1(one), false, [])).toMatchObject({ ok: true, body: "hi" });
    const parser = new ResponseParser();
    parser.begin({ onHead: () => {}, onData: () => {}, onEnd: () => {} }, false);
    expect(() => parser.execute(latin1(one + one))).toThrow(ResponseParseError);
  });

  it("ends a HEAD answer with Content-Length: 5 at its head, without a body", () => {
    const parser = new ResponseParser();
    const seen: string[] = [];
    const sink = {
      onHead: () => seen.push("head"),
      onData: () => seen.push("data"),
      onEnd: () => seen.push("end"),
    };
    parser.begin(sink, true);
    parser.execute(latin1("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"));
    expect(seen).toEqual(["head", "end"]);
    expect([parser.busy, parser.untilClose, parser.reusable]).toEqual([false, false, true]);
  });
});

// Cases the property above once found where ours differed from llhttp (now fixed), pinned.
describe("http1-response parser, former disagreements with llhttp", () => {
  // Lower-cased, only `constructor` (and the refused `__proto__`) is an Object.prototype member.
  it.each(["constructor", "Constructor"])(
    "keeps a header named %s as llhttp does (it once threw a TypeError)",
    (name) => {
      const bytes = latin1(`HTTP/1.1 200 OK\r\n${name}: x\r\nContent-Length: 0\r\n\r\n`);
      const headers = [
        [name.toLowerCase(), ["x"]],
        ["content-length", ["0"]],
      ];
      expect(viaOurs(bytes, false, [])).toMatchObject({ ok: true, headers });
    },
  );

  it("refuses a repeated identical Content-Length, as llhttp does", () => {
    const bytes = latin1("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
    expect(viaOurs(bytes, false, [])).toMatchObject({ ok: false });
  });

  it.each([" ;a=b", "; a=b", ";@@"])("refuses the chunk extension %j, as llhttp does", (ext) => {
    const bytes = latin1(
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1${ext}\r\nx\r\n0\r\n\r\n`,
    );
    expect(viaOurs(bytes, false, [])).toMatchObject({ ok: false });
  });
});

describe("http1-response parser, refusing early", () => {
  it("refuses a head whose end a bare LF replaced at once, without waiting for more bytes", () => {
    const parser = new ResponseParser();
    parser.begin({ onHead() {}, onData() {}, onEnd() {} }, false);
    expect(() =>
      parser.execute(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\nx", "latin1")),
    ).toThrow(ResponseParseError);
  });
});
