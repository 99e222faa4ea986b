/**
 * Regression: Node 20's V8 (11.3) died with "Fatal error … unreachable code" in
 * `Deoptimizer::DoComputeBuiltinContinuation` when an optimised caller of a cedar-wasm
 * export (TurboFan inlines the JS→Wasm call) was lazily deoptimised while the wasm call was
 * running and the export returns an externref. cedar-wasm growing its memory mid-call (here:
 * a request with a few MB of context after a warm-up) triggers it every time. zt turns that
 * inlining off in src/policy/cedar-wasm.ts; see the comment there.
 *
 * The workload runs in a child process (a fatal V8 error cannot be caught in process), on
 * the built package (dist/, as `npm test` builds it first), exactly as a user loads it.
 * The control run re-enables the inlining after zt is loaded and must crash on the V8 line
 * where the bug was observed, so this test can tell the fix from a workload that no longer
 * reaches the bug.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { v8NeedsJsWasmInliningGuard } from "../src/policy/cedar-wasm.js";

const ROOT = resolve(import.meta.dirname, "..");
const DIST_POLICY = join(ROOT, "dist", "src", "policy", "index.js");
const WARM = 2000;

// Warm both engines on small requests (the reference engine's caller gets optimised), then
// send requests with 1…16 MB of context so cedar-wasm must grow its linear memory mid-call.
const WORKLOAD = `
const { createPolicyEngine, EntityStore, parsePolicies, httpContext } = await import(process.env.ZT_POLICY_URL);
if (process.env.ZT_CONTROL === "1") (await import("node:v8")).setFlagsFromString("--turbo-inline-js-wasm-calls");
const store = new EntityStore([
  { uid: { type: "User", id: "alice" }, attrs: { name: "alice" }, parents: [{ type: "Group", id: "eng" }] },
  { uid: { type: "Group", id: "eng" }, attrs: {}, parents: [] },
  { uid: { type: "App", id: "wiki" }, attrs: {}, parents: [] },
]);
const set = parsePolicies([{ file: "p.cedar", text: [
  '@id("mfa") @step_up forbid(principal, action, resource) when { context.mfa_age_seconds > 43200 };',
  '@id("eng") permit(principal in Group::"eng", action, resource == App::"wiki") when { context.source_ip.isInRange(ip("10.0.0.0/8")) };',
].join("\\n") }]);
const engines = [createPolicyEngine("compiled", set), createPolicyEngine("reference", set)];
const req = (i, extra) => ({
  principal: { type: "User", id: "alice" }, action: { type: "Action", id: "GET" }, resource: { type: "App", id: "wiki" },
  context: { ...httpContext({ sourceIp: "10.0." + (i % 250) + ".1", host: "wiki", path: "/", mfaAgeSeconds: i % 40000, timeMs: 1767225600000 + i, authenticatedBy: "session" }), ...extra },
});
let allowed = 0;
for (let i = 0; i < ${WARM}; i++) for (const e of engines) if (e.authorize(req(i), store).verdict === "allow") allowed++;
for (let mb = 1; mb <= 16; mb *= 2)
  for (const e of engines) if (e.authorize(req(mb, { note: "x".repeat(mb << 20) }), store).verdict === "allow") allowed++;
process.stdout.write("allowed " + allowed + "\\n");
`;

function runWorkload(control: boolean): {
  status: number | null;
  signal: string | null;
  out: string;
  err: string;
} {
  if (!existsSync(DIST_POLICY)) throw new Error(`${DIST_POLICY} missing: run \`npm run build\``);
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", WORKLOAD], {
    encoding: "utf8",
    env: {
      ...process.env,
      ZT_POLICY_URL: pathToFileURL(DIST_POLICY).href,
      ZT_CONTROL: control ? "1" : "0",
    },
    timeout: 120_000,
  });
  return { status: r.status, signal: r.signal, out: r.stdout, err: r.stderr };
}

describe("V8 lazy-deopt crash around cedar-wasm calls (Node 20)", () => {
  it("the guard is on for the V8 lines that carry the bug and off for newer ones", () => {
    expect(v8NeedsJsWasmInliningGuard("11.3.244.8-node.33")).toBe(true);
    expect(v8NeedsJsWasmInliningGuard("12.4.254.21-node.33")).toBe(true);
    expect(v8NeedsJsWasmInliningGuard("13.6.233.10-node.27")).toBe(false);
    expect(v8NeedsJsWasmInliningGuard("garbage")).toBe(false);
  });

  it("a warmed-up process survives requests that make cedar-wasm grow its memory", () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = runWorkload(false);
      expect(r.err).not.toContain("Fatal error");
      expect({ status: r.status, signal: r.signal }).toEqual({ status: 0, signal: null });
      // Every request is allowed by the eng policy (fresh MFA, 10/8 source), on both engines.
      expect(r.out.trim()).toBe(`allowed ${2 * (WARM + 5)}`);
    }
  }, 180_000);

  it.runIf(process.versions.v8.startsWith("11."))(
    "control: the same workload with the JS→Wasm inlining re-enabled crashes this V8",
    () => {
      let crashes = 0;
      let last = "";
      for (let attempt = 0; attempt < 2; attempt++) {
        const r = runWorkload(true);
        last = r.err.slice(0, 400);
        if (r.signal === "SIGTRAP" && r.err.includes("DoComputeBuiltinContinuation")) crashes++;
      }
      expect(crashes, `control never crashed; last stderr: ${last}`).toBeGreaterThan(0);
    },
    180_000,
  );
});
