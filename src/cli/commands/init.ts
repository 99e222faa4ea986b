import { existsSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Command } from "commander";
import { configPathFrom, loadConfig } from "../../config/index.js";
import { initPki } from "../../pki/index.js";
import { failWith, globalOptions, openCliContext } from "../cli-context.js";
import { makeDirectories } from "../../core/make-directories.js";

const DEFAULT_CONFIG = `# zt configuration. Reference: docs/configuration.md
data_dir: ./data
trust_domain: example.test
listen:
  proxy: "127.0.0.1:8443"
  api: "127.0.0.1:8400"
routes: []
#  - name: whoami
#    from: http://whoami.localhost:8443
#    to: http://127.0.0.1:9000
policies: ./policies
`;

const DEFAULT_POLICY = `// Deny by default: nothing is allowed until a policy permits it.
// Example:
// @id("eng-whoami")
// permit (principal in Group::"eng", action == Action::"GET", resource == App::"whoami")
// when { context.mfa_age_seconds < 3600 };
`;

/** `zt init`: a config file, a data directory with its master key, keys and CA. */
export function registerInitCommands(program: Command): void {
  program
    .command("init")
    .description("create zt.yaml (if missing), the data directory, the master key and the CAs")
    .action(async (_opts: unknown, cmd: Command) => {
      try {
        const path = configPathFrom(globalOptions(cmd).config, process.env);
        if (!existsSync(path)) {
          makeDirectories(dirname(path));
          writeFileSync(path, DEFAULT_CONFIG);
          process.stdout.write(`wrote ${path}\n`);
        }
        const config = loadConfig(path, { env: process.env });
        if (!existsSync(config.policies)) {
          makeDirectories(config.policies);
          writeFileSync(join(config.policies, "default.cedar"), DEFAULT_POLICY);
          process.stdout.write(`wrote ${join(config.policies, "default.cedar")}\n`);
        }
        const ctx = await openCliContext(config, { create: true });
        try {
          await ctx.keys.activeKey("assertion", "ES256");
          await initPki(ctx);
          process.stdout.write(`data directory ready: ${config.data_dir}\n`);
        } finally {
          await ctx.close();
        }
      } catch (e) {
        failWith(e);
      }
    });
}
