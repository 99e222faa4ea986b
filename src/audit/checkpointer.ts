import { open, readFile } from "node:fs/promises";
import type { KeyObject } from "node:crypto";
import type { Store } from "../store/index.js";
import type { Clock } from "../core/clock.js";
import type { KeyStore } from "../keys/index.js";
import { ZtError } from "../core/errors.js";
import { discardBody } from "../core/discard-body.js";
import {
  parseCheckpoint,
  signCheckpoint,
  splitCheckpointNotes,
  verifyCheckpointSignature,
  type Checkpoint,
  type SignedCheckpoint,
} from "./checkpoint-note.js";
import {
  CHECKPOINT_KEY_PURPOSE,
  checkChainLeadsOn,
  trustedCheckpointKeys,
  type TrustedHead,
} from "./audit-verify.js";
import type { ChainProblem } from "./chain-verifier.js";
import type { AuditLog } from "./audit-log.js";
import { countCheckpoint } from "./metrics.js";
import { raiseAlert } from "./alerts/raise-alert.js";
import type { Alert } from "./alerts/alert-engine.js";
import { formatSyslog, SyslogClient, type SyslogOptions } from "./sinks/syslog-client.js";

/** Somewhere outside the database a checkpoint is copied to, so a rewrite of the tail shows. */
export interface Witness {
  readonly name: string;
  push(note: string, checkpoint: Checkpoint): Promise<void>;
  /**
   * The notes the witness holds, oldest first. Only witnesses that can be read back have
   * it (the file): a process starting up takes the last head it signed from here, where
   * someone who can write the database cannot change it.
   */
  read?(): Promise<string[]>;
  /** Releases a connection the witness holds, if any. */
  close?(): Promise<void>;
}

/**
 * Appends every checkpoint note to a file, separated by a blank line, so each signed
 * head stays on record: a later note can never replace an older one, and `zt audit
 * verify` checks them all. The append is synced before the checkpoint counts as pushed.
 */
export function fileWitness(path: string): Witness {
  return {
    name: `file:${path}`,
    async push(note) {
      const file = await open(path, "a", 0o644);
      try {
        const { size } = await file.stat();
        // One write per note, so notes appended by two processes never mix.
        await file.write(size > 0 ? `\n${note}` : note);
        await file.datasync();
      } finally {
        await file.close();
      }
    },
    async read() {
      let text: string;
      try {
        text = await readFile(path, "utf8");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw e;
      }
      return splitCheckpointNotes(text);
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
        redirect: "manual", // a redirect is a failure: the witness is the URL configured
        signal: AbortSignal.timeout(timeoutMs),
      });
      await discardBody(res);
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
  /** Told about witness and alert-webhook failures (never thrown). */
  onWitnessError?: (witness: string, error: unknown) => void;
  /**
   * The only keys a witness's notes may be signed with (`audit.checkpoint_public_key`);
   * default: every audit-checkpoint key in the database.
   */
  publicKeys?: KeyObject[];
  /**
   * Told once when the chain stops leading on from the last signed head, so nothing is
   * signed: log it as an error. The alert is also stored, counted, audited and POSTed.
   */
  onChainBroken?: (problem: ChainProblem) => void;
  /** Where the chain-broken alert is written as a `kind: alert` event. */
  audit?: AuditLog;
  /** `alerts.webhook`: the chain-broken alert is POSTed there like the rules' alerts. */
  alertWebhook?: string;
}

/** The alert rule name of a chain that no longer leads on from its last signed head. */
export const CHAIN_BROKEN_RULE = "audit-chain-broken";

/**
 * Writes signed checkpoints of the chain head every N events or T milliseconds,
 * stores them in `audit_checkpoints`, and pushes them to the witnesses.
 *
 * Before signing it re-hashes the chain from the last head it trusts to the new head:
 * the head this process last signed (kept in memory), or at start-up the newest note
 * of a witness that can be read back and the newest stored checkpoint. A head that no
 * longer leads on from it (a deleted tail, a rewritten and re-hashed event) is never
 * signed, since the signature would vouch for the forgery with the real key and the
 * witness would then carry it.
 */
export class Checkpointer {
  readonly #o: CheckpointerOptions;
  #lastSize = -1;
  #lastAt = 0;
  /** Heads the chain must still pass through; undefined until loaded at the first write. */
  #trusted: TrustedHead[] | undefined;
  /** Set while the chain does not lead on from them: nothing is signed, one alert raised. */
  #broken: ChainProblem | undefined;
  /** Refused or the witness unreadable: retried once per interval, not on every write. */
  #holding = false;
  #running: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: CheckpointerOptions) {
    this.#o = options;
  }

  /**
   * Signs and stores a checkpoint of the current head (if it moved). Returns the note.
   * Rejects with ZT_AUDIT_CHAIN_BROKEN, signing nothing, when the chain does not lead on
   * from the last signed head.
   */
  async checkpointNow(): Promise<string | undefined> {
    const next = this.#running.catch(() => undefined).then(() => this.#write());
    this.#running = next;
    return next;
  }

  /** Called after writes: checkpoints when `every` events have accumulated, or the interval passed. */
  maybeCheckpoint(headSeq: number): void {
    const sinceLast = this.#o.clock.now() - this.#lastAt;
    if (this.#holding) {
      if (sinceLast >= this.#o.intervalMs) void this.checkpointNow().catch(() => undefined);
      return;
    }
    if (this.#lastSize < 0) {
      void this.checkpointNow().catch(() => undefined);
      return;
    }
    const due =
      headSeq - this.#lastSize >= this.#o.every ||
      (headSeq > this.#lastSize && sinceLast >= this.#o.intervalMs);
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
    let problem: ChainProblem | undefined;
    if (!this.#trusted) {
      const loaded = await this.#loadTrusted();
      if ("problem" in loaded) problem = loaded.problem;
      else this.#trusted = loaded.heads;
    }
    const row = await store.db
      .selectFrom("audit_events")
      .select(["seq", "hash"])
      .orderBy("seq", "desc")
      .limit(1)
      .executeTakeFirst();
    const head = { seq: row ? Number(row.seq) : 0, hash: row?.hash ?? "" };
    problem ??= await checkChainLeadsOn(store, this.#trusted ?? [], head);
    if (problem) {
      await this.#refuse(problem);
      throw new ZtError(
        "ZT_AUDIT_CHAIN_BROKEN",
        `refusing to sign an audit checkpoint: ${problem.kind} at seq ${problem.seq}: ${problem.detail}`,
      );
    }
    this.#broken = undefined;
    this.#holding = false;
    const newest = (this.#trusted ?? []).reduce<TrustedHead | undefined>(
      (a, b) => (a && a.size >= b.size ? a : b),
      undefined,
    );
    // Checked through the newest: it alone is the anchor from now on.
    this.#trusted = newest ? [newest] : [];
    if (!head.hash || head.seq <= (newest?.size ?? 0)) return undefined;

    const key = await this.#o.keys.activeKey(CHECKPOINT_KEY_PURPOSE, "EdDSA");
    const cp: Checkpoint = { origin: this.#o.origin, size: head.seq, headHash: head.hash };
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
    this.#trusted = [{ size: cp.size, headHash: cp.headHash, source: "signed by this process" }];
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

  /**
   * The heads a process starting up trusts: the newest stored checkpoint (all there is
   * without a witness) and the newest note of each witness that can be read back, whose
   * signature must verify. A witness that cannot be read stops the signing (rejects)
   * rather than fall back to the database alone.
   */
  async #loadTrusted(): Promise<{ heads: TrustedHead[] } | { problem: ChainProblem }> {
    const { store } = this.#o;
    const last = await store.db
      .selectFrom("audit_checkpoints")
      .select(["size", "ts", "head_hash"])
      .orderBy("size", "desc")
      .limit(1)
      .executeTakeFirst();
    const heads: TrustedHead[] = last
      ? [{ size: Number(last.size), headHash: last.head_hash, source: "audit_checkpoints" }]
      : [];
    const readable = (this.#o.witnesses ?? []).filter((w) => w.read);
    const pinned = this.#o.publicKeys ?? [];
    const keys = readable.length
      ? await trustedCheckpointKeys(store, { publicKeys: pinned, onlyGivenKeys: pinned.length > 0 })
      : [];
    for (const w of readable) {
      let notes: SignedCheckpoint[];
      try {
        notes = (await w.read!()).map(parseCheckpoint);
      } catch (e) {
        this.#o.onWitnessError?.(w.name, e);
        this.#holding = true;
        this.#lastAt = this.#o.clock.now();
        throw e;
      }
      let newest: TrustedHead | undefined;
      for (const cp of notes) {
        if (!keys.some((k) => verifyCheckpointSignature(cp, k))) {
          return {
            problem: {
              seq: cp.size,
              kind: "checkpoint-signature",
              detail: `the checkpoint at size ${cp.size} in witness ${w.name} is not signed by a trusted audit key`,
            },
          };
        }
        if (!newest || cp.size > newest.size)
          newest = { size: cp.size, headHash: cp.headHash, source: `witness ${w.name}` };
      }
      if (newest) heads.push(newest);
    }
    this.#lastSize = Math.max(0, ...heads.map((h) => h.size));
    this.#lastAt = last ? Number(last.ts) : 0;
    return { heads };
  }

  /** Stops signing and, the first time, raises the alert everywhere alerts go. */
  async #refuse(problem: ChainProblem): Promise<void> {
    const { store, clock, origin } = this.#o;
    const first = this.#broken === undefined;
    this.#broken = problem;
    this.#holding = true;
    const ts = clock.now();
    this.#lastAt = ts;
    if (!first) return;
    this.#o.onChainBroken?.(problem);
    const alert: Alert = {
      rule: CHAIN_BROKEN_RULE,
      severity: "critical",
      key: `audit:${origin}`,
      message: `the audit chain no longer leads on from its last signed checkpoint (${problem.kind} at seq ${problem.seq}); no checkpoint is signed until this is investigated`,
      seq: problem.seq,
      ts,
      data: { kind: problem.kind, detail: problem.detail },
    };
    // The database may be the thing that was tampered with: the alert goes out anyway.
    await raiseAlert(alert, {
      store,
      audit: this.#o.audit,
      webhook: this.#o.alertWebhook,
      onWebhookError: (e) => this.#o.onWitnessError?.("alerts.webhook", e),
      bestEffortStore: true,
    });
  }
}
