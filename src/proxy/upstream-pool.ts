/**
 * Keep-alive HTTP/1.1 connections from the PEP to one upstream origin: one request at a
 * time per connection (no pipelining, so a misbehaving upstream cannot shift responses
 * between clients), the response read by the strict {@link ResponseParser}, bodies
 * streamed both ways with backpressure.
 *
 * A connection goes back to the pool only when its response ended cleanly, the request
 * body was sent whole, the server did not ask to close, and no stray byte followed.
 * Anything else closes it. A request that failed on a reused connection before any
 * response byte (the server closed it while idle) is sent once more on a new connection
 * when it is safe to repeat: GET, HEAD or OPTIONS, without a body.
 */
import net from "node:net";
import tls from "node:tls";
import type { Readable } from "node:stream";
import { ResponseParser, type ResponseHead, type ResponseSink } from "./http1-response.js";

/**
 * Idle connections are closed, and never reused, after this long (below Node's 5 s
 * server keep-alive default), or after the pool's `timeoutMs` if shorter (the socket
 * timeout stays set).
 */
export const UPSTREAM_IDLE_MS = 4_000;

export class UpstreamTimeout extends Error {
  readonly code = "ZT_UPSTREAM_TIMEOUT";
}

export class BodyTooLarge extends Error {
  readonly code = "ZT_PAYLOAD_TOO_LARGE";
}

/** Every connection is busy and the queue of waiting requests is full. */
export class UpstreamBusy extends Error {
  readonly code = "ZT_UNAVAILABLE";
}

/** Most requests waiting for a connection, by default; beyond it they fail at once. */
export const UPSTREAM_MAX_WAITING = 1024;

/** What the caller hears about one exchange. Called at most once each, in order; then never again after onEnd or onError. */
export interface UpstreamHandler {
  onHead(head: ResponseHead): void;
  /**
   * Return false to stop reading from the connection until `exchange.resume()`. Pieces
   * already read (the rest of one socket read, at most 64 KiB) may still arrive.
   */
  onData(chunk: Buffer): boolean;
  onEnd(): void;
  onError(e: Error): void;
}

export interface UpstreamRequestBody {
  stream: Readable;
  /** Send as chunked (the client's body had no length); else as read (Content-Length in the head). */
  chunked: boolean;
  /** Largest body sent; beyond it the exchange fails with {@link BodyTooLarge}. */
  limit?: number | undefined;
}

export interface UpstreamRequest {
  method: string;
  /** The whole request head: request line, header lines, the empty line. Latin-1. */
  head: string;
  body?: UpstreamRequestBody | undefined;
}

export interface UpstreamExchange {
  /** The client went away: drop the exchange and its connection. */
  abort(): void;
  /** Read again after `onData` returned false. */
  resume(): void;
}

export interface UpstreamPoolOptions {
  host: string;
  port: number;
  /** TLS to the upstream (https); with key/cert for mTLS. */
  tls?: tls.ConnectionOptions | undefined;
  /** Time allowed between two reads (or writes) while a request is under way. */
  timeoutMs: number;
  /** Most connections open at once; further requests wait for one (at most `timeoutMs`). */
  maxConnections?: number;
  /** Most requests waiting for a connection; further ones fail with {@link UpstreamBusy}. */
  maxWaiting?: number;
  /** Idle connections older than this are closed, never reused (default {@link UPSTREAM_IDLE_MS}). */
  idleMs?: number;
}

const RETRYABLE = new Set(["GET", "HEAD", "OPTIONS"]);

class Exchange implements UpstreamExchange {
  conn: Connection | undefined;
  /** The handler has had its last call (end or error), or the client went away. */
  settled = false;
  /** The request body (if any) is written whole. */
  bodySent: boolean;
  retried = false;
  /** Set while waiting for a connection: fails the exchange when none came in time. */
  timer: NodeJS.Timeout | undefined;

  constructor(
    readonly pool: UpstreamPool,
    readonly request: UpstreamRequest,
    readonly handler: UpstreamHandler,
  ) {
    this.bodySent = request.body === undefined;
  }

  abort(): void {
    if (this.settled) return;
    this.settled = true;
    if (this.conn) this.conn.destroy();
    else this.pool.dequeue(this);
  }

  resume(): void {
    if (!this.settled) this.conn?.socket.resume();
  }
}

/** One upstream connection; it is also the parser's sink for the exchange it carries. */
class Connection implements ResponseSink {
  readonly parser = new ResponseParser();
  exchange: Exchange | undefined;
  /** Has carried a request before (a failure before any byte may be a stale keep-alive). */
  reused = false;
  idleSince = 0;
  #responseEnded = false;

  constructor(
    readonly pool: UpstreamPool,
    readonly socket: net.Socket,
  ) {
    socket.setNoDelay(true);
    socket.setTimeout(pool.timeoutMs);
    socket.on("data", (buf: Buffer) => this.#onData(buf));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (e: Error) => this.#fail(e));
    socket.on("timeout", () =>
      this.#fail(new UpstreamTimeout(`no answer from the upstream within ${pool.timeoutMs} ms`)),
    );
    socket.on("close", () => {
      this.pool.removed(this);
      this.#fail(new Error("the upstream closed the connection"));
    });
  }

  start(ex: Exchange): void {
    this.exchange = ex;
    ex.conn = this;
    this.#responseEnded = false;
    this.parser.begin(this, ex.request.method === "HEAD");
    const body = ex.request.body;
    this.socket.write(ex.request.head, "latin1");
    if (body) this.#sendBody(ex, body);
  }

  destroy(): void {
    this.socket.destroy();
  }

  onHead(head: ResponseHead): void {
    this.exchange!.handler.onHead(head);
  }

  onData(chunk: Buffer): void {
    const ex = this.exchange!;
    if (ex.settled) return;
    if (!ex.handler.onData(chunk)) this.socket.pause();
  }

  onEnd(): void {
    this.#responseEnded = true;
    const ex = this.exchange!;
    if (ex.settled) return;
    ex.settled = true;
    ex.handler.onEnd();
  }

  #onData(buf: Buffer): void {
    const ex = this.exchange;
    if (!ex || ex.settled) {
      // Nothing was asked (or the answer is over): bytes now are a protocol error.
      this.socket.destroy();
      return;
    }
    try {
      this.parser.execute(buf);
    } catch (e) {
      this.#fail(e as Error);
      return;
    }
    // Released only here, after the parser returned, so no byte of this read can be taken
    // for the next request's answer.
    if (this.#responseEnded) this.#released();
  }

  /** The response ended: back to the pool if the connection is clean, else closed. */
  #released(): void {
    const ex = this.exchange!;
    this.exchange = undefined;
    ex.conn = undefined;
    // Answered before the whole request body was sent: the rest of the body is not sent
    // (an upstream that stopped reading could take those client bytes for a request of
    // zt's own — a desync), and the connection is closed, never reused.
    if (!ex.bodySent || !this.parser.reusable || this.socket.destroyed) {
      this.socket.destroy();
      return;
    }
    // Paused by backpressure on the last piece: read again (any byte now is refused).
    if (this.socket.isPaused()) this.socket.resume();
    this.reused = true;
    this.pool.idle(this);
  }

  #onEnd(): void {
    const ex = this.exchange;
    if (ex && !ex.settled && this.parser.untilClose) {
      // A body delimited by the end of the connection: complete now.
      try {
        this.parser.finishAtClose();
      } catch (e) {
        this.#fail(e as Error);
        return;
      }
    }
    this.socket.destroy();
  }

  #fail(e: Error): void {
    const ex = this.exchange;
    this.socket.destroy();
    if (!ex) return;
    this.exchange = undefined;
    ex.conn = undefined;
    if (ex.settled) return;
    if (
      this.reused &&
      this.parser.bytesSeen === 0 &&
      !ex.retried &&
      ex.request.body === undefined &&
      RETRYABLE.has(ex.request.method) &&
      !(e instanceof UpstreamTimeout)
    ) {
      // The upstream closed this idle connection as we used it: once more, on a new one.
      ex.retried = true;
      this.pool.startFresh(ex);
      return;
    }
    ex.settled = true;
    ex.handler.onError(e);
  }

  #sendBody(ex: Exchange, body: UpstreamRequestBody): void {
    const { stream, chunked, limit } = body;
    const socket = this.socket;
    let seen = 0;
    const onData = (chunk: Buffer) => {
      // Detached (answered, failed or aborted): nothing more is sent.
      if (ex.settled || ex.conn !== this) return;
      // An empty piece (some streams emit them) written as a chunk would be the last-chunk
      // marker, ending the body early: what followed would read as a request of its own.
      if (chunk.length === 0) return;
      seen += chunk.length;
      if (limit !== undefined && seen > limit) {
        cleanup();
        this.#failBody(ex, new BodyTooLarge(`request body exceeds ${limit} bytes`));
        return;
      }
      let ok: boolean;
      if (chunked) {
        socket.cork();
        socket.write(`${chunk.length.toString(16)}\r\n`, "latin1");
        socket.write(chunk);
        ok = socket.write("\r\n", "latin1");
        socket.uncork();
      } else ok = socket.write(chunk);
      if (!ok) {
        stream.pause();
        socket.once("drain", () => stream.resume());
      }
    };
    const onEnd = () => {
      cleanup();
      if (ex.conn !== this) return;
      if (chunked) socket.write("0\r\n\r\n", "latin1");
      ex.bodySent = true;
    };
    const onError = (e: Error) => {
      cleanup();
      this.#failBody(ex, e);
    };
    const cleanup = () => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onError);
    };
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", onError);
  }

  /** The request body failed (too large, client error): the exchange fails, the connection closes. */
  #failBody(ex: Exchange, e: Error): void {
    if (ex.conn === this) {
      this.exchange = undefined;
      ex.conn = undefined;
    }
    this.socket.destroy();
    if (ex.settled) return;
    ex.settled = true;
    ex.handler.onError(e);
  }
}

/** Connections to one upstream origin (and one timeout). */
export class UpstreamPool {
  readonly timeoutMs: number;
  readonly #options: UpstreamPoolOptions;
  readonly #max: number;
  readonly #maxWaiting: number;
  readonly #idleMs: number;
  /** Idle connections, most recently used last (reused first: warm, least likely closed). */
  #idle: Connection[] = [];
  #waiting: Exchange[] = [];
  /** Every open connection (idle or busy). */
  readonly #all = new Set<Connection>();
  #closed = false;
  /** Retired (see retire()): no connection is kept for reuse. */
  #retired = false;
  readonly #sweeper: NodeJS.Timeout;

  constructor(options: UpstreamPoolOptions) {
    this.#options = options;
    this.timeoutMs = options.timeoutMs;
    this.#max = options.maxConnections ?? 1024;
    this.#maxWaiting = options.maxWaiting ?? UPSTREAM_MAX_WAITING;
    this.#idleMs = options.idleMs ?? UPSTREAM_IDLE_MS;
    this.#sweeper = setInterval(() => this.#sweep(), 1_000);
    this.#sweeper.unref();
  }

  /** Connections open now (idle or busy). */
  get open(): number {
    return this.#all.size;
  }

  /** Idle connections now. */
  get idleCount(): number {
    return this.#idle.length;
  }

  request(request: UpstreamRequest, handler: UpstreamHandler): UpstreamExchange {
    const ex = new Exchange(this, request, handler);
    if (this.#closed) {
      ex.settled = true;
      handler.onError(new Error("the upstream pool is closed"));
      return ex;
    }
    let conn = this.#idle.pop();
    if (conn) {
      // The sweep runs once a second: a connection may be older than the idle limit by
      // then, and racing the upstream's own keep-alive timeout (Node's is 5 s). Closed,
      // like one the upstream closed a moment ago ('close' not yet emitted). The list is
      // oldest first, so once one is too old, every one left is.
      const now = performance.now();
      while (conn && (conn.socket.destroyed || now - conn.idleSince >= this.#idleMs)) {
        this.#all.delete(conn);
        conn.destroy();
        conn = this.#idle.pop();
      }
    }
    if (conn) conn.start(ex);
    else if (this.#all.size < this.#max) this.#connect().start(ex);
    else if (this.#waiting.length >= this.#maxWaiting) {
      // Bounded: an upstream that stopped answering must not make requests pile up.
      ex.settled = true;
      handler.onError(
        new UpstreamBusy(
          `${this.#waiting.length} requests already wait for an upstream connection`,
        ),
      );
    } else this.#wait(ex, false);
    return ex;
  }

  /** Queues an exchange for the next free connection, for at most `timeoutMs`. */
  #wait(ex: Exchange, first: boolean): void {
    if (first) this.#waiting.unshift(ex);
    else this.#waiting.push(ex);
    // A request must not wait forever for a connection held by a slow upstream.
    ex.timer = setTimeout(() => {
      ex.timer = undefined;
      this.dequeue(ex);
      if (ex.settled) return;
      ex.settled = true;
      ex.handler.onError(
        new UpstreamTimeout(`no upstream connection was free within ${this.timeoutMs} ms`),
      );
    }, this.timeoutMs);
    ex.timer.unref();
  }

  /** The next waiting exchange, its timer stopped. */
  #nextWaiting(): Exchange | undefined {
    const ex = this.#waiting.shift();
    if (ex) clearTimeout(ex.timer);
    return ex;
  }

  /** @internal A connection's request failed before any answer: retry on a new connection. */
  startFresh(ex: Exchange): void {
    if (this.#closed) {
      ex.settled = true;
      ex.handler.onError(new Error("the upstream pool is closed"));
      return;
    }
    // First in the queue (it was taken from it, or had a connection, before); not
    // counted against `maxWaiting`: it was admitted already.
    if (this.#all.size < this.#max) this.#connect().start(ex);
    else this.#wait(ex, true);
  }

  /** @internal A waiting exchange was aborted. */
  dequeue(ex: Exchange): void {
    clearTimeout(ex.timer);
    const i = this.#waiting.indexOf(ex);
    if (i >= 0) this.#waiting.splice(i, 1);
  }

  /** @internal A connection is free: the next waiting request, else the idle list. */
  idle(conn: Connection): void {
    if (this.#closed) {
      conn.destroy();
      return;
    }
    const next = this.#nextWaiting();
    if (next) {
      conn.start(next);
      return;
    }
    if (this.#retired) {
      conn.destroy();
      return;
    }
    conn.idleSince = performance.now();
    this.#idle.push(conn);
  }

  /** @internal A connection closed. */
  removed(conn: Connection): void {
    this.#all.delete(conn);
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    // A slot is free: a waiting request may have a new connection.
    if (!this.#closed && this.#waiting.length > 0 && this.#all.size < this.#max)
      this.#connect().start(this.#nextWaiting()!);
  }

  /**
   * Closes gracefully (the upstream is no longer routed to, after a config reload): idle
   * connections close now, busy ones once their exchange ends, and requests already
   * decided for it — waiting, or still to come — are served, each on a connection that
   * then closes.
   */
  retire(): void {
    this.#retired = true;
    clearInterval(this.#sweeper);
    for (const c of this.#idle.splice(0)) c.destroy();
  }

  /** Closes idle connections; busy ones close when their exchange ends. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const c of this.#idle.splice(0)) c.destroy();
    for (const ex of this.#waiting.splice(0)) {
      clearTimeout(ex.timer);
      ex.settled = true;
      ex.handler.onError(new Error("the upstream pool is closed"));
    }
  }

  /** Closes every connection now. */
  destroy(): void {
    this.close();
    // Busy connections too: their exchanges fail (the client connections are closing).
    for (const c of [...this.#all]) c.destroy();
  }

  #connect(): Connection {
    const o = this.#options;
    const socket = o.tls
      ? tls.connect({
          host: o.host,
          port: o.port,
          ...(net.isIP(o.host) ? {} : { servername: o.host }),
          ALPNProtocols: ["http/1.1"],
          ...o.tls,
        })
      : net.connect({ host: o.host, port: o.port });
    const conn = new Connection(this, socket);
    this.#all.add(conn);
    return conn;
  }

  #sweep(): void {
    if (this.#idle.length === 0) return;
    const before = performance.now() - this.#idleMs;
    // Oldest first: stop at the first one used recently.
    while (this.#idle.length > 0 && this.#idle[0]!.idleSince < before)
      this.#idle.shift()!.destroy();
  }
}
