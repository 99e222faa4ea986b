import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type { EventBus, EventHandler, ZtEvent, ZtEventKind } from "./event-bus.js";

export interface StoreEventBusOptions {
  /** How often to look for events written by other processes (ms). */
  pollIntervalMs?: number;
  clock: Clock;
}

/**
 * An EventBus over the store's `events` table. Publishing inserts a row and delivers
 * it in-process at once; rows written by other processes are picked up by sequence
 * number, so nothing is missed across reconnects. With PostgreSQL a NOTIFY wakes the
 * reader early; polling remains the safety net.
 */
export class StoreEventBus implements EventBus {
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #handlers = new Set<EventHandler>();
  readonly #pollMs: number;
  #lastSeq = 0;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #again = false;
  #current: Promise<void> = Promise.resolve();
  #lastContact = 0;
  #listenClient: { release(): void; query(q: string): Promise<unknown> } | undefined;

  constructor(store: Store, options: StoreEventBusOptions) {
    this.#store = store;
    this.#clock = options.clock;
    this.#pollMs = options.pollIntervalMs ?? 50;
  }

  async publish(kind: ZtEventKind, data: Record<string, unknown>): Promise<ZtEvent> {
    const ts = this.#clock.now();
    const row = await this.#store.db
      .insertInto("events")
      .values({ ts, kind, data: JSON.stringify(data) })
      .returning("seq")
      .executeTakeFirstOrThrow();
    const event: ZtEvent = { seq: Number(row.seq), ts, kind, data };
    if (this.#store.dialect === "postgres") {
      await this.#store.pgPool?.query("SELECT pg_notify('zt_events', $1)", [String(event.seq)]);
    }
    // Deliver through the ordered reader so events from other writers are never skipped.
    await this.#poll();
    return event;
  }

  subscribe(handler: EventHandler): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }

  async start(): Promise<void> {
    const row = await this.#store.db
      .selectFrom("events")
      .select((eb) => eb.fn.max("seq").as("max"))
      .executeTakeFirst();
    this.#lastSeq = Math.max(this.#lastSeq, Number(row?.max ?? 0));
    this.#lastContact = this.#clock.now();
    if (this.#store.dialect === "postgres" && this.#store.pgPool) {
      try {
        const client = await this.#store.pgPool.connect();
        client.on("notification", () => void this.#poll());
        client.on("error", () => {
          this.#listenClient = undefined;
        });
        await client.query("LISTEN zt_events");
        this.#listenClient = client;
      } catch {
        /* polling still delivers */
      }
    }
    const tick = () => {
      void this.#poll().finally(() => {
        if (this.#timer !== undefined) this.#timer = setTimeout(tick, this.#pollMs);
      });
    };
    this.#timer = setTimeout(tick, this.#pollMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    const t = this.#timer;
    this.#timer = undefined;
    if (t) clearTimeout(t);
    if (this.#listenClient) {
      this.#listenClient.release();
      this.#listenClient = undefined;
    }
  }

  lastContactMs(): number {
    return this.#clock.now() - this.#lastContact;
  }

  /** Reads events newer than the last one seen, in order. */
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
    do {
      this.#again = false;
      await this.#pollOnce();
    } while (this.#again);
    this.#polling = false;
  }

  async #pollOnce(): Promise<void> {
    try {
      const rows = await this.#store.db
        .selectFrom("events")
        .selectAll()
        .where("seq", ">", this.#lastSeq)
        .orderBy("seq")
        .limit(1000)
        .execute();
      this.#lastContact = this.#clock.now();
      for (const r of rows) {
        let data: Record<string, unknown> = {};
        try {
          data = JSON.parse(r.data) as Record<string, unknown>;
        } catch {
          data = {};
        }
        this.#deliver({ seq: Number(r.seq), ts: Number(r.ts), kind: r.kind as ZtEventKind, data });
      }
    } catch {
      /* store unreachable: lastContactMs grows and /readyz reports it */
    }
  }

  #deliver(event: ZtEvent): void {
    if (event.seq <= this.#lastSeq) return;
    this.#lastSeq = event.seq;
    for (const h of this.#handlers) {
      try {
        h(event);
      } catch {
        /* a failing subscriber must not stop the others */
      }
    }
  }
}
