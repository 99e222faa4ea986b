import type { Clock } from "../core/clock.js";
import { formatDuration } from "../core/duration.js";
import type { PkiSettings } from "./pki-config.js";
import type { IntermediateCheckResult, PkiService } from "./pki-service.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

export interface IntermediateRotationOptions {
  /** Time between checks. Default: an hour, or a quarter of rotate_before if shorter (≥ 1 min). */
  intervalMs?: number;
  /** Problems: a failed check, a rotation that is due but will not happen. */
  warn?: (message: string) => void;
  /** A rotation this process made. */
  info?: (message: string) => void;
}

/** The last check, for `/readyz` (times in ms since the epoch). */
export interface IntermediateRotationStatus {
  auto_rotate: boolean;
  rotate_before_ms: number;
  last_check_at: number | null;
  /** The last check's outcome, or `failed`; null before the first check ends. */
  last_outcome: IntermediateCheckResult["outcome"] | "failed" | null;
  intermediate: string | null;
  intermediate_not_after: number | null;
  last_error: string | null;
}

/**
 * Runs {@link PkiService.checkIntermediateRotation} at start and then every
 * `intervalMs` (timer unref'd), reporting through `warn` / `info`. A failed check is
 * reported and tried again at the next period; it never throws out of the timer.
 * Each pass also prunes the consumed renewal proofs that no longer matter
 * ({@link PkiService.pruneRenewProofs}); a failure there is reported the same way.
 */
export class IntermediateRotationRunner {
  readonly #service: () => Promise<PkiService>;
  readonly #settings: PkiSettings;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #warn: (message: string) => void;
  readonly #info: (message: string) => void;
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<IntermediateCheckResult | undefined> | undefined;
  #stopped = false;
  #status: IntermediateRotationStatus;

  constructor(
    service: () => Promise<PkiService>,
    settings: PkiSettings,
    clock: Clock,
    options: IntermediateRotationOptions = {},
  ) {
    this.#service = service;
    this.#settings = settings;
    this.#clock = clock;
    this.#intervalMs =
      options.intervalMs ??
      Math.min(HOUR, Math.max(MINUTE, Math.floor(settings.intermediateRotateBeforeMs / 4)));
    this.#warn = options.warn ?? (() => undefined);
    this.#info = options.info ?? (() => undefined);
    this.#status = {
      auto_rotate: settings.autoRotate,
      rotate_before_ms: settings.intermediateRotateBeforeMs,
      last_check_at: null,
      last_outcome: null,
      intermediate: null,
      intermediate_not_after: null,
      last_error: null,
    };
  }

  /** First check now (in the background), then one per interval. */
  start(): void {
    if (this.#timer || this.#stopped) return;
    void this.checkNow();
    this.#timer = setInterval(() => void this.checkNow(), this.#intervalMs);
    this.#timer.unref();
  }

  /**
   * Runs a check, or joins the one in flight. Resolves with its result, or undefined
   * when it failed (already reported) or the runner is stopped.
   */
  checkNow(): Promise<IntermediateCheckResult | undefined> {
    if (this.#stopped) return Promise.resolve(undefined);
    this.#inFlight ??= this.#pass().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  status(): IntermediateRotationStatus {
    return { ...this.#status };
  }

  /** Stops the timer and waits for a check in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
  }

  async #pass(): Promise<IntermediateCheckResult | undefined> {
    const r = await this.#check();
    try {
      await (await this.#service()).pruneRenewProofs();
    } catch (e) {
      this.#warn(
        `pruning consumed renewal proofs failed (retrying in ${formatDuration(this.#intervalMs)}): ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    return r;
  }

  async #check(): Promise<IntermediateCheckResult | undefined> {
    const at = this.#clock.now();
    try {
      const r = await (await this.#service()).checkIntermediateRotation();
      this.#status = {
        ...this.#status,
        last_check_at: at,
        last_outcome: r.outcome,
        intermediate: r.intermediate,
        intermediate_not_after: r.notAfterMs,
        last_error: null,
      };
      this.#report(r, at);
      return r;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.#status = {
        ...this.#status,
        last_check_at: at,
        last_outcome: "failed",
        last_error: message,
      };
      this.#warn(
        `intermediate CA rotation check failed (retrying in ${formatDuration(this.#intervalMs)}): ${message}`,
      );
      return undefined;
    }
  }

  #report(r: IntermediateCheckResult, now: number): void {
    const expiry = (ms: number | null) =>
      ms === null
        ? "has expired (issuance is stopped)"
        : `expires at ${new Date(ms).toISOString()} (in ${formatDuration(Math.max(0, ms - now))})`;
    const current = r.intermediate ?? "(none active)";
    switch (r.outcome) {
      case "rotated":
        this.#info(
          `rotated the intermediate CA: ${r.intermediate} replaces ${r.previous ?? "(none active)"}; it ${expiry(r.notAfterMs)}`,
        );
        return;
      case "due-auto-rotate-off":
        this.#warn(
          `the intermediate CA ${current} ${expiry(r.notAfterMs)}, within pki.intermediate_rotate_before ` +
            `(${formatDuration(this.#settings.intermediateRotateBeforeMs)}), and pki.auto_rotate is false: ` +
            "run `zt ca rotate-intermediate`",
        );
        return;
      case "root-expiring":
        this.#warn(
          `the intermediate CA ${current} ${expiry(r.notAfterMs)}; a new one cannot last longer because ` +
            "the root CA expires then too (pki.root_ttl): plan a new root",
        );
        return;
      case "not-due":
        return;
    }
  }
}
