import type { Store } from "../../store/index.js";
import type { Clock } from "../../core/clock.js";
import { AuditCursor, headSeq } from "../audit-cursor.js";
import { countDropped, setSinkLag } from "../metrics.js";
import { SinkRejectedError, type Sink } from "./sink.js";
import type { AuditRowChained } from "../audit-log.js";

export interface SinkRunnerOptions {
  store: Store;
  clock: Clock;
  sink: Sink;
  /** Events per delivery. */
  batch: number;
  /** Events the sink may fall behind before it skips ahead (counted as dropped). */
  maxLag: number;
  /** Only kinds with one of these prefixes. */
  kinds?: string[] | undefined;
  pollIntervalMs: number;
  /** Where a new sink (no cursor yet) starts: the current head (default) or seq 1. */
  startAt?: "head" | "beginning" | undefined;
  /** Longest wait between retries of a failing delivery. */
  maxBackoffMs?: number;
  onError?: (sink: string, error: unknown) => void;
}

/**
 * Ships audit events to one sink. The audit table is the durable spool: the runner
 * reads after its own cursor (`sink:<name>`), delivers a batch, then moves the cursor.
 * A slow or dead sink therefore never blocks a decision and loses nothing; it retries
 * with backoff. The in-memory buffer is one batch (bounded). Only when a sink falls more
 * than `maxLag` events behind does it skip ahead, and the skipped events are counted in
 * `zt_audit_dropped_events_total` and the cursor's `dropped`.
 *
 * A receiver that refuses the content (SinkRejectedError: HTTP 400/413/422) would refuse
 * the same batch forever, so the batch is split in halves until the events refused on
 * their own are found; only those are dropped (counted like the skipped ones, and each
 * reported through `onError` with its seq), the rest delivered.
 */
export class SinkRunner {
  readonly #o: SinkRunnerOptions;
  readonly #cursor: AuditCursor;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> = Promise.resolve();
  /** Runs queued behind the one in progress (not started yet). */
  #waiting = 0;
  #failures = 0;
  #retryAt = 0;
  #stopped = false;

  constructor(options: SinkRunnerOptions) {
    this.#o = options;
    this.#cursor = new AuditCursor(options.store, `sink:${options.sink.name}`);
  }

  get name(): string {
    return this.#o.sink.name;
  }

  start(): void {
    const tick = () => {
      if (this.#stopped) return;
      void this.runOnce()
        .catch(() => undefined)
        .finally(() => {
          if (!this.#stopped) this.#timer = setTimeout(tick, this.#o.pollIntervalMs);
        });
    };
    this.#timer = setTimeout(tick, 0);
    this.#timer.unref();
  }

  /**
   * Wakes the runner early (e.g. after this process wrote events). A run already waiting
   * will read these events too, so no second one is queued: a sink slower than the log
   * (its drain never ends while events keep coming) would otherwise collect one waiting
   * run per written batch, without bound.
   */
  poke(): void {
    if (this.#waiting > 0) return;
    void this.runOnce().catch(() => undefined);
  }

  /** Runs queued behind the one in progress. */
  get pendingRuns(): number {
    return this.#waiting;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running.catch(() => undefined);
    await this.#o.sink.close();
  }

  /**
   * Delivers everything after the cursor (serialised with other calls). Resolves with
   * the number delivered; rejects with the sink's error (the cursor stays put).
   */
  runOnce(): Promise<number> {
    this.#waiting++;
    const next = this.#running
      .catch(() => undefined)
      .then(() => {
        this.#waiting--;
        return this.#drain();
      });
    this.#running = next;
    return next;
  }

  async #drain(): Promise<number> {
    const { store, clock, sink } = this.#o;
    if (clock.now() < this.#retryAt) return 0;
    let delivered = 0;
    while (!this.#stopped) {
      const initial = this.#o.startAt === "beginning" ? async () => 0 : () => headSeq(store);
      let pos = await this.#cursor.position(initial, clock.now());
      const head = await headSeq(store);
      if (head - pos > this.#o.maxLag) {
        const skipTo = head - this.#o.maxLag;
        if (await this.#cursor.commit(skipTo, clock.now(), skipTo - pos))
          countDropped(sink.name, skipTo - pos);
        continue;
      }
      setSinkLag(sink.name, head - pos);
      const rows = await this.#cursor.read(this.#o.batch);
      if (rows.length === 0) return delivered;
      const kinds = this.#o.kinds;
      const wanted = kinds ? rows.filter((r) => kinds.some((k) => r.kind.startsWith(k))) : rows;
      let refused = 0;
      try {
        if (wanted.length > 0) refused = await this.#deliverSplitting(wanted);
        this.#failures = 0;
        this.#retryAt = 0;
      } catch (e) {
        this.#failures++;
        const backoff = Math.min(
          250 * 2 ** Math.min(this.#failures, 10),
          this.#o.maxBackoffMs ?? 30_000,
        );
        this.#retryAt = clock.now() + backoff;
        this.#o.onError?.(sink.name, e);
        throw e;
      }
      pos = rows[rows.length - 1]!.seq;
      if (!(await this.#cursor.commit(pos, clock.now(), refused))) continue; // another replica delivered it too
      countDropped(sink.name, refused);
      delivered += wanted.length - refused;
      setSinkLag(sink.name, Math.max(0, head - pos));
    }
    return delivered;
  }

  /**
   * Delivers `rows`; when the receiver refuses their content, delivers each half instead,
   * down to single events, and drops those refused alone. Resolves with how many were
   * dropped; a transient failure rejects (the whole batch is retried: at-least-once).
   *
   * Events are dropped only when the receiver took others of the same batch: one that
   * refuses everything (a wrong label set, a wrong index) is misconfigured, not refusing
   * content, so nothing is dropped and the batch fails as a whole, to be retried with
   * backoff until the receiver is fixed (the split stops after REFUSED_ALONE_PROBE single
   * refusals with none accepted, to spare it the requests).
   */
  async #deliverSplitting(rows: AuditRowChained[]): Promise<number> {
    const state = { accepted: false, refused: [] as { row: AuditRowChained; why: string }[] };
    await this.#split(rows, state);
    if (!state.accepted)
      // Nothing got through: no evidence it is these events rather than the receiver.
      throw new Error(
        `${state.refused[0]?.why ?? "refused"}: the receiver refuses every event of the batch: retrying; check the sink's configuration`,
      );
    for (const { row, why } of state.refused)
      this.#o.onError?.(
        this.#o.sink.name,
        new Error(
          `${why}: the receiver refuses event seq ${row.seq} (${row.kind}, id ${row.id}) on its own; it is dropped from this sink (it stays in the audit log)`,
        ),
      );
    return state.refused.length;
  }

  async #split(
    rows: AuditRowChained[],
    state: { accepted: boolean; refused: { row: AuditRowChained; why: string }[] },
  ): Promise<void> {
    try {
      await this.#o.sink.deliver(rows);
      state.accepted = true;
      return;
    } catch (e) {
      if (!(e instanceof SinkRejectedError)) throw e;
      if (rows.length === 1) {
        state.refused.push({ row: rows[0]!, why: e.message });
        if (!state.accepted && state.refused.length >= REFUSED_ALONE_PROBE)
          throw new Error(
            `${e.message}: the receiver refuses every event it was sent (the first ${REFUSED_ALONE_PROBE} one by one): retrying; check the sink's configuration`,
          );
        return;
      }
    }
    const mid = Math.ceil(rows.length / 2);
    await this.#split(rows.slice(0, mid), state);
    await this.#split(rows.slice(mid), state);
  }
}

/** Single events refused, none accepted, before a refusal counts as the receiver's (see #deliverSplitting). */
const REFUSED_ALONE_PROBE = 8;
