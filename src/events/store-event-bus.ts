import pg from "pg";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type {
  EventBus,
  EventHandler,
  EventResync,
  ResyncHandler,
  ZtEvent,
  ZtEventKind,
} from "./event-bus.js";
import { appendEvent, EVENTS_CHANNEL, type AppendEventHooks } from "./append-event.js";
import { readPrunedThrough } from "./prune-events.js";

export interface StoreEventBusOptions {
  clock: Clock;
  /**
   * How often to read events written by other processes (ms). SQLite default 50.
   * PostgreSQL default 1000 while LISTEN is connected (NOTIFY wakes the reader at
   * once; the poll is the safety net and the liveness probe), 100 while it is not.
   */
  pollIntervalMs?: number;
  /** First delay before reconnecting a lost LISTEN connection (ms, doubles to 5 s). */
  reconnectDelayMs?: number;
  /** Rows read per query. */
  batchSize?: number;
  /** Delay before running a failed resync again (ms, default 1000). */
  resyncRetryMs?: number;
}

/**
 * An EventBus over the store's `events` table. `publish` appends a row (see
 * `appendEvent` for why seq order is commit order) and a single ordered reader
 * delivers every row after the last seq it delivered, to every subscriber, in seq
 * order — the publisher's own events included, so all processes see one order.
 * With PostgreSQL a dedicated LISTEN connection wakes the reader on NOTIFY and is
 * re-established when lost; the reader then catches up by seq, so nothing published
 * while it was away is missed.
 *
 * Old events are pruned (`pruneEvents`, `events.retention`). After each read the bus
 * reads the pruned horizon: when it is above the last seq delivered, events this process
 * never heard may be gone, so it runs every `onResync` handler (each re-reads its state
 * from the store) and reports stale until they have all succeeded.
 */
export class StoreEventBus implements EventBus {
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #handlers = new Set<EventHandler>();
  readonly #pollMs: number | undefined;
  readonly #reconnectBaseMs: number;
  readonly #batch: number;
  #started = false;
  #marked = false;
  /**
   * Seqs of events this process published (and delivered to its own subscribers at once)
   * after `mark()` and before `start()`: the reader skips them when it reaches them, so
   * each is delivered once.
   */
  readonly #emittedBeforeStart = new Set<number>();
  #lastSeq = 0;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #again = false;
  #current: Promise<void> = Promise.resolve();
  #lastContact = 0;
  #listen: pg.Client | undefined;
  #listening = false;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #reconnectDelay: number;
  readonly #resyncHandlers = new Set<ResyncHandler>();
  readonly #resyncRetryMs: number;
  /** The gap a resync must cover, while one is pending (cleared when every handler succeeded). */
  #gap: { afterSeq: number; prunedThrough: number } | undefined;
  #resyncRun: Promise<void> | undefined;
  #resyncAgain = false;
  #resyncTimer: NodeJS.Timeout | undefined;
  #resyncs = 0;
  /** Test hooks for the append transaction. */
  appendHooks: AppendEventHooks = {};

  constructor(store: Store, options: StoreEventBusOptions) {
    this.#store = store;
    this.#clock = options.clock;
    this.#pollMs = options.pollIntervalMs;
    this.#reconnectBaseMs = options.reconnectDelayMs ?? 250;
    this.#reconnectDelay = this.#reconnectBaseMs;
    this.#batch = options.batchSize ?? 1000;
    this.#resyncRetryMs = options.resyncRetryMs ?? 1000;
  }

  async publish(kind: ZtEventKind, data: Record<string, unknown>): Promise<ZtEvent> {
    const ts = this.#clock.now();
    const { seq } = await appendEvent(
      this.#store,
      { ts, kind, data: JSON.stringify(data) },
      this.appendHooks,
    );
    const event: ZtEvent = { seq, ts, kind, data };
    if (this.#started) {
      // Deliver through the ordered reader, so this process sees the same order as
      // every other one and events from other writers are never skipped.
      await this.#poll();
    } else {
      // Not reading (e.g. a CLI command): local subscribers still hear their own event.
      if (this.#marked) this.#emittedBeforeStart.add(seq);
      this.#emit(event);
    }
    return event;
  }

  subscribe(handler: EventHandler): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }

  /**
   * Fixes where `start()` will read from: the last event committed now. Seq order is
   * commit order (see `appendEvent`), so every event committed after this call — after a
   * load that follows it, in particular — has a larger seq and is delivered by `start()`.
   */
  async mark(): Promise<void> {
    if (this.#started || this.#marked) return;
    this.#lastSeq = Math.max(this.#lastSeq, await this.#maxSeq());
    this.#marked = true;
  }

  /**
   * Starts reading events (by any process): those after the `mark()` (delivered at
   * once), or, without one, those published from now on.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    const caughtUp = this.#marked;
    if (!caughtUp) this.#lastSeq = Math.max(this.#lastSeq, await this.#maxSeq());
    this.#lastContact = this.#clock.now();
    this.#started = true;
    if (this.#store.dialect === "postgres") await this.#connectListener();
    // Everything committed since the mark, at once.
    if (caughtUp) await this.#poll();
    this.#schedulePoll();
  }

  /** The newest seq ever committed: the pruned horizon when the table has been emptied. */
  async #maxSeq(): Promise<number> {
    const row = await this.#store.db
      .selectFrom("events")
      .select((eb) => eb.fn.max("seq").as("max"))
      .executeTakeFirst();
    return Math.max(Number(row?.max ?? 0), await readPrunedThrough(this.#store));
  }

  async stop(): Promise<void> {
    this.#started = false;
    this.#marked = false;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    if (this.#resyncTimer) clearTimeout(this.#resyncTimer);
    this.#timer = undefined;
    this.#reconnectTimer = undefined;
    this.#resyncTimer = undefined;
    const client = this.#listen;
    this.#listen = undefined;
    this.#listening = false;
    if (client) await client.end().catch(() => undefined);
    await this.#current;
    await this.#resyncRun;
  }

  lastContactMs(): number {
    // Events may be missing from what this process decides on: fail closed until resynced.
    if (this.#gap) return Number.POSITIVE_INFINITY;
    return Math.max(0, this.#clock.now() - this.#lastContact);
  }

  onResync(handler: ResyncHandler): () => void {
    this.#resyncHandlers.add(handler);
    return () => this.#resyncHandlers.delete(handler);
  }

  resyncing(): boolean {
    return this.#gap !== undefined;
  }

  /** Resyncs started since this bus was created (for metrics and tests). */
  resyncCount(): number {
    return this.#resyncs;
  }

  /** Resolves once no resync is running (tests). */
  async resynced(): Promise<void> {
    while (this.#resyncRun) await this.#resyncRun;
  }

  /** Whether the PostgreSQL LISTEN connection is up (always false for SQLite). */
  listening(): boolean {
    return this.#listening;
  }

  /** The last sequence number delivered. */
  lastSeq(): number {
    return this.#lastSeq;
  }

  /** Reads and delivers whatever is pending now (also refreshes lastContactMs). */
  async catchUp(): Promise<void> {
    await this.#poll();
  }

  #interval(): number {
    if (this.#pollMs !== undefined) return this.#pollMs;
    if (this.#store.dialect !== "postgres") return 50;
    return this.#listening ? 1000 : 100;
  }

  #schedulePoll(): void {
    if (!this.#started) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      void this.#poll().finally(() => this.#schedulePoll());
    }, this.#interval());
    this.#timer.unref();
  }

  async #connectListener(): Promise<void> {
    const config: pg.ClientConfig = {
      ...this.#store.pgConfig,
      application_name: "zt-events-listen",
    };
    delete config.statement_timeout;
    delete config.query_timeout;
    const client = new pg.Client(config);
    const lost = () => {
      if (this.#listen !== client) return;
      this.#listen = undefined;
      this.#listening = false;
      client.end().catch(() => undefined);
      this.#scheduleReconnect();
    };
    client.on("error", lost);
    client.on("end", lost);
    client.on("notification", () => void this.#poll());
    this.#listen = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${EVENTS_CHANNEL}`);
    } catch {
      lost();
      return;
    }
    if (this.#listen !== client) return;
    this.#listening = true;
    this.#reconnectDelay = this.#reconnectBaseMs;
    // Anything published while we were not listening is read now, by seq.
    await this.#poll();
    this.#schedulePoll();
  }

  #scheduleReconnect(): void {
    if (!this.#started || this.#reconnectTimer) return;
    const delay = this.#reconnectDelay;
    this.#reconnectDelay = Math.min(this.#reconnectDelay * 2, 5000);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#started) void this.#connectListener();
    }, delay);
    this.#reconnectTimer.unref();
    // Poll faster while NOTIFY cannot wake us.
    this.#schedulePoll();
  }

  /** One reader at a time; a request during a read makes it read once more. */
  async #poll(): Promise<void> {
    if (this.#polling) {
      this.#again = true;
      return this.#current;
    }
    this.#polling = true;
    this.#current = this.#pollLoop();
    return this.#current;
  }

  async #pollLoop(): Promise<void> {
    try {
      do {
        this.#again = false;
        const full = await this.#pollOnce();
        if (full) this.#again = true;
      } while (this.#again);
    } finally {
      this.#polling = false;
    }
  }

  /** Returns true when a full batch was read (more may be waiting). */
  async #pollOnce(): Promise<boolean> {
    let rows: { seq: number; ts: number; kind: string; data: string }[];
    try {
      rows = await this.#store.db
        .selectFrom("events")
        .selectAll()
        .where("seq", ">", this.#lastSeq)
        .orderBy("seq")
        .limit(this.#batch)
        .execute();
    } catch {
      // Store unreachable: lastContactMs grows and /readyz reports it.
      return false;
    }
    // The horizon is read after the rows: a row deleted before they were read had its
    // horizon committed with the delete, so it shows here (see pruneEvents).
    let prunedThrough: number;
    try {
      prunedThrough = await readPrunedThrough(this.#store);
    } catch {
      return false;
    }
    const afterSeq = this.#lastSeq;
    this.#lastContact = this.#clock.now();
    for (const r of rows) {
      const seq = Number(r.seq);
      if (seq <= this.#lastSeq) continue;
      this.#lastSeq = seq;
      if (this.#emittedBeforeStart.delete(seq)) continue;
      this.#emit({ seq, ts: Number(r.ts), kind: r.kind as ZtEventKind, data: parseData(r.data) });
    }
    if (prunedThrough > afterSeq) {
      // Events in (afterSeq, prunedThrough] may have been deleted unread: resync.
      this.#lastSeq = Math.max(this.#lastSeq, prunedThrough);
      this.#gap = {
        afterSeq: Math.min(afterSeq, this.#gap?.afterSeq ?? afterSeq),
        prunedThrough: Math.max(prunedThrough, this.#gap?.prunedThrough ?? 0),
      };
      this.#resyncs++;
      this.#runResync();
    }
    return rows.length === this.#batch;
  }

  /**
   * Runs every resync handler (outside the reader: a handler may publish, and publish
   * waits for the reader). A gap found while one runs makes it run again; a failure
   * leaves the gap pending (stale) and retries after `resyncRetryMs`.
   */
  #runResync(): void {
    if (this.#resyncRun) {
      this.#resyncAgain = true;
      return;
    }
    const run = async () => {
      let failed = false;
      do {
        this.#resyncAgain = false;
        const gap = this.#gap;
        if (!gap) return;
        const resync: EventResync = {
          ...gap,
          restate: (kind, data) =>
            this.#emit({ seq: this.#lastSeq, ts: this.#clock.now(), kind, data }),
        };
        const results = await Promise.allSettled(
          [...this.#resyncHandlers].map(async (h) => h(resync)),
        );
        failed = results.some((r) => r.status === "rejected");
        if (!failed && !this.#resyncAgain && this.#gap === gap) this.#gap = undefined;
      } while (this.#resyncAgain && this.#started);
      if (failed && this.#started && !this.#resyncTimer) {
        this.#resyncTimer = setTimeout(() => {
          this.#resyncTimer = undefined;
          if (this.#started) this.#runResync();
        }, this.#resyncRetryMs);
        this.#resyncTimer.unref();
      }
    };
    this.#resyncRun = run().finally(() => {
      this.#resyncRun = undefined;
    });
  }

  #emit(event: ZtEvent): void {
    for (const h of this.#handlers) {
      try {
        h(event);
      } catch {
        /* a failing subscriber must not stop the others */
      }
    }
  }
}

function parseData(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}
