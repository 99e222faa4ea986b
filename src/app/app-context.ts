import { existsSync, statSync } from "node:fs";
import type { ZtConfig } from "../config/index.js";
import { ZtError } from "../core/errors.js";
import { openStore, type Store } from "../store/index.js";
import { systemClock, type Clock } from "../core/clock.js";
import type { SecretBox } from "../core/secret-box.js";
import { KeyStore, loadMasterKey } from "../keys/index.js";
import { StoreEventBus, type EventBus } from "../events/index.js";
import { AuditLog } from "../audit/index.js";

/**
 * The composition root's shared parts: config, store, clock, key material, event bus,
 * audit log. Capabilities build their services from this; nothing here decides anything.
 */
export interface AppContext {
  readonly config: ZtConfig;
  readonly store: Store;
  readonly clock: Clock;
  readonly box: SecretBox;
  readonly keys: KeyStore;
  readonly events: EventBus;
  readonly audit: AuditLog;
  readonly env: Readonly<Record<string, string | undefined>>;
  close(): Promise<void>;
}

export interface OpenAppContextOptions {
  clock?: Clock;
  env?: Record<string, string | undefined>;
  /** Create the master key when missing (init / up). */
  create?: boolean;
  /**
   * Make the store when there is none (default true). The CLI passes false for every
   * command but those that set a store up: see StoreOptions.create.
   */
  createStore?: boolean;
}

export async function openAppContext(
  config: ZtConfig,
  options: OpenAppContextOptions = {},
): Promise<AppContext> {
  const env = options.env ?? {};
  const clock = options.clock ?? systemClock;
  // Checked first: the master key and the database would otherwise report a path under it.
  if (existsSync(config.data_dir) && !statSync(config.data_dir).isDirectory())
    throw new ZtError(
      "ZT_CONFIG_INVALID",
      `data_dir: ${config.data_dir} exists and is not a directory`,
      { key: "data_dir", path: config.data_dir },
    );
  const box = loadMasterKey({
    dataDir: config.data_dir,
    masterKeyFile: config.master_key_file,
    envValue: env["ZT_MASTER_KEY"],
    create: options.create ?? false,
  });
  const store = await openStore({
    dataDir: config.data_dir,
    databaseUrl: config.database_url,
    create: options.createStore ?? true,
  });
  const keys = new KeyStore(store, box, clock);
  const events = new StoreEventBus(store, { clock });
  const audit = new AuditLog(store, { clock });
  let closed = false;
  return {
    config,
    store,
    clock,
    box,
    keys,
    events,
    audit,
    env,
    async close() {
      if (closed) return;
      closed = true;
      await events.stop();
      await audit.close();
      await store.close();
    },
  };
}
