/**
 * A strict, incremental HTTP/1.1 *response* parser for the PEP's upstream connections
 * (RFC 9112). It is on the hot path of every proxied request, written by hand because
 * undici's client cost 1.4× the CPU per upstream request (`bench:pep` case (u),
 * docs/pep.md); `test/http1-response-differential.test.ts` checks it against Node's
 * own parser (llhttp) on generated responses.
 *
 * Strict where leniency has caused response splitting and desync in other proxies:
 *  - lines end in CRLF; a bare CR or LF, obs-fold, or whitespace before a colon is refused;
 *  - header names are tokens; values hold no control characters (what Node refuses to send);
 *  - Content-Length is digits only and appears once; with Transfer-Encoding it is refused;
 *  - Transfer-Encoding must be exactly `chunked`;
 *  - chunk sizes are at most 13 hex digits; chunk extensions are `;name[=value]` without
 *    whitespace (as Node requires); every chunk ends in CRLF; trailers are bounded;
 *  - 1xx answers (but 101) are skipped; 101 is refused (upgrades take another path);
 *  - Transfer-Encoding in an HTTP/1.0 answer is refused (RFC 9112 §6.1);
 *  - HEAD, 204 and 304 answers have no body, whatever they declare; a 204 declaring one
 *    (or a 304 declaring a chunked one) closes the connection after it;
 *  - a header named `__proto__` is refused (callers copy names into plain objects).
 * Anything refused is a {@link ResponseParseError}: the connection is not used again.
 */

/** Largest response head (status line + headers), and separately largest trailer section. */
export const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;
/** Largest chunk-size line (size + extensions). */
const MAX_CHUNK_LINE = 4 * 1024;

export type ResponseHeaders = Record<string, string | string[]>;

export interface ResponseHead {
  status: number;
  reason: string;
  /** Lower-case names; repeated headers become arrays (Set-Cookie), in order. */
  headers: ResponseHeaders;
  /** The server lets this connection carry another request after this response. */
  keepAlive: boolean;
}

export interface ResponseSink {
  onHead(head: ResponseHead): void;
  /** A piece of the (de-chunked) body: a view of the input, valid until the sink returns. */
  onData(chunk: Buffer): void;
  /** The response is complete (not called for a body that runs until the connection closes: see `finishAtClose`). */
  onEnd(): void;
}

export class ResponseParseError extends Error {
  readonly code = "ZT_UPSTREAM_PROTOCOL";
}

const enum State {
  Idle,
  Head,
  Length,
  ChunkLine,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What Node's own `checkInvalidHeaderChar` refuses, so a relayed value never throws there. */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const HEAD_END = Buffer.from("\r\n\r\n", "latin1");
const CRLF = Buffer.from("\r\n", "latin1");
/** Pending bytes a terminator (at most HEAD_END) may have begun in: all of it but its last byte. */
const TAIL = HEAD_END.length - 1;
/** Chunk size, then extensions `;name[=token|"quoted"]` without whitespace (RFC 9112 §7.1.1; what Node accepts). */
const CHUNK_LINE =
  /^([0-9A-Fa-f]{1,13})(?:;[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*$/;

function fail(message: string): never {
  throw new ResponseParseError(`upstream response refused: ${message}`);
}

/**
 * One parser per upstream connection. `begin(isHead)` before each request's response,
 * then `execute` with every piece the socket reads. Throws {@link ResponseParseError}.
 */
export class ResponseParser {
  #state = State.Idle;
  #sink: ResponseSink | undefined;
  #isHead = false;
  /** Head or chunk-line bytes not yet terminated (rare: most heads arrive in one read), in pieces as read. */
  #pieces: Buffer[] = [];
  #pendingLength = 0;
  /** The last pending bytes, enough to find a terminator begun in them (see `#collect`). */
  readonly #tail = Buffer.alloc(TAIL);
  #remaining = 0;
  #trailerBytes = 0;
  #keepAlive = false;
  /** Bytes of this response seen so far (0: nothing arrived, the request may be retried). */
  bytesSeen = 0;

  /** Expects the response to a new request (HEAD: no body, whatever the headers say). */
  begin(sink: ResponseSink, isHead: boolean): void {
    if (this.#state !== State.Idle && this.#state !== State.Done)
      throw new Error("ResponseParser.begin while a response is in progress");
    this.#sink = sink;
    this.#isHead = isHead;
    this.#state = State.Head;
    this.#pieces = [];
    this.#pendingLength = 0;
    this.bytesSeen = 0;
  }

  /** The response is complete and the connection may carry another request. */
  get reusable(): boolean {
    return this.#state === State.Done && this.#keepAlive;
  }

  /** A response is expected or under way. */
  get busy(): boolean {
    return this.#state !== State.Idle && this.#state !== State.Done;
  }

  /** The body runs until the connection closes (no Content-Length, not chunked). */
  get untilClose(): boolean {
    return this.#state === State.UntilClose;
  }

  /** The connection closed: completes a close-delimited body; false if the response was cut short. */
  finishAtClose(): boolean {
    if (this.#state !== State.UntilClose) return false;
    this.#state = State.Done;
    this.#keepAlive = false;
    this.#sink!.onEnd();
    return true;
  }

  /** Feeds bytes read from the connection. Bytes after a complete response are refused. */
  execute(buf: Buffer): void {
    this.bytesSeen += buf.length;
    let at = 0;
    const end = buf.length;
    while (at < end) {
      switch (this.#state) {
        case State.Head:
          at = this.#head(buf, at);
          break;
        case State.Length: {
          const chunk = this.#take(buf, at);
          at += chunk.length;
          if (this.#remaining === 0) this.#state = State.Done;
          this.#sink!.onData(chunk);
          if (this.#state === State.Done) this.#sink!.onEnd();
          break;
        }
        case State.ChunkLine:
          at = this.#chunkLine(buf, at);
          break;
        case State.ChunkData: {
          const chunk = this.#take(buf, at);
          at += chunk.length;
          if (this.#remaining === 0) {
            this.#state = State.ChunkDataEnd;
            this.#remaining = 2;
          }
          this.#sink!.onData(chunk);
          break;
        }
        case State.ChunkDataEnd:
          // CR then LF, possibly split across reads.
          if (buf[at] !== (this.#remaining === 2 ? 0x0d : 0x0a))
            fail("chunk data not followed by CRLF");
          at++;
          if (--this.#remaining === 0) this.#state = State.ChunkLine;
          break;
        case State.Trailers:
          at = this.#trailers(buf, at);
          break;
        case State.UntilClose: {
          const chunk = at === 0 ? buf : buf.subarray(at);
          at = end;
          this.#sink!.onData(chunk);
          break;
        }
        default:
          // Idle or Done: nothing was asked, or the answer is complete. Bytes now would be
          // taken for the next request's response (desync): the connection is refused.
          fail("bytes after the end of the response");
      }
    }
  }

  /** Up to `#remaining` body bytes from `at` (the whole buffer when it is exactly that). */
  #take(buf: Buffer, at: number): Buffer {
    const n = Math.min(this.#remaining, buf.length - at);
    this.#remaining -= n;
    return at === 0 && n === buf.length ? buf : buf.subarray(at, at + n);
  }

  /**
   * Collects a CRLF-terminated block ending at `terminator`; returns [text, next] or undefined.
   *
   * Linear in the bytes fed however they are split: an upstream that sends its head a byte
   * at a time must not make each read copy and rescan everything before it. Each read is
   * searched only where the terminator could newly appear (across the boundary with the
   * pending bytes, then in the new piece), checked for bare LFs only in the new piece,
   * and the pieces are joined once, when the terminator is found.
   */
  #collect(
    buf: Buffer,
    at: number,
    terminator: Buffer,
    limit: number,
    what: string,
  ): [string, number] | undefined {
    const pending = this.#pendingLength;
    const t = terminator.length;
    let found = -1; // offset of the terminator from the start of the block
    if (pending === 0) {
      const i = buf.indexOf(terminator, at);
      if (i >= 0) {
        if (i - at > limit) fail(`${what} larger than ${limit} bytes`);
        return [buf.toString("latin1", at, i), i + t];
      }
    } else {
      // A terminator begun in the pending bytes and ended in this piece: k of its bytes
      // pending, most first (that one starts earliest). None lies wholly in the pending
      // bytes: they were searched as they arrived.
      const tail = this.#tail;
      for (let k = Math.min(t - 1, pending); k >= 1 && found < 0; k--) {
        if (at + t - k > buf.length) continue;
        let match = true;
        for (let j = 0; j < k && match; j++) match = terminator[j] === tail[TAIL - k + j];
        for (let j = k; j < t && match; j++) match = terminator[j] === buf[at + j - k];
        if (match) found = pending - k;
      }
      if (found < 0) {
        const i = buf.indexOf(terminator, at);
        if (i >= 0) found = pending + i - at;
      }
    }
    if (found < 0) {
      if (pending + buf.length - at > limit) fail(`${what} larger than ${limit} bytes`);
      // A bare LF can never complete a CRLF terminator: refuse it now, not at the limit.
      // Only this piece is new; the byte before its first is the last pending one.
      for (let lf = buf.indexOf(0x0a, at); lf >= 0; lf = buf.indexOf(0x0a, lf + 1)) {
        const before = lf > at ? buf[lf - 1] : pending > 0 ? this.#tail[TAIL - 1] : -1;
        if (before !== 0x0d) fail(`bare LF in the ${what}`);
      }
      this.#keep(buf, at);
      return undefined;
    }
    if (found > limit) fail(`${what} larger than ${limit} bytes`);
    // Joined once: the pending pieces and this piece up to the terminator.
    this.#pieces.push(buf.subarray(at));
    const text = Buffer.concat(this.#pieces, found).toString("latin1");
    this.#pieces = [];
    this.#pendingLength = 0;
    return [text, at + found + t - pending];
  }

  /** Keeps `buf` from `at` (copied: the caller may reuse its buffer) as pending bytes. */
  #keep(buf: Buffer, at: number): void {
    const piece = Buffer.from(buf.subarray(at));
    this.#pieces.push(piece);
    this.#pendingLength += piece.length;
    // The last TAIL pending bytes, right-aligned (valid up to #pendingLength of them).
    const tail = this.#tail;
    const n = piece.length;
    if (n >= TAIL) piece.copy(tail, 0, n - TAIL);
    else {
      tail.copyWithin(0, n);
      piece.copy(tail, TAIL - n);
    }
  }

  #head(buf: Buffer, at: number): number {
    const got = this.#collect(buf, at, HEAD_END, MAX_RESPONSE_HEAD_BYTES, "response head");
    if (!got) return buf.length;
    const [text, next] = got;
    let eol = text.indexOf("\r\n");
    if (eol < 0) eol = text.length;
    const m = STATUS_LINE.exec(eol === text.length ? text : text.slice(0, eol));
    if (!m) fail("malformed status line");
    const minor = m[1]!;
    const status = Number(m[2]);
    // No prototype: a header named `constructor` or `toString` is just a header.
    // (`__proto__` is still refused below: callers copy these names into plain objects.)
    const headers = Object.create(null) as ResponseHeaders;
    let contentLength = -1;
    let chunked = false;
    let hasTe = false;
    let close = minor === "0";
    while (eol < text.length) {
      const from = eol + 2;
      eol = text.indexOf("\r\n", from);
      if (eol < 0) eol = text.length;
      const colon = text.indexOf(":", from);
      if (colon <= from || colon > eol) {
        const c = text.charCodeAt(from);
        fail(
          from === eol || c === 32 || c === 9
            ? "folded or empty header line"
            : "header line without a name",
        );
      }
      const rawName = text.slice(from, colon);
      if (!TOKEN.test(rawName)) fail("invalid header name");
      const value = trimOws(text.slice(colon + 1, eol));
      if (BAD_VALUE.test(value)) fail(`invalid character in header ${rawName}`);
      const name = rawName.toLowerCase();
      if (name === "__proto__") fail("invalid header name");
      if (name === "content-length") {
        if (!/^\d{1,15}$/.test(value)) fail("invalid Content-Length");
        // Repeated, even with the same value, is refused (as Node's parser does).
        if (contentLength >= 0) fail("more than one Content-Length");
        contentLength = Number(value);
      } else if (name === "transfer-encoding") {
        hasTe = true;
        chunked = value.toLowerCase() === "chunked" && !chunked;
        if (!chunked) fail(`unsupported Transfer-Encoding "${value}"`);
      } else if (name === "connection") {
        for (const t of value.split(",")) {
          const token = t.trim().toLowerCase();
          if (token === "close") close = true;
          else if (token === "keep-alive" && minor === "0") close = false;
        }
      }
      const prev = headers[name];
      if (prev === undefined) headers[name] = value;
      else if (typeof prev === "string") headers[name] = [prev, value];
      else prev.push(value);
    }
    if (hasTe && contentLength >= 0) fail("both Transfer-Encoding and Content-Length");
    // HTTP/1.0 has no transfer codings: such an answer has likely passed through something
    // that did not de-chunk it, and its framing is faulty (RFC 9112 §6.1).
    if (hasTe && minor === "0") fail("Transfer-Encoding in an HTTP/1.0 response");
    if (status === 101) fail("101 Switching Protocols to a request that asked for no upgrade");
    if (status < 200) {
      // Informational (100 Continue, 103 Early Hints): not relayed; the real answer follows.
      this.#state = State.Head;
      return next;
    }
    const bodyless = this.#isHead || status === 204 || status === 304;
    this.#keepAlive = !close;
    // A 204 that declares a body, or a 304 that declares a chunked one (a 304's
    // Content-Length is the length the full answer would have): the server may still send
    // those bytes, in a later read, where they would be taken for the next request's
    // answer. Read as bodyless, but the connection is not used again.
    if (
      !this.#isHead &&
      ((status === 204 && (hasTe || contentLength > 0)) || (status === 304 && hasTe))
    )
      this.#keepAlive = false;
    if (bodyless || contentLength === 0) {
      this.#state = State.Done;
    } else if (chunked) {
      this.#state = State.ChunkLine;
    } else if (contentLength > 0) {
      this.#state = State.Length;
      this.#remaining = contentLength;
    } else {
      this.#state = State.UntilClose;
      this.#keepAlive = false;
    }
    const sink = this.#sink!;
    sink.onHead({ status, reason: m[3] ?? "", headers, keepAlive: this.#keepAlive });
    if (this.#state === State.Done) sink.onEnd();
    return next;
  }

  #chunkLine(buf: Buffer, at: number): number {
    const got = this.#collect(buf, at, CRLF, MAX_CHUNK_LINE, "chunk size line");
    if (!got) return buf.length;
    const [line, next] = got;
    const m = CHUNK_LINE.exec(line);
    if (!m) fail("malformed chunk size");
    const size = parseInt(m[1]!, 16);
    if (size === 0) {
      this.#state = State.Trailers;
      this.#trailerBytes = 0;
    } else {
      this.#state = State.ChunkData;
      this.#remaining = size;
    }
    return next;
  }

  /** Trailer lines after the last chunk: checked for shape, bounded, dropped; an empty line ends the response. */
  #trailers(buf: Buffer, at: number): number {
    const got = this.#collect(
      buf,
      at,
      CRLF,
      MAX_RESPONSE_HEAD_BYTES - this.#trailerBytes,
      "trailer section",
    );
    if (!got) return buf.length;
    const [line, next] = got;
    this.#trailerBytes += line.length + 2;
    if (line.length === 0) {
      this.#state = State.Done;
      this.#sink!.onEnd();
      return next;
    }
    const colon = line.indexOf(":");
    if (colon <= 0 || !TOKEN.test(line.slice(0, colon)) || BAD_VALUE.test(line.slice(colon + 1)))
      fail("malformed trailer");
    return next;
  }
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}
