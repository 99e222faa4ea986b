/**
 * The one door to @cedar-policy/cedar-wasm: every zt module that calls the reference
 * binding imports it from here, so the V8 guard below is in place before any of those
 * calls can be optimised.
 *
 * Why the guard: wasm-bindgen exports such as `statefulIsAuthorized(externref) ->
 * externref` are tiny JS wrappers around a direct call into wasm. TurboFan in the V8 that
 * ships with Node 20 (11.3) inlines such JS→Wasm calls into the optimised caller. If that
 * caller is then lazily deoptimised *while the wasm call is running* — which happens when
 * cedar-wasm grows its linear memory mid-call (a large request context, a new policy set):
 * the glue's import callbacks rebuild their memory views and invalidate code the caller
 * depends on — the deoptimiser has to rebuild a "JS to Wasm builtin continuation" frame and
 * materialise the wasm result. It only knows how to do that for i32/i64/f32/f64 results;
 * for an externref result it hits `UNREACHABLE()` in `TranslatedValueForWasmReturnKind`
 * and the process dies with "Fatal error … unreachable code" in
 * `Deoptimizer::DoComputeBuiltinContinuation` (SIGTRAP). Newer V8 handles reference
 * results there (V8's own 2024 regression test builds exactly this case: a TurboFan-inlined
 * export returning externref, lazily deoptimised from an import callback).
 *
 * For a service that evaluates requests in process that is a remote crash: with the
 * reference engine selected, one request with a few MB of context (headers) was enough.
 * The guard turns off only that inlining (`--no-turbo-inline-js-wasm-calls`); TurboFan
 * stays on, calls into wasm go through V8's generic JS→Wasm wrapper (a few ns more on a
 * call that costs hundreds of µs). test/policy-v8-deopt.test.ts runs the crashing
 * workload in a child process.
 */
import { setFlagsFromString } from "node:v8";

/** V8 major versions known to carry the bug (Node 20 ships 11.3); newer ones are left alone. */
export function v8NeedsJsWasmInliningGuard(v8Version: string = process.versions.v8): boolean {
  const major = Number(v8Version.split(".")[0]);
  return Number.isInteger(major) && major <= 12;
}

if (v8NeedsJsWasmInliningGuard()) setFlagsFromString("--no-turbo-inline-js-wasm-calls");

export * from "@cedar-policy/cedar-wasm/nodejs";
