import type { Clock } from "../core/clock.js";

/** A built list and the instant it must be built again by (before its own validity ends). */
export interface BuiltList<T> {
  value: T;
  refreshAtMs: number;
}

export interface RevocationListCacheOptions<T> {
  clock: Clock;
  /** Reads the store and builds the list as of `nowMs`. */
  build: (nowMs: number) => Promise<BuiltList<T>>;
  /** Called once per build started (for the builds metric). */
  onBuild?: () => void;
  /**
   * The longest a build is served, whatever its own refresh time (default a minute): a
   * revocation whose event never arrived (the store took the change, the publish failed;
   * a row edited by hand) is listed within this long.
   */
  maxAgeMs?: number;
}

/** See `RevocationListCacheOptions.maxAgeMs`. */
export const REVOCATION_LIST_MAX_AGE_MS = 60_000;

interface Building<T> {
  generation: number;
  startedAtMs: number;
  built: Promise<BuiltList<T>>;
}

/** Builds again while invalidations keep arriving, at most this many times per call. */
const MAX_ATTEMPTS = 3;

/**
 * A revocation list (CRL, KRL) served from memory. Concurrent callers share one build
 * (single flight); the list is rebuilt when its refresh time passes and after every
 * `invalidate()`. Call `invalidate()` once a revocation has committed (made here, or heard
 * as an event): a build that started before it may have read the store before that
 * commit, so it is neither shared with later callers nor cached, and its callers build
 * again (up to three times while revocations keep arriving; then they get the last one,
 * uncached).
 */
export class RevocationListCache<T> {
  readonly #o: RevocationListCacheOptions<T>;
  #generation = 0;
  #cached: BuiltList<T> | undefined;
  #building: Building<T> | undefined;

  constructor(options: RevocationListCacheOptions<T>) {
    this.#o = options;
  }

  /** The current list: cached, or from the build under way, or a new build. */
  async get(): Promise<T> {
    let last: T | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const generation = this.#generation;
      const cached = this.#cached;
      if (cached && this.#o.clock.now() < cached.refreshAtMs) return cached.value;
      let building = this.#building;
      if (!building || building.generation !== generation) {
        const startedAtMs = this.#o.clock.now();
        const b: Building<T> = { generation, startedAtMs, built: this.#start(startedAtMs) };
        const done = () => {
          if (this.#building === b) this.#building = undefined;
        };
        b.built.then(done, done);
        this.#building = building = b;
      }
      const built = await building.built;
      last = built.value;
      if (building.generation === this.#generation) {
        const maxAgeMs = this.#o.maxAgeMs ?? REVOCATION_LIST_MAX_AGE_MS;
        this.#cached = {
          value: built.value,
          refreshAtMs: Math.min(built.refreshAtMs, building.startedAtMs + maxAgeMs),
        };
        return built.value;
      }
    }
    return last as T;
  }

  /** Forgets the cached list; builds already under way are no longer shared or cached. */
  invalidate(): void {
    this.#generation++;
    this.#cached = undefined;
  }

  #start(nowMs: number): Promise<BuiltList<T>> {
    this.#o.onBuild?.();
    return this.#o.build(nowMs);
  }
}
