import { Worker, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { createRequire } from "node:module";
import type { hash as Hash } from "node:crypto";
import type DatabaseCtor from "better-sqlite3";
import {
  createSqliteAppender,
  MAX_MERGED_ROWS,
  type AppendResult,
  type PackedBatch,
} from "./sqlite-appender.js";

/** What the thread is started with. */
interface WriterThreadData {
  file: string;
  betterSqlite3: string;
  busyTimeoutMs: number;
  maxMergedRows: number;
  testHooks: boolean;
}

type ToThread =
  | { t: "append"; id: number; epoch: number; batch: PackedBatch }
  | { t: "close" }
  | { t: "exit-after-next-commit" };

type FromThread =
  | { t: "ready" }
  | { t: "fatal"; message: string }
  | { t: "closed" }
  | ({ t: "done"; id: number; epoch: number } & AppendResult)
  | { t: "failed"; id: number; epoch: number; message: string; skipped: boolean };

/**
 * The writer thread's body. Like createSqliteAppender it has no free variables: it is
 * run from its source text (`eval` worker), so the same code serves the compiled build
 * and the TypeScript sources under the test runner, with no separate worker file to find.
 */
function writerThreadMain(env: {
  port: MessagePort;
  data: WriterThreadData;
  Database: typeof DatabaseCtor;
  hash: typeof Hash;
  createSqliteAppender: typeof createSqliteAppender;
  receiveMessageOnPort: typeof receiveMessageOnPort;
}): void {
  const { port, data } = env;
  let db: DatabaseCtor.Database;
  let append: (b: PackedBatch[]) => AppendResult[];
  try {
    db = new env.Database(data.file);
    // The store's pragmas (src/store/open-store.ts): every commit is fsynced.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma(`busy_timeout = ${data.busyTimeoutMs}`);
    db.pragma("foreign_keys = ON");
    append = env.createSqliteAppender(db, env.hash);
  } catch (e) {
    port.postMessage({ t: "fatal", message: (e as Error).message });
    return;
  }
  let failedEpoch = -1;
  let exitAfterCommit = false;
  let closeAfter = false;

  const skip = (m: { id: number; epoch: number }) =>
    port.postMessage({
      t: "failed",
      id: m.id,
      epoch: m.epoch,
      message: "skipped after an earlier batch failed",
      skipped: true,
    });

  const control = (m: ToThread) => {
    if (m.t === "close") closeAfter = true;
    else if (m.t === "exit-after-next-commit" && data.testHooks) exitAfterCommit = true;
  };

  const appendQueued = (first: ToThread & { t: "append" }) => {
    // Batches already queued join this transaction (up to maxMergedRows): under load the
    // transactions grow, when idle each batch commits at once.
    const group = [first];
    let rows = first.batch.n;
    while (rows < data.maxMergedRows) {
      const next = env.receiveMessageOnPort(port)?.message as ToThread | undefined;
      if (!next) break;
      if (next.t !== "append") control(next);
      else if (next.epoch === failedEpoch) skip(next);
      else {
        group.push(next);
        rows += next.batch.n;
      }
    }
    let results: AppendResult[];
    try {
      results = append(group.map((m) => m.batch));
    } catch (e) {
      failedEpoch = first.epoch;
      const code = (e as { code?: string }).code;
      const msg = (e as Error).message;
      port.postMessage({
        t: "failed",
        id: first.id,
        epoch: first.epoch,
        message: code && !msg.includes(code) ? `${code}: ${msg}` : msg,
        skipped: false,
      });
      for (const m of group.slice(1)) skip(m);
      return;
    }
    // Test hook: die after the commit and before the acknowledgement.
    if (exitAfterCommit) process.exit(70);
    group.forEach((m, i) =>
      port.postMessage({ t: "done", id: m.id, epoch: m.epoch, ...results[i]! }),
    );
  };

  port.on("message", (m: ToThread) => {
    if (m.t === "append") {
      if (m.epoch === failedEpoch) skip(m);
      else appendQueued(m);
    } else control(m);
    if (closeAfter) {
      db.close();
      port.postMessage({ t: "closed" });
      port.close();
    }
  });
  port.postMessage({ t: "ready" });
}

let source: string | undefined;
function threadSource(): string {
  source ??= [
    '"use strict";',
    'const { parentPort, workerData, receiveMessageOnPort } = require("node:worker_threads");',
    'const { hash } = require("node:crypto");',
    "const Database = require(workerData.betterSqlite3);",
    `const createSqliteAppender = (${createSqliteAppender.toString()});`,
    `(${writerThreadMain.toString()})({ port: parentPort, data: workerData, Database, hash, createSqliteAppender, receiveMessageOnPort });`,
  ].join("\n");
  return source;
}

export interface WriterThreadEvents {
  /** A batch was committed. Called in the order batches were sent. */
  done(id: number, result: AppendResult): void;
  /**
   * Batch `id` was not written; neither was any batch sent after it (they are skipped
   * until `nextEpoch`). `uncertain`: the thread died, so a batch in flight may have been
   * committed without its acknowledgement.
   */
  failed(id: number, error: Error, uncertain: boolean): void;
}

export interface WriterThreadOptions {
  file: string;
  busyTimeoutMs?: number;
  maxMergedRows?: number;
  /** Enables the fault-injection message used by the tests (never set in production). */
  testHooks?: boolean;
}

/**
 * One `node:worker_threads` writer owning its own better-sqlite3 connection to the
 * store's file. Batches are sent as they come (several may be in flight); the thread
 * appends them in order, one transaction each, and acknowledges each commit.
 */
export class WriterThread {
  readonly #o: WriterThreadOptions;
  readonly #events: WriterThreadEvents;
  #worker: Worker | undefined;
  #epoch = 0;
  #nextId = 1;
  /** Ids in flight, oldest first. */
  #inflight: number[] = [];
  #closing: Promise<void> | undefined;
  #fatal: string | undefined;

  constructor(options: WriterThreadOptions, events: WriterThreadEvents) {
    this.#o = options;
    this.#events = events;
  }

  /** Set once the thread could not even open the database: use another path. */
  get fatal(): string | undefined {
    return this.#fatal;
  }

  /** A thread is running (started by the first batch, until it exits or is closed). */
  get started(): boolean {
    return this.#worker !== undefined;
  }

  get inflight(): number {
    return this.#inflight.length;
  }

  /** Sends a batch; returns its id. The outcome arrives through the events. */
  send(batch: PackedBatch): number {
    const w = this.#ensure();
    const id = this.#nextId++;
    w.postMessage({ t: "append", id, epoch: this.#epoch, batch } satisfies ToThread);
    this.#inflight.push(id);
    w.ref();
    return id;
  }

  /** Asks the thread to exit right after its next commit, before acknowledging it (tests). */
  exitAfterNextCommit(): void {
    this.#ensure().postMessage({ t: "exit-after-next-commit" } satisfies ToThread);
  }

  /** Closes the connection and ends the thread (after the batches in flight). */
  close(): Promise<void> {
    const w = this.#worker;
    if (!w) return Promise.resolve();
    this.#closing ??= new Promise<void>((res) => {
      w.ref();
      w.once("exit", () => res());
      w.postMessage({ t: "close" } satisfies ToThread);
    }).finally(() => {
      this.#worker = undefined;
      this.#closing = undefined;
    });
    return this.#closing;
  }

  #ensure(): Worker {
    if (this.#worker) return this.#worker;
    const data: WriterThreadData = {
      file: this.#o.file,
      betterSqlite3: createRequire(import.meta.url).resolve("better-sqlite3"),
      busyTimeoutMs: this.#o.busyTimeoutMs ?? 5_000,
      maxMergedRows: this.#o.maxMergedRows ?? MAX_MERGED_ROWS,
      testHooks: this.#o.testHooks ?? false,
    };
    const w = new Worker(threadSource(), { eval: true, workerData: data });
    w.unref();
    let lastError: Error | undefined;
    w.on("message", (m: FromThread) => this.#onMessage(m));
    w.on("error", (e) => (lastError = e));
    w.on("exit", (code) => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      const lost = this.#inflight;
      this.#inflight = [];
      this.#epoch++;
      if (lost.length === 0) return;
      const why = new Error(
        `audit writer thread exited (code ${code})${lastError ? `: ${lastError.message}` : ""}`,
      );
      this.#events.failed(lost[0]!, why, true);
    });
    this.#worker = w;
    return w;
  }

  #onMessage(m: FromThread): void {
    if (m.t === "done" || m.t === "failed") {
      if (m.epoch !== this.#epoch || this.#inflight[0] !== m.id) return; // skipped earlier
      if (m.t === "done") {
        this.#inflight.shift();
        if (this.#inflight.length === 0) this.#worker?.unref();
        this.#events.done(m.id, m);
        return;
      }
      // This batch and every one after it are not written: start a new epoch.
      this.#inflight = [];
      this.#epoch++;
      this.#worker?.unref();
      this.#events.failed(m.id, new Error(m.message), false);
    } else if (m.t === "fatal") {
      this.#fatal = m.message;
      void this.#worker?.terminate();
    }
  }
}
