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
}

interface Building<T> {
  generation: number;
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
        const b: Building<T> = { generation, built: this.#start() };
        const done = () => {
          if (this.#building === b) this.#building = undefined;
        };
        b.built.then(done, done);
        this.#building = building = b;
      }
      const built = await building.built;
      last = built.value;
      if (building.generation === this.#generation) {
        this.#cached = built;
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

  #start(): Promise<BuiltList<T>> {
    this.#o.onBuild?.();
    return this.#o.build(this.#o.clock.now());
  }
}
