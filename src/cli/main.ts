import { Command, CommanderError } from "commander";
import { registerAllCommands } from "./commands/index.js";

const program = new Command();
program
  .name("zt")
  .description("zero trust access for Linux fleets")
  .option("-c, --config <file>", "config file (default ./zt.yaml, or ZT_CONFIG)")
  .showHelpAfterError()
  // Commander's own refusals (unknown option, missing argument …) in zt's form, with the
  // stable code: `zt: error ZT_USAGE: unknown option '--x'`. Set before the commands are
  // added, so each inherits it.
  .configureOutput({
    outputError: (text, write) => write(text.replace(/^error: /, "zt: error ZT_USAGE: ")),
  })
  .exitOverride();

registerAllCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander already printed the message
    process.exitCode = e.exitCode === 0 ? 0 : 64;
  } else {
    process.stderr.write(`zt: error ZT_INTERNAL: ${(e as Error).message}\n`);
    process.exitCode = 70;
  }
}
