import { Command, CommanderError } from "commander";
import { registerAllCommands } from "./commands/index.js";
import { failWith, usageError } from "./cli-context.js";
import { printable } from "../core/printable.js";

// The reader of our output went away (`zt audit tail -f | head`, `zt user list | grep -q`):
// nothing more can be shown, so stop quietly, as a command killed by SIGPIPE would, rather
// than die on an unhandled 'error' event with a stack trace.
for (const stream of [process.stdout, process.stderr])
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });

const program = new Command();
program
  .name("zt")
  .description("zero trust access for Linux fleets")
  .option("-c, --config <file>", "config file (default ./zt.yaml, or ZT_CONFIG)")
  .showHelpAfterError()
  // Commander's own refusals (unknown option, missing argument …) in zt's form, with the
  // stable code: `zt: error ZT_USAGE: unknown option '--x'`. Set before the commands are
  // added, so each inherits it. The text quotes what was typed (`unknown option '…'`):
  // control characters in it are escaped, as in every other error.
  .configureOutput({
    outputError: (text, write) =>
      write(printable(text.replace(/^error: /, "zt: error ZT_USAGE: "), { keepLineBreaks: true })),
  })
  .exitOverride()
  // An option given an empty value (`--as ""`, `-o ""`, `--user "$UNSET"`) is refused,
  // naming it: commands read "" as "not given" and would act as someone else, list
  // everything or write to stdout instead.
  .hook("preAction", (_program, action) => refuseEmptyOptionValues(action));

registerAllCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander already printed the message
    process.exitCode = e.exitCode === 0 ? 0 : 64;
  } else {
    failWith(e);
  }
}

function refuseEmptyOptionValues(action: Command): void {
  for (let cmd: Command | null = action; cmd; cmd = cmd.parent) {
    for (const opt of cmd.options) {
      if (!opt.required && !opt.optional) continue; // a flag takes no value
      const key = opt.attributeName();
      const source = cmd.getOptionValueSource(key);
      if (source !== "cli" && source !== "env") continue;
      const value: unknown = cmd.getOptionValue(key);
      if (value === "" || (Array.isArray(value) && value.includes("")))
        throw usageError(
          `${opt.long ?? opt.short ?? key} "": an empty value; give one, or leave the option out`,
        );
    }
  }
}
