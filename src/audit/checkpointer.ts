import { rename, writeFile } from "node:fs/promises";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type { KeyStore } from "../keys/index.js";
import { signCheckpoint, type Checkpoint } from "./checkpoint-note.js";
import { CHECKPOINT_KEY_PURPOSE } from "./audit-verify.js";
import { countCheckpoint } from "./metrics.js";
import { formatSyslog, SyslogClient, type SyslogOptions } from "./sinks/syslog-client.js";

/** Somewhere outside the database a checkpoint is copied to, so a rewrite of the tail shows. */
export interface Witness {
  readonly name: string;
  push(note: string, checkpoint: Checkpoint): Promise<void>;
  /** Releases a connection the witness holds, if any. */
  close?(): Promise<void>;
}

/** Keeps the newest checkpoint note in a file (written atomically). */
export function fileWitness(path: string): Witness {
  return {
    name: `file:${path}`,
    async push(note) {
      const tmp = `${path}.tmp-${process.pid}`;
      await writeFile(tmp, note, { mode: 0o644 });
      await rename(tmp, path);
    },
  };
}

/** POSTs `{ origin, size, head_hash, note }` as JSON to a URL. */
export function webhookWitness(url: string, timeoutMs = 5_000): Witness {
  return {
    name: `webhook:${url}`,
    async push(note, cp) {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ origin: cp.origin, size: cp.size, head_hash: cp.headHash, note }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) throw new Error(`witness webhook answered ${res.status}`);
    },
  };
}

/**
 * Sends each checkpoint as one RFC 5424 message (facility log audit, severity notice,
 * MSGID `audit.checkpoint`, structured data `size` and `origin`) whose MSG is the JSON
 * `{ origin, size, head_hash, note }`, over UDP, TCP or TLS (see SyslogClient).
 */
export function syslogWitness(options: SyslogOptions, clock: Clock): Witness {
  const client = new SyslogClient(options);
  return {
    name: `syslog:${options.host}:${options.port}`,
    push: (note, cp) =>
      client.send([
        formatSyslog({
          severity: 5,
          ts: clock.now(),
          host: client.host,
          appName: client.appName,
          msgId: "audit.checkpoint",
          sd: { size: String(cp.size), origin: cp.origin },
          msg: JSON.stringify({ origin: cp.origin, size: cp.size, head_hash: cp.headHash, note }),
        }),
      ]),
    close: () => client.close(),
  };
}

export interface CheckpointerOptions {
  store: Store;
  keys: KeyStore;
  clock: Clock;
  origin: string;
  /** Checkpoint after this many new events … */
  every: number;
  /** … or this long after the last one, if anything was written. */
  intervalMs: number;
  witnesses?: Witness[];
  /** Told about witness failures (never thrown). */
  onWitnessError?: (witness: string, error: unknown) => void;
}

/**
 * Writes signed checkpoints of the chain head every N events or T milliseconds,
 * stores them in `audit_checkpoints`, and pushes them to the witnesses.
 */
export class Checkpointer {
  readonly #o: CheckpointerOptions;
  #lastSize = -1;
  #lastAt = 0;
  #running: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: CheckpointerOptions) {
    this.#o = options;
  }

  /** Signs and stores a checkpoint of the current head (if it moved). Returns the note. */
  async checkpointNow(): Promise<string | undefined> {
    const next = this.#running.catch(() => undefined).then(() => this.#write());
    this.#running = next;
    return next;
  }

  /** Called after writes: checkpoints when `every` events have accumulated, or the interval passed. */
  maybeCheckpoint(headSeq: number): void {
    if (this.#lastSize < 0) {
      void this.checkpointNow().catch(() => undefined);
      return;
    }
    const due =
      headSeq - this.#lastSize >= this.#o.every ||
      (headSeq > this.#lastSize && this.#o.clock.now() - this.#lastAt >= this.#o.intervalMs);
    if (due) void this.checkpointNow().catch(() => undefined);
  }

  start(tickMs = Math.min(this.#o.intervalMs, 1_000)): void {
    this.#timer = setInterval(() => {
      void this.#headSeq()
        .then((h) => this.maybeCheckpoint(h))
        .catch(() => undefined);
    }, tickMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running.catch(() => undefined);
  }

  async #headSeq(): Promise<number> {
    const r = await this.#o.store.db
      .selectFrom("audit_events")
      .select((eb) => eb.fn.max("seq").as("m"))
      .executeTakeFirst();
    return Number(r?.m ?? 0);
  }

  async #write(): Promise<string | undefined> {
    const { store, clock } = this.#o;
    if (this.#lastSize < 0) {
      const last = await store.db
        .selectFrom("audit_checkpoints")
        .select(["size", "ts"])
        .orderBy("size", "desc")
        .limit(1)
        .executeTakeFirst();
      this.#lastSize = last ? Number(last.size) : 0;
      this.#lastAt = last ? Number(last.ts) : 0;
    }
    const head = await store.db
      .selectFrom("audit_events")
      .select(["seq", "hash"])
      .orderBy("seq", "desc")
      .limit(1)
      .executeTakeFirst();
    if (!head || !head.hash || Number(head.seq) <= this.#lastSize) return undefined;
    const key = await this.#o.keys.activeKey(CHECKPOINT_KEY_PURPOSE, "EdDSA");
    const cp: Checkpoint = { origin: this.#o.origin, size: Number(head.seq), headHash: head.hash };
    const note = signCheckpoint(cp, key.privateKey, key.publicKey);
    const ts = clock.now();
    await store.db
      .insertInto("audit_checkpoints")
      .values({
        size: cp.size,
        ts,
        origin: cp.origin,
        head_hash: cp.headHash,
        key_id: key.kid,
        note,
      })
      .onConflict((oc) => oc.column("size").doNothing())
      .execute();
    this.#lastSize = cp.size;
    this.#lastAt = ts;
    countCheckpoint();
    await Promise.all(
      (this.#o.witnesses ?? []).map((w) =>
        w.push(note, cp).catch((e: unknown) => this.#o.onWitnessError?.(w.name, e)),
      ),
    );
    return note;
  }
}
