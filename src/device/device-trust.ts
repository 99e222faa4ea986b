import type { AppContext } from "../app/index.js";
import type { CedarValue, EntityStore } from "../policy/index.js";
import type { DevicesTable } from "../store/index.js";
import type { DevicesConfig } from "./device-config.js";
import { deviceInfoFromRow, type DeviceInfo } from "./device-service.js";
import { isCompliantAt } from "./posture-score.js";
import { LatestReads } from "../core/latest-reads.js";

/** The slice of decision facts device trust looks at. */
export interface SessionFacts {
  sessionId?: string | undefined;
}

/**
 * The hot-path picture of devices: every device and which session is bound to which
 * device, in memory. Contributes `context.device` ({ compliant, score, os }) for a
 * session bound to a device, and keeps `Device::"…"` entities (owner = the user) in the
 * policy entity store. Compliance is evaluated against the clock at decision time, so
 * an expired report counts at once, before any timer fires.
 */
export class DeviceTrust {
  readonly #ctx: AppContext;
  readonly #config: DevicesConfig;
  readonly #entities: EntityStore;
  readonly #devices = new Map<string, DeviceInfo>();
  readonly #deviceOfSession = new Map<string, string>();
  /** Refreshes of a device in flight: only the newest applies (see LatestReads). */
  readonly #reads = new LatestReads<string>();

  constructor(ctx: AppContext, config: DevicesConfig, entities: EntityStore) {
    this.#ctx = ctx;
    this.#config = config;
    this.#entities = entities;
  }

  async load(): Promise<void> {
    const rows = await this.#ctx.store.db
      .selectFrom("devices")
      .innerJoin("users", "users.id", "devices.user_id")
      .selectAll("devices")
      .select("users.name as user_name")
      .execute();
    for (const r of rows) this.#put(r, r.user_name);
    const bound = await this.#ctx.store.db
      .selectFrom("sessions")
      .select(["id", "device_id"])
      .where("device_id", "is not", null)
      .where("revoked_at", "is", null)
      .where("expires_at", ">", this.#ctx.clock.now())
      .execute();
    for (const b of bound) if (b.device_id) this.#deviceOfSession.set(b.id, b.device_id);
  }

  /**
   * Re-reads one device (after `device.changed`); returns it, or undefined when gone. A
   * read overtaken by a newer refresh of the same device applies nothing and returns
   * what memory holds.
   */
  async refresh(deviceId: string): Promise<DeviceInfo | undefined> {
    const read = this.#reads.start(deviceId);
    try {
      const r = await this.#ctx.store.db
        .selectFrom("devices")
        .innerJoin("users", "users.id", "devices.user_id")
        .selectAll("devices")
        .select("users.name as user_name")
        .where("devices.id", "=", deviceId)
        .executeTakeFirst();
      if (!read.isLatest()) return this.#devices.get(deviceId);
      if (!r) {
        this.#devices.delete(deviceId);
        this.#entities.remove({ type: "Device", id: deviceId });
        return undefined;
      }
      return this.#put(r, r.user_name);
    } finally {
      read.done();
    }
  }

  bindSession(sessionId: string, deviceId: string): void {
    this.#deviceOfSession.set(sessionId, deviceId);
  }

  forgetSession(sessionId: string): void {
    this.#deviceOfSession.delete(sessionId);
  }

  device(deviceId: string): DeviceInfo | undefined {
    return this.#devices.get(deviceId);
  }

  deviceOfSession(sessionId: string): DeviceInfo | undefined {
    const id = this.#deviceOfSession.get(sessionId);
    return id === undefined ? undefined : this.#devices.get(id);
  }

  sessionsOfDevice(deviceId: string): string[] {
    const out: string[] = [];
    for (const [s, d] of this.#deviceOfSession) if (d === deviceId) out.push(s);
    return out;
  }

  /** Effective compliance now (approved, compliant report, not older than the interval). */
  compliantNow(d: DeviceInfo): boolean {
    return isCompliantAt(d, this.#ctx.clock.now(), this.#config.reportIntervalMs);
  }

  /**
   * Devices whose last report has aged past the interval since `since` (the periodic
   * pass). Their `Device::"…"` entities are set non-compliant here: `context.device` is
   * judged at decision time, but an entity attribute is what was last put.
   */
  expiredSince(since: number, now: number): DeviceInfo[] {
    const out: DeviceInfo[] = [];
    for (const d of this.#devices.values()) {
      if (d.status !== "approved" || !d.compliant || d.lastReportAt === null) continue;
      const expiry = d.lastReportAt + this.#config.reportIntervalMs;
      if (expiry > since && expiry <= now) out.push(d);
    }
    for (const d of out) this.#upsertEntity(d, this.compliantNow(d));
    return out;
  }

  /** Context contributor: `context.device` for a session bound to a known device. */
  contribute(facts: SessionFacts): Record<string, CedarValue> | undefined {
    if (!facts.sessionId) return undefined;
    const d = this.deviceOfSession(facts.sessionId);
    if (!d) return undefined;
    const device: Record<string, CedarValue> = { compliant: this.compliantNow(d), score: d.score };
    if (d.os) device["os"] = d.os;
    return { device };
  }

  #put(r: DevicesTable, userName: string): DeviceInfo {
    const info = deviceInfoFromRow(r, userName, this.#ctx.clock.now(), this.#config);
    this.#devices.set(info.id, info);
    this.#upsertEntity(info, info.compliantNow);
    return info;
  }

  /** The `Device::"…"` entity, with `compliant` as judged now (`compliant`). */
  #upsertEntity(info: DeviceInfo, compliant: boolean): void {
    const attrs: Record<string, CedarValue> = {
      owner: { __entity: { type: "User", id: info.userName } },
      compliant,
      score: info.score,
    };
    if (info.os) attrs["os"] = info.os;
    if (info.lastReportAt !== null) attrs["last_seen"] = Math.floor(info.lastReportAt / 1000);
    this.#entities.upsert({ uid: { type: "Device", id: info.id }, attrs, parents: [] });
  }
}
