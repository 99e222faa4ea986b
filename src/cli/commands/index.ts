import type { Command } from "commander";

/**
 * Every command group. Each capability's CLI lives in its own file here and exports a
 * `register…Commands(program)` function; add one import and one call per group.
 */
export function registerAllCommands(program: Command): void {
  void program;
}
