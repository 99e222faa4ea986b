import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import { newId } from "../core/ids.js";
import type { AuditInput, AuditSink } from "./audit-types.js";

export interface AuditLogOptions {
  clock: Clock;
  /** Flush at least this often (ms). */
  flushIntervalMs?: number;
  /** Flush as soon as this many records are buffered. */
  maxBatch?: number;
  /** Called after records are durably written (e.g. for exporters, alerts). */
  onWritten?: (records: AuditRowOut[]) => void;
}

export interface AuditRowOut {
  seq: number;
  id: string;
  ts: number;
  kind: string;
  outcome: string;
  subject: string | null;
  source_ip: string | null;
  route: string | null;
  action: string | null;
  decision_id: string | null;
  policies: string | null;
  reason: string | null;
  data: string;
}

/**
 * The audit log writer: records are buffered off the hot path and written in batches,
 * one transaction per batch.
 */
export class AuditLog implements AuditSink {
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #maxBatch: number;
  readonly #onWritten: ((records: AuditRowOut[]) => void) | undefined;
  #buffer: AuditRowOut[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(store: Store, options: AuditLogOptions) {
    this.#store = store;
    this.#clock = options.clock;
    this.#maxBatch = options.maxBatch ?? 500;
    this.#onWritten = options.onWritten;
    this.#timer = setInterval(() => void this.flush(), options.flushIntervalMs ?? 50);
    this.#timer.unref();
  }

  /** Buffers a record; returns its id. Never throws on the hot path. */
  record(input: AuditInput): string {
    const id = newId("evt");
    this.#buffer.push({
      seq: 0,
      id,
      ts: this.#clock.now(),
      kind: input.kind,
      outcome: input.outcome,
      subject: input.subject ?? null,
      source_ip: input.sourceIp ?? null,
      route: input.route ?? null,
      action: input.action ?? null,
      decision_id: input.decisionId ?? null,
      policies: input.policies ? JSON.stringify(input.policies) : null,
      reason: input.reason ?? null,
      data: JSON.stringify(input.data ?? {}),
    });
    if (this.#buffer.length >= this.#maxBatch) void this.flush();
    return id;
  }

  async flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#writeBatch());
    return this.#writing;
  }

  async #writeBatch(): Promise<void> {
    if (this.#buffer.length === 0) return;
    const batch = this.#buffer;
    this.#buffer = [];
    try {
      await this.#store.db.transaction().execute(async (trx) => {
        const last = await trx
          .selectFrom("audit_events")
          .select((eb) => eb.fn.max("seq").as("max"))
          .executeTakeFirst();
        let seq = Number(last?.max ?? 0);
        for (const r of batch) r.seq = ++seq;
        for (let i = 0; i < batch.length; i += 100) {
          await trx.insertInto("audit_events").values(batch.slice(i, i + 100)).execute();
        }
      });
      this.#onWritten?.(batch);
    } catch {
      // Keep the records for the next attempt rather than lose them.
      this.#buffer = batch.concat(this.#buffer);
    }
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }
}
