import type { Command } from "commander";
import { configPathFrom } from "../../config/index.js";
import { runUp, type RunningZt } from "../../app/run-up.js";
import { failWith, globalOptions } from "../cli-context.js";

/** `zt up [--demo]`: run the control plane and the PEP (here, or in listen.proxy_workers workers). */
export function registerUpCommands(program: Command): void {
  program
    .command("up")
    .description("run the control plane (API) and the identity-aware proxy")
    .option(
      "--demo",
      "run the demo: creates ./.zt-demo (config, data, demo user), starts a demo upstream app",
    )
    .option("--demo-dir <dir>", "folder for the demo", ".zt-demo")
    .option("--demo-port <port>", "port for the demo upstream app", "9000")
    .action(async (opts: { demo?: boolean; demoDir: string; demoPort: string }, cmd: Command) => {
      try {
        const g = globalOptions(cmd);
        // Decimal digits only: Number() would take 0x10, 1e3 or " 9000" as some port.
        const demoPort = /^\d{1,5}$/.test(opts.demoPort) ? Number(opts.demoPort) : NaN;
        if (!(demoPort >= 0 && demoPort <= 65535)) {
          throw new (await import("../../core/errors.js")).ZtError(
            "ZT_USAGE",
            `--demo-port: expected a port number, got ${opts.demoPort}`,
          );
        }
        // SIGHUP reloads zt.yaml (its reloadable keys) and the policies. Caught from
        // before start-up (`systemctl reload` while zt starts would otherwise end it:
        // SIGHUP's default action) by one handler for the whole life of the process
        // (swapping handlers can drop a pending signal).
        const state: { running?: RunningZt; reloadAsked?: boolean } = {};
        const reload = () => {
          const running = state.running;
          if (!running) {
            state.reloadAsked = true;
            return;
          }
          void running.reload();
        };
        process.on("SIGHUP", reload);
        const up = await runUp({
          configPath: configPathFrom(g.config, process.env),
          env: process.env,
          demoDir: opts.demo ? opts.demoDir : undefined,
          demoPort,
        });
        state.running = up;
        if (state.reloadAsked) reload();
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          process.stdout.write(`zt: ${signal}, shutting down\n`);
          const force = setTimeout(() => process.exit(0), 5_000);
          force.unref();
          void up.close().then(() => process.exit(0));
        };
        process.on("SIGINT", () => stop("SIGINT"));
        process.on("SIGTERM", () => stop("SIGTERM"));
      } catch (e) {
        failWith(e);
      }
    });
}
