import pg from "pg";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type { EventBus, EventHandler, ZtEvent, ZtEventKind } from "./event-bus.js";
import { appendEvent, EVENTS_CHANNEL, type AppendEventHooks } from "./append-event.js";

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
}

/**
 * An EventBus over the store's `events` table. `publish` appends a row (see
 * `appendEvent` for why seq order is commit order) and a single ordered reader
 * delivers every row after the last seq it delivered, to every subscriber, in seq
 * order — the publisher's own events included, so all processes see one order.
 * With PostgreSQL a dedicated LISTEN connection wakes the reader on NOTIFY and is
 * re-established when lost; the reader then catches up by seq, so nothing published
 * while it was away is missed.
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
  /** Test hooks for the append transaction. */
  appendHooks: AppendEventHooks = {};

  constructor(store: Store, options: StoreEventBusOptions) {
    this.#store = store;
    this.#clock = options.clock;
    this.#pollMs = options.pollIntervalMs;
    this.#reconnectBaseMs = options.reconnectDelayMs ?? 250;
    this.#reconnectDelay = this.#reconnectBaseMs;
    this.#batch = options.batchSize ?? 1000;
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

  async #maxSeq(): Promise<number> {
    const row = await this.#store.db
      .selectFrom("events")
      .select((eb) => eb.fn.max("seq").as("max"))
      .executeTakeFirst();
    return Number(row?.max ?? 0);
  }

  async stop(): Promise<void> {
    this.#started = false;
    this.#marked = false;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#timer = undefined;
    this.#reconnectTimer = undefined;
    const client = this.#listen;
    this.#listen = undefined;
    this.#listening = false;
    if (client) await client.end().catch(() => undefined);
    await this.#current;
  }

  lastContactMs(): number {
    return Math.max(0, this.#clock.now() - this.#lastContact);
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
    this.#lastContact = this.#clock.now();
    for (const r of rows) {
      const seq = Number(r.seq);
      if (seq <= this.#lastSeq) continue;
      this.#lastSeq = seq;
      if (this.#emittedBeforeStart.delete(seq)) continue;
      this.#emit({ seq, ts: Number(r.ts), kind: r.kind as ZtEventKind, data: parseData(r.data) });
    }
    return rows.length === this.#batch;
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
