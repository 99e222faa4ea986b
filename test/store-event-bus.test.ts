/**
 * Event bus conformance on SQLite and a real PostgreSQL: several bus instances on one
 * database stand for several processes (each has its own store, i.e. its own
 * connections). Every event published anywhere reaches every reader exactly once, in
 * one global seq order, with none lost across a lost LISTEN connection.
 */
import { describe, expect, it } from "vitest";
import { sql } from "kysely";
import { openStore, type Store } from "../src/store/index.js";
import { StoreEventBus, type ZtEvent } from "../src/events/index.js";
import { ManualClock, systemClock } from "../src/core/clock.js";
import {
  engines,
  perTestTargets,
  terminateConnections,
  waitFor,
  type Engine,
  type EngineTarget,
} from "./store-fixture.js";

const ENGINES = await engines();

describe.each(ENGINES)("event bus conformance: $name", (engine: Engine) => {
  const { target, cleanups } = perTestTargets(engine);
  /** One "process": its own store (connections) and bus. */
  async function proc(
    t: EngineTarget,
    options: { pollIntervalMs?: number; clock?: ManualClock } = {},
  ) {
    const store = await openStore(t.storeOptions);
    const bus = new StoreEventBus(store, {
      clock: options.clock ?? systemClock,
      ...(options.pollIntervalMs ? { pollIntervalMs: options.pollIntervalMs } : {}),
    });
    const seen: ZtEvent[] = [];
    bus.subscribe((e) => seen.push(e));
    await bus.start();
    cleanups.push(async () => {
      await bus.stop();
      await store.close();
    });
    return { store, bus, seen };
  }
  const seqs = (events: ZtEvent[]) => events.map((e) => e.seq);
  const ascending = (xs: number[]) => xs.every((x, i) => i === 0 || x > xs[i - 1]!);

  it("events published by one process reach another, in order, with their data", async () => {
    const t = await target();
    const a = await proc(t);
    const b = await proc(t);
    const published: ZtEvent[] = [];
    for (let i = 0; i < 40; i++) {
      published.push(
        await a.bus.publish(i % 2 ? "session.revoked" : "policy.changed", { i, who: "ünïcode" }),
      );
    }
    await waitFor(() => b.seen.length >= 40, "b to receive 40 events");
    expect(b.seen).toEqual(published);
    // the publisher hears its own events through the same ordered reader
    expect(a.seen).toEqual(published);
    expect(ascending(seqs(published))).toBe(true);
  });

  it("concurrent writers in 3 processes: every reader gets all events exactly once, in one order", async () => {
    const t = await target();
    const writers = await Promise.all([proc(t), proc(t), proc(t)]);
    const reader = await proc(t);
    const per = 25;
    await Promise.all(
      writers.map(async (w, wi) => {
        const pending: Promise<ZtEvent>[] = [];
        for (let i = 0; i < per; i++) pending.push(w.bus.publish("grant.changed", { w: wi, i }));
        await Promise.all(pending);
      }),
    );
    const total = per * writers.length;
    await waitFor(
      () => reader.seen.length >= total && writers.every((w) => w.seen.length >= total),
      "all events everywhere",
    );
    for (const p of [reader, ...writers]) {
      expect(p.seen.length).toBe(total);
      expect(ascending(seqs(p.seen))).toBe(true);
      expect(seqs(p.seen)).toEqual(seqs(reader.seen));
    }
    // exactly once: each writer's events, all of them, no duplicates
    for (let wi = 0; wi < writers.length; wi++) {
      const mine = reader.seen.filter((e) => e.data["w"] === wi).map((e) => Number(e.data["i"]));
      expect(mine.sort((x, y) => x - y)).toEqual([...Array(per).keys()]);
    }
  });

  it.runIf(engine.name === "postgres")(
    "a slow writer's lower seq is not skipped: appends are serialised so seq order is commit order",
    async () => {
      const t = await target();
      const slow = await proc(t);
      const fast = await proc(t);
      const reader = await proc(t, { pollIntervalMs: 5 });
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let slowSeq = 0;
      slow.bus.appendHooks = {
        beforeCommit: async (seq) => {
          slowSeq = seq;
          await held;
        },
      };
      const slowDone = slow.bus.publish("policy.changed", { who: "slow" });
      await waitFor(() => slowSeq > 0, "the slow writer to draw its seq");
      const fastDone = fast.bus.publish("policy.changed", { who: "fast" });
      // Without serialisation the fast writer would commit now, with the higher seq,
      // and a reader would deliver it and move past the slow one's seq for ever.
      // With it, the fast writer waits for the slow one's commit before drawing a seq.
      const waitingOnLock = async () => {
        const r = await sql<{
          n: number;
        }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`.execute(
          reader.store.db,
        );
        return r.rows[0]!.n > 0;
      };
      await Promise.race([
        fastDone,
        waitFor(waitingOnLock, "the fast writer to wait for the lock"),
      ]);
      await reader.bus.catchUp();
      release();
      const [s, f] = await Promise.all([slowDone, fastDone]);
      expect(f.seq).toBeGreaterThan(s.seq);
      await waitFor(() => reader.seen.length >= 2, "both events");
      expect(reader.seen.map((e) => e.data["who"])).toEqual(["slow", "fast"]);
    },
  );

  it.runIf(engine.name === "postgres")(
    "LISTEN connection lost: it reconnects and nothing published meanwhile is lost",
    async () => {
      const t = await target();
      const a = await proc(t);
      // a huge poll interval: only NOTIFY and the catch-up after reconnecting deliver
      const b = await proc(t, { pollIntervalMs: 3_600_000 });
      expect(b.bus.listening()).toBe(true);
      await a.bus.publish("user.disabled", { n: 0 });
      await waitFor(() => b.seen.length === 1, "delivery by NOTIFY");
      for (let round = 1; round <= 2; round++) {
        expect(await terminateConnections(t.database!, "zt-events-listen")).toBeGreaterThan(0);
        await waitFor(() => !b.bus.listening(), "b to notice the lost connection");
        for (let i = 0; i < 5; i++) await a.bus.publish("user.disabled", { n: round * 10 + i });
        await waitFor(() => b.bus.listening(), "b to reconnect");
        await waitFor(() => b.seen.length === 1 + 5 * round, `catch-up after reconnect ${round}`);
      }
      expect(b.seen.map((e) => e.data["n"])).toEqual([0, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24]);
      expect(seqs(b.seen)).toEqual(seqs(a.seen));
    },
  );

  it("a publisher that is not reading still delivers to its local subscribers", async () => {
    const t = await target();
    const store: Store = await openStore(t.storeOptions);
    cleanups.push(() => store.close());
    const bus = new StoreEventBus(store, { clock: systemClock });
    const got: ZtEvent[] = [];
    bus.subscribe((e) => got.push(e));
    const e = await bus.publish("cert.revoked", { serial: "01" });
    expect(got).toEqual([e]);
  });

  it("lastContactMs: 0 after a successful read, grows while the store is unreachable", async () => {
    const t = await target();
    const clock = new ManualClock();
    const p = await proc(t, { clock });
    clock.advance(30_000);
    await p.bus.catchUp();
    expect(p.bus.lastContactMs()).toBe(0);
    await p.store.close(); // the store goes away under the bus
    clock.advance(45_000);
    await p.bus.catchUp();
    expect(p.bus.lastContactMs()).toBe(45_000);
  });

  it("an event published before a reader starts is not replayed to it; one after is", async () => {
    const t = await target();
    const a = await proc(t);
    await a.bus.publish("config.changed", { n: 1 });
    const b = await proc(t);
    await a.bus.publish("config.changed", { n: 2 });
    await waitFor(() => b.seen.length >= 1, "b to hear the second event");
    await b.bus.catchUp();
    expect(b.seen.map((e) => e.data["n"])).toEqual([2]);
  });

  it("mark() before start(): events committed in between are delivered at start, once each", async () => {
    const t = await target();
    const a = await proc(t);
    await a.bus.publish("config.changed", { n: 1 });
    const store = await openStore(t.storeOptions);
    const b = new StoreEventBus(store, { clock: systemClock });
    cleanups.push(async () => {
      await b.stop();
      await store.close();
    });
    const seen: ZtEvent[] = [];
    b.subscribe((e) => seen.push(e));
    await b.mark(); // then the process loads its state…
    await a.bus.publish("grant.changed", { n: 2 }); // …and this commits meanwhile
    const own = await b.publish("session.revoked", { n: 3 }); // its own, heard at once
    expect(seen.map((e) => e.data["n"])).toEqual([3]);
    await a.bus.publish("grant.changed", { n: 4 });
    await b.start();
    // Delivered by start() itself, in seq order; its own event not a second time.
    expect(seen.map((e) => e.data["n"])).toEqual([3, 2, 4]);
    await a.bus.publish("grant.changed", { n: 5 });
    await waitFor(() => seen.length >= 4, "b to hear an event after start");
    await b.catchUp();
    expect(seen.map((e) => e.data["n"])).toEqual([3, 2, 4, 5]);
    expect(seen.filter((e) => e.seq === own.seq)).toHaveLength(1);
  });
});
