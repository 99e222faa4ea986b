/**
 * The watch on the policy folder fails in ways `fs.watch` does not always report: a
 * folder removed and recreated (an atomic deploy) leaves a watch that hears nothing
 * more; a missing folder or the inotify limits make it fail at creation; the watcher may
 * emit `error`. Each must be reported (log line, `policy.watch` audit record,
 * `zt_policy_watch_errors_total`, the status /readyz shows) and edits must still apply.
 * A real folder and the real watcher throughout.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdirSync, renameSync, rmSync, watch, writeFileSync, type FSWatcher } from "node:fs";
import { join } from "node:path";
import { openAppContext, type AppContext } from "../src/app/index.js";
import { validateConfig } from "../src/config/index.js";
import { PolicyHolder } from "../src/session/policy-holder.js";
import { metrics } from "../src/audit/index.js";
import { tempDir } from "./pep-fixture.js";
import { waitFor } from "./store-fixture.js";

const policy = (id: string) => `@id("${id}")\npermit (principal, action, resource == App::"a");\n`;

describe("policy folder watch failures", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(): Promise<{ ctx: AppContext; dir: string }> {
    const root = tempDir("zt-policy-watch-");
    const dir = join(root, "policies");
    mkdirSync(dir);
    writeFileSync(join(dir, "main.cedar"), policy("v1"));
    const cfg = validateConfig(
      {
        data_dir: join(root, "data"),
        policies: dir,
        routes: [{ name: "a", from: "http://a.localhost", to: "http://127.0.0.1:9" }],
      },
      join(root, "zt.yaml"),
    );
    // Cleanups run last-pushed first: the store (and its audit writer thread, which may
    // still be creating files in data/) closes before its directory is removed.
    cleanups.push(() => rmSync(root, { recursive: true, force: true }));
    const ctx = await openAppContext(cfg, { create: true });
    cleanups.push(() => ctx.close());
    return { ctx, dir };
  }

  function holder(ctx: AppContext, o: { watch?: typeof watch } = {}) {
    const h = new PolicyHolder(ctx);
    const logged: string[] = [];
    h.load();
    h.watch(undefined, {
      pollIntervalMs: 50,
      debounceMs: 20,
      onWatchError: (m) => logged.push(m),
      ...o,
    });
    cleanups.push(() => h.close());
    const ids = () => h.engine.policySet.policies.map((p) => p.id);
    return { h, logged, ids };
  }

  async function watchErrors(): Promise<number> {
    const m = await metrics.getSingleMetric("zt_policy_watch_errors_total")?.get();
    return m?.values[0]?.value ?? 0;
  }

  it("keeps applying edits after the policy folder is removed and recreated (the watch went silent)", async () => {
    const { ctx, dir } = await setup();
    const { h, logged, ids } = holder(ctx);
    expect(h.watchStatus()).toEqual({ mode: "watching", errors: 0, error: null });
    const errorsBefore = await watchErrors();

    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    writeFileSync(join(dir, "main.cedar"), policy("v2"));
    await waitFor(() => ids().includes("v2"), "the policy in the recreated folder to apply");
    expect(logged[0]).toMatch(/removed or replaced/);
    expect(h.watchStatus().errors).toBeGreaterThanOrEqual(1);
    expect(await watchErrors()).toBeGreaterThan(errorsBefore);

    // The watch is re-established on the new folder, and a later edit applies too.
    await waitFor(() => h.watchStatus().mode === "watching", "the watch to be re-established");
    writeFileSync(join(dir, "main.cedar"), policy("v3"));
    await waitFor(() => ids().includes("v3"), "a later edit to apply");
    expect(h.watchStatus().error).toBeNull();
  });

  it("polls the folder when the watch cannot be created, and applies edits", async () => {
    const { ctx, dir } = await setup();
    const h = new PolicyHolder(ctx);
    h.load();
    // A real creation failure: the folder is not there when watching starts (ENOENT).
    renameSync(dir, `${dir}.away`);
    const logged: string[] = [];
    h.watch(undefined, { pollIntervalMs: 50, debounceMs: 20, onWatchError: (m) => logged.push(m) });
    cleanups.push(() => h.close());
    expect(h.watchStatus()).toMatchObject({ mode: "polling", errors: 1 });
    expect(logged[0]).toMatch(/ENOENT/);
    // The set in force stays while the folder is away.
    expect(h.engine.policySet.policies.map((p) => p.id)).toEqual(["v1"]);

    renameSync(`${dir}.away`, dir);
    writeFileSync(join(dir, "main.cedar"), policy("v2"));
    await waitFor(
      () => h.engine.policySet.policies.some((p) => p.id === "v2"),
      "the edit to apply",
    );
    await waitFor(() => h.watchStatus().mode === "watching", "the watch to be established");
  });

  it("reports an error emitted by the watcher and keeps applying edits", async () => {
    const { ctx, dir } = await setup();
    // The inotify limits cannot be exhausted here without changing the shared machine's
    // settings, so the error is emitted on the real watcher, as Node would emit it.
    const watchers: FSWatcher[] = [];
    const spy = ((...a: Parameters<typeof watch>) => {
      const w = watch(...a);
      watchers.push(w);
      return w;
    }) as typeof watch;
    const { h, logged, ids } = holder(ctx, { watch: spy });
    expect(watchers).toHaveLength(1);
    watchers[0]!.emit(
      "error",
      Object.assign(new Error("ENOSPC: System limit for number of file watchers reached"), {
        code: "ENOSPC",
      }),
    );
    expect(h.watchStatus()).toMatchObject({ mode: "polling", errors: 1 });
    expect(h.watchStatus().error).toMatch(/max_user_watches/);
    expect(logged).toHaveLength(1);

    writeFileSync(join(dir, "main.cedar"), policy("v2"));
    await waitFor(() => ids().includes("v2"), "the edit to apply");
    await waitFor(() => h.watchStatus().mode === "watching", "the watch to be re-established");
    expect(watchers.length).toBeGreaterThanOrEqual(2);
  });
});
