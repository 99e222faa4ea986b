import { execFile, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { basename, resolve } from "node:path";
import type { Command } from "commander";
import { sleepUntil, systemClock } from "../../core/clock.js";
import { formatDuration, parseDuration } from "../../core/duration.js";
import { isZtError, ZtError } from "../../core/errors.js";
import { readInputFile } from "../../core/read-input-file.js";
import {
  applyRuleset,
  compileNftables,
  confirmApply,
  DEFAULT_SEG_STATE_DIR,
  DEFAULT_MAX_FLOWS,
  formatFinding,
  loadSegModelFile,
  parseCidr,
  readRolloutState,
  readStatus,
  recordRollbackFailure,
  rollbackIfPending,
  rollbackNow,
  systemNftRunner,
  compileK8s,
  describeUnparsedFile,
  learnDocument,
  learnFromFiles,
  progressBar,
  proposedModelYaml,
  readObservedFiles,
  SegmentIndex,
  simulateFlows,
  type NftRunner,
  type NftTarget,
  type SegFinding,
  type SegModel,
} from "../../segment/index.js";
import { stringify } from "yaml";
import {
  openOutputFile,
  printJson,
  printTable,
  usageError,
  warn,
  withoutContext,
} from "../cli-context.js";
import type { PendingFile } from "../../core/secure-files.js";
import { quoteInput } from "../../core/printable.js";

interface TargetOpts {
  host?: string;
  segment?: string;
  router?: boolean;
}

interface StateOpts {
  stateDir?: string;
  netns?: string;
  json?: boolean;
}

function nftTarget(o: TargetOpts): NftTarget {
  if ([o.host, o.segment, o.router].filter((x) => x).length > 1)
    throw usageError("give only one of --host, --segment, --router");
  if (o.host) return { kind: "host", host: o.host };
  if (o.segment) return { kind: "segment", segment: o.segment };
  return { kind: "router" };
}

/**
 * `-t k8s` compiles one NetworkPolicy per segment with k8s selectors, for the cluster as a
 * whole: there is no host, segment or router to pick, so an nftables-only option given
 * with it is refused rather than silently ignored (the output would not be what was asked).
 */
function refuseNftOnlyOptions(o: TargetOpts): void {
  const given = [
    o.host !== undefined ? "--host" : undefined,
    o.segment !== undefined ? "--segment" : undefined,
    o.router ? "--router" : undefined,
  ].filter((x) => x !== undefined);
  if (given.length > 0)
    throw usageError(
      `${given.join(", ")}: only for -t nftables; -t k8s compiles the NetworkPolicies of every segment with k8s selectors, for the whole cluster`,
    );
}

function warnFindings(file: string, findings: SegFinding[]): void {
  for (const f of findings) warn(formatFinding(file, f));
}

function stateDirOf(o: StateOpts): string {
  return o.stateDir ?? process.env["ZT_SEG_STATE_DIR"] ?? DEFAULT_SEG_STATE_DIR;
}

function rolloutOpts(o: StateOpts) {
  const base = {
    stateDir: stateDirOf(o),
    nft: systemNftRunner(o.netns ? { netns: o.netns } : {}),
    clock: systemClock,
  };
  return o.netns ? { ...base, netns: o.netns } : base;
}

/**
 * How the rollback timer is started. Under systemd (`/run/systemd/system` exists, as
 * `sd_booted()` checks) it runs as its own transient service through `systemd-run`: a
 * process merely detached from the shell stays in the login session's cgroup, and logind
 * with `KillUserProcesses=yes` kills it when that session ends — which is exactly what a
 * ruleset that cuts the operator's SSH connection does. Elsewhere it is a detached child.
 * `ZT_SEG_ROLLBACK_TIMER=systemd|detached` overrides the choice.
 */
export function rollbackTimerCommand(
  timerArgs: readonly string[],
  token: string,
  env: NodeJS.ProcessEnv = process.env,
  systemdBooted: () => boolean = () => existsSync("/run/systemd/system"),
): { file: string; args: string[]; detached: boolean } {
  const choice = env["ZT_SEG_ROLLBACK_TIMER"] ?? "auto";
  if (choice !== "auto" && choice !== "systemd" && choice !== "detached") {
    throw new ZtError(
      "ZT_USAGE",
      `ZT_SEG_ROLLBACK_TIMER=${JSON.stringify(choice)}: expected systemd, detached or auto`,
    );
  }
  const node = [process.execPath, ...timerArgs];
  if (choice === "detached" || (choice === "auto" && !systemdBooted()))
    return { file: node[0]!, args: node.slice(1), detached: true };
  return {
    file: "systemd-run",
    args: [
      "--quiet",
      "--collect",
      `--unit=zt-seg-rollback-${token}`,
      "--description=zt seg: roll the pending apply back unless confirmed",
      `--setenv=PATH=${env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
      "--",
      ...node,
    ],
    detached: false,
  };
}

/**
 * Starts the process that rolls back unless `zt seg confirm` comes first (see
 * `rollbackTimerCommand`); resolves once it runs. `applyRuleset` calls it before loading
 * the ruleset (see `armRollback`): if it cannot be started, nothing is applied.
 */
async function spawnRollbackTimer(
  stateDir: string,
  token: string,
  netns: string | undefined,
): Promise<void> {
  const script = process.argv[1];
  if (!script)
    throw new ZtError("ZT_INTERNAL", "cannot locate the zt entry point for the rollback timer");
  const args = [script, "seg", "_rollback-timer", "--state-dir", stateDir, "--token", token];
  if (netns) args.push("--netns", netns);
  const how = rollbackTimerCommand(args, token);
  if (how.detached) {
    const child = spawn(how.file, how.args, { detached: true, stdio: "ignore" });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    child.unref();
    return;
  }
  // systemd-run returns once the unit has started; its refusal is the apply's refusal
  await new Promise<void>((resolve, reject) => {
    execFile(how.file, how.args, { timeout: 30_000 }, (e, _out, stderr) => {
      if (!e) return resolve();
      const why = stderr.trim().split("\n").slice(0, 3).join("; ") || e.message;
      reject(
        new ZtError(
          "ZT_SEG_APPLY_FAILED",
          `systemd-run could not start the rollback timer (${why}), so nothing was applied; set ZT_SEG_ROLLBACK_TIMER=detached to run it as a plain background process instead`,
        ),
      );
    });
  });
}

export function registerSegCommands(program: Command): void {
  const seg = program
    .command("seg")
    .description("micro-segmentation: compile, apply, learn and simulate flow models");

  registerSegLearnCommands(seg);

  seg
    .command("check")
    .description(
      "validate a model and report overlaps, unknown segments, duplicate and unreachable flows",
    )
    .option("-m, --model <file>", "model file", "segments.yaml")
    .action((o: { model: string }) =>
      withoutContext(async () => {
        const { model, findings } = await loadSegModelFile(o.model);
        warnFindings(basename(o.model), findings);
        process.stdout.write(
          `${o.model}: ok (${model.segments.length} segments, ${model.flows.length} flows, ${findings.length} warnings)\n`,
        );
      }),
    );

  seg
    .command("compile")
    .description(
      "compile the model to an nftables script or Kubernetes NetworkPolicy YAML (stdout)",
    )
    .option("-m, --model <file>", "model file", "segments.yaml")
    .option("-t, --target <target>", "nftables | k8s", "nftables")
    .option("--host <name>", "nftables: the rules one host enforces (host name or address)")
    .option("--segment <name>", "nftables: the rules every host of a segment enforces")
    .option("--router", "nftables: a router's forward chain (the default)")
    .option(
      "--pod-cidr <cidr...>",
      "k8s: the cluster's pod networks, cut out of the ipBlock peers of host segments",
    )
    .option("-o, --out <file>", "write to a file instead of stdout")
    .addHelpText(
      "after",
      "\n--host, --segment and --router are refused with -t k8s; --pod-cidr with -t nftables.",
    )
    .action((o: TargetOpts & { model: string; target: string; out?: string; podCidr?: string[] }) =>
      withoutContext(async () => {
        // Every option is checked, and -o opened, before the model is read and warned about.
        if (o.target !== "nftables" && o.target !== "k8s")
          throw usageError(`--target: expected nftables or k8s, got ${quoteInput(o.target)}`);
        const podCidrs = (o.podCidr ?? []).map((c) => {
          const p = parseCidr(c);
          if (!p.ok) throw usageError(`--pod-cidr: ${p.reason}`);
          return p.range;
        });
        if (podCidrs.length && o.target !== "k8s")
          throw usageError("--pod-cidr: only for -t k8s (pod networks are a cluster's)");
        const target = o.target === "nftables" ? nftTarget(o) : undefined;
        if (o.target === "k8s") refuseNftOnlyOptions(o);
        refuseOutputOverInput([["--out", o.out]], [["--model", o.model]]);
        const outFile = o.out !== undefined ? openOutputFile("--out", o.out) : undefined;
        try {
          const { model, findings, text } = await loadSegModelFile(o.model);
          warnFindings(basename(o.model), findings);
          let compiled: string;
          if (target) {
            const label = `model ${basename(o.model)} sha256:${createDigest(text).slice(0, 16)}`;
            compiled = compileNftables(model, { target, label }).text;
          } else {
            const r = compileK8s(model, { podCidrs });
            for (const w of r.warnings) warn(`k8s: ${w}`);
            compiled = r.text;
          }
          if (outFile) {
            outFile.write(compiled);
            outFile.commit();
          } else process.stdout.write(compiled);
        } finally {
          outFile?.discard();
        }
      }),
    );

  seg
    .command("apply")
    .description(
      "apply a model (or a compiled .nft file) atomically; roll back unless confirmed in time",
    )
    .argument("<file>", "segments.yaml or a script from `zt seg compile`")
    .option(
      "--confirm-within <duration>",
      "roll back unless `zt seg confirm` runs within this window (0 = no)",
      "60s",
    )
    .option("--host <name>", "compile for this host")
    .option("--segment <name>", "compile for the hosts of this segment")
    .option("--router", "compile a router's forward chain (the default)")
    .option(
      "--state-dir <dir>",
      `state directory (ZT_SEG_STATE_DIR, default ${DEFAULT_SEG_STATE_DIR})`,
    )
    .option("--netns <name>", "apply inside this network namespace")
    .action((file: string, o: TargetOpts & StateOpts & { confirmWithin: string }) =>
      withoutContext(async () => {
        const windowMs = parseDuration(o.confirmWithin, "--confirm-within");
        let ruleset: string;
        // File errors carry the path and their own code (a directory is not "not found")
        const raw = readInputFile(file);
        if (/\.nft$/.test(file) || (!/\.ya?ml$/.test(file) && /^table\s+inet\s/m.test(raw))) {
          // its target was chosen when it was compiled: an option asking for another is refused
          const given = [o.host && "--host", o.segment && "--segment", o.router && "--router"];
          const option = given.find((x) => x);
          if (option)
            throw usageError(
              `${option}: ${file} is a compiled ruleset, its target chosen by \`zt seg compile\`; give the model instead, or leave ${option} out`,
            );
          ruleset = raw;
        } else {
          const { model, findings, text } = await loadSegModelFile(file);
          warnFindings(basename(file), findings);
          const label = `model ${basename(file)} sha256:${createDigest(text).slice(0, 16)}`;
          ruleset = compileNftables(model, { target: nftTarget(o), label }).text;
        }
        const ro = rolloutOpts(o);
        const { state } = await applyRuleset(ruleset, {
          ...ro,
          confirmWithinMs: windowMs,
          source: file,
          // armed before nft -f: dying after the load cannot leave it pending for ever
          armRollback: (st) => spawnRollbackTimer(ro.stateDir, st.token, o.netns),
        });
        // a host ruleset hooks input (and output) only
        if (/\bhook input\b/.test(ruleset) && !/\bhook forward\b/.test(ruleset))
          await warnIfDnat(ro.nft);
        if (state.status === "pending") {
          process.stdout.write(
            `applied ${state.digest.slice(0, 12)} from ${file}; run \`zt seg confirm\` within ${formatDuration(windowMs)} or it is rolled back\n`,
          );
        } else {
          process.stdout.write(`applied ${state.digest.slice(0, 12)} from ${file} (confirmed)\n`);
        }
      }),
    );

  seg
    .command("confirm")
    .description("keep the ruleset applied by the last `zt seg apply`")
    .option("--state-dir <dir>", "state directory")
    .option("--netns <name>", "network namespace")
    .action((o: StateOpts) =>
      withoutContext(async () => {
        const st = await confirmApply(rolloutOpts(o));
        process.stdout.write(`confirmed ${st.digest.slice(0, 12)} from ${st.source}\n`);
      }),
    );

  seg
    .command("rollback")
    .description("restore the previous ruleset now, if the last apply is still pending")
    .option("--state-dir <dir>", "state directory")
    .option("--netns <name>", "network namespace")
    .action((o: StateOpts) =>
      withoutContext(async () => {
        await rollbackNow(rolloutOpts(o));
        process.stdout.write("rolled back\n");
      }),
    );

  seg
    .command("_rollback-timer", { hidden: true })
    .requiredOption("--state-dir <dir>")
    .requiredOption("--token <token>")
    .option("--netns <name>")
    .action((o: StateOpts & { token: string }) =>
      withoutContext(async () => {
        const ro = rolloutOpts(o);
        const st = await readRolloutState(ro.stateDir);
        if (!st || st.token !== o.token || st.deadline === null) return;
        // A window past ~24.8 days would overflow a single timer and roll back at once.
        await sleepUntil(st.deadline, systemClock);
        // an apply or confirm may hold the lock for a while: keep trying, never give up
        for (;;) {
          try {
            await rollbackIfPending({ ...ro, token: o.token });
            return;
          } catch (e) {
            if (isZtError(e) && e.code === "ZT_CONFLICT") continue;
            // detached, with nowhere to print: leave the reason for `zt seg status`
            await recordRollbackFailure(ro.stateDir, o.token, systemClock.now(), e).catch(
              () => undefined,
            );
            throw e;
          }
        }
      }),
    );

  seg
    .command("status")
    .description("the applied version, rollout state and per-rule counters (from nft -j)")
    .option("--state-dir <dir>", "state directory")
    .option("--netns <name>", "network namespace")
    .option("--json", "print JSON")
    .action((o: StateOpts) =>
      withoutContext(async () => {
        const s = await readStatus(rolloutOpts(o));
        if (o.json) {
          printJson(s);
          return;
        }
        const st = s.state;
        process.stdout.write(
          st
            ? `applied: ${st.digest.slice(0, 12)} from ${st.source} at ${new Date(st.appliedAt).toISOString()} (${st.status}${
                st.status === "pending" && st.deadline
                  ? `, rolls back at ${new Date(st.deadline).toISOString()}`
                  : ""
              })\n`
            : "applied: nothing recorded\n",
        );
        if (s.rollbackFailed) {
          const f = s.rollbackFailed;
          process.stdout.write(
            `rollback FAILED at ${new Date(f.at).toISOString()}: ${f.code}: ${f.message}\n`,
          );
        }
        process.stdout.write(`table inet zt: ${s.live ? "loaded" : "absent"}\n`);
        if (!s.live) return;
        process.stdout.write(
          `drops: ${s.counters["zt_drop"] ?? 0}  would-drop: ${s.counters["zt_would_drop"] ?? 0}  invalid: ${s.counters["zt_invalid"] ?? 0}  cut: ${s.counters["zt_cut"] ?? 0}\n\n`,
        );
        printTable(s.rules as unknown as Record<string, unknown>[], [
          "chain",
          "handle",
          "packets",
          "bytes",
          "rule",
        ]);
      }),
    );
}

/**
 * A host ruleset filters what reaches the host (input) and what it sends (output). A
 * connection the host DNATs to a container, VM or pod (Docker's `-p`, a NodePort) goes
 * through the forward hook instead, so the model does not reach it: say so when another
 * table of the namespace has a `dnat` rule. Best effort: a listing that fails says nothing.
 */
async function warnIfDnat(nft: NftRunner): Promise<void> {
  let listing: string;
  try {
    listing = await nft.run(["list", "ruleset"]);
  } catch {
    return;
  }
  const tables = listing
    .split(/^(?=table )/m)
    .filter((t) => /\bdnat\b/i.test(t))
    .map((t) => /^table (\S+ \S+)/.exec(t)?.[1])
    .filter((n): n is string => n !== undefined && n !== "inet zt");
  if (tables.length === 0) return;
  warn(
    `this host DNATs (table ${tables.join(", table ")}): connections it DNATs to a container, VM or pod go through the forward hook and are not filtered by this ruleset (input/output only), whatever the model says; filter them on the router in front (--router) or with --target k8s`,
  );
}

function createDigest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function registerSegLearnCommands(seg: Command): void {
  seg
    .command("learn")
    .description("build an inventory and least-privilege flows from kernel log / zt flow records")
    .requiredOption(
      "--from <files...>",
      "log files (nftables/ufw `log prefix` lines, JSON flow records)",
    )
    .option("-m, --model <file>", "map addresses to this model's segments")
    .option(
      "-o, --out <file>",
      "write the inventory, flows and observed records here (YAML) instead of stdout",
    )
    .option("--model-out <file>", "also write a proposed segments.yaml (audit mode)")
    .option("--json", "print JSON instead of YAML")
    .action(
      (o: { from: string[]; model?: string; out?: string; modelOut?: string; json?: boolean }) =>
        withoutContext(async () => {
          refuseOutputOverInput(
            [
              ["--out", o.out],
              ["--model-out", o.modelOut],
            ],
            [["--model", o.model], ...o.from.map((f): [string, string] => ["--from", f])],
          );
          // Opened first: a target that cannot be written fails before anything is learned,
          // printed or written (the inventory went out, then --model-out failed).
          const files: PendingFile[] = [];
          try {
            const outFile = o.out !== undefined ? openOutputFile("--out", o.out) : undefined;
            if (outFile) files.push(outFile);
            const modelFile =
              o.modelOut !== undefined ? openOutputFile("--model-out", o.modelOut) : undefined;
            if (modelFile) files.push(modelFile);
            await learnInto(o, outFile, modelFile);
          } finally {
            for (const f of files) f.discard();
          }
        }),
    );

  seg
    .command("simulate")
    .description(
      "replay observed flows against a candidate model; report what it would drop, by segment pair",
    )
    .requiredOption("-m, --model <file>", "candidate model")
    .requiredOption("--flows <files...>", "`zt seg learn` output (.yaml/.json) or raw log files")
    .option("--check", "exit 1 when anything would be dropped")
    .option("--json", "print JSON")
    .action((o: { model: string; flows: string[]; check?: boolean; json?: boolean }) =>
      withoutContext(async () => {
        const { model, findings } = await loadSegModelFile(o.model);
        for (const f of findings) warn(formatFinding(basename(o.model), f));
        const observed = await readObservedFiles(o.flows, {
          onUnparsedFile: (f) => warn(`${describeUnparsedFile(f)}; nothing simulated from it`),
        });
        const r = simulateFlows(model, observed);
        if (o.json) printJson(r);
        else {
          process.stdout.write(
            `${r.flows} observed flows, ${r.packets} packets: ${r.allowed} allowed, ${r.egress} to/from outside the model, ${r.dropped} would be dropped\n`,
          );
          if (r.groups.length) {
            process.stdout.write("\n");
            printTable(
              r.groups.map((g) => ({
                from: g.from,
                to: g.to,
                mode:
                  g.mode === "enforce" ? "enforce (dropped now)" : "audit (dropped once enforced)",
                packets: g.count,
                ports: g.ports.slice(0, 8).map((p) => `${p.port}×${p.count}`),
              })),
              ["from", "to", "mode", "packets", "ports"],
            );
          }
        }
        return o.check && r.dropped > 0 ? 1 : 0;
      }),
    );
}

interface LearnOpts {
  from: string[];
  model?: string;
  json?: boolean;
}

/**
 * The body of `zt seg learn`, its output files already open: both are written in full
 * before either takes its name, and stdout is written only once they have.
 */
async function learnInto(
  o: LearnOpts,
  outFile: PendingFile | undefined,
  modelFile: PendingFile | undefined,
): Promise<void> {
  let model: SegModel | undefined;
  if (o.model) {
    const m = await loadSegModelFile(o.model);
    for (const f of m.findings) warn(formatFinding(basename(o.model), f));
    model = m.model;
  }
  const bar = progressBar();
  const opts = {
    year: new Date(systemClock.now()).getUTCFullYear(),
    onProgress: bar.update,
    ...(model ? { index: new SegmentIndex(model) } : {}),
  };
  const { result, stats } = await learnFromFiles(o.from, opts);
  bar.done();
  const doc = learnDocument(result, stats);
  const text = o.json ? JSON.stringify(doc, null, 2) + "\n" : stringify(doc, { lineWidth: 0 });
  outFile?.write(text);
  modelFile?.write(proposedModelYaml(model, result));
  outFile?.commit();
  modelFile?.commit();
  if (!outFile) process.stdout.write(text);
  if (stats.unaggregated > 0)
    warn(
      `more than ${DEFAULT_MAX_FLOWS.toLocaleString("en-US")} distinct flows (a scan?): ${stats.unaggregated.toLocaleString("en-US")} packets of further flows were counted but not learned; split or filter the logs`,
    );
  for (const f of stats.unparsedFiles) warn(`${describeUnparsedFile(f)}; nothing learned from it`);
  const skipped = stats.lines - stats.parsed;
  process.stderr.write(
    `zt: learned ${result.flows.length} flows from ${stats.parsed.toLocaleString("en-US")} of ${stats.lines.toLocaleString("en-US")} lines${
      skipped > 0
        ? `; ${skipped.toLocaleString("en-US")} line${skipped === 1 ? "" : "s"} skipped (not flow records)`
        : ""
    }\n`,
  );
}

type NamedPath = readonly [option: string, path: string | undefined];

/**
 * Refuses an output that is also an input (`--out kern.log` would replace the log being
 * learned from, `-o segments.yaml` the model) or another output: checked before anything
 * is read or written.
 */
function refuseOutputOverInput(outputs: NamedPath[], inputs: NamedPath[]): void {
  const given = outputs.filter((o): o is [string, string] => o[1] !== undefined);
  for (const [i, [option, path]] of given.entries()) {
    for (const [other, p] of given.slice(i + 1))
      if (samePath(path, p))
        throw usageError(`${option} and ${other}: both name ${path}; one would replace the other`);
    for (const [input, p] of inputs)
      if (p !== undefined && samePath(path, p))
        throw usageError(
          `${option}: ${path} is also ${input}; writing it would replace what is read`,
        );
  }
}

/**
 * Whether two paths name one file: the same path once resolved, or the same regular file
 * (a link). Devices are not compared: `/dev/stdin` and `/dev/stdout` are one terminal.
 */
function samePath(a: string, b: string): boolean {
  if (resolve(a) === resolve(b)) return true;
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.isFile() && y.isFile() && x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}
