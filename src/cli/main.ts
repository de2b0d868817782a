/**
 * Command-line dispatch: parses the command name and global flags, then hands the rest to the command.
 * @module
 */

import { parseArgs } from "node:util";
import { VERSION } from "../spec.ts";
import { UsageError } from "./args.ts";
import { type Command, COMMANDS } from "./commands.ts";

/** The version of this build (kept in step with deno.json). */

/** Where the CLI writes: injected so tests can read it. */
export interface Output {
  out(line: string): void;
  err(line: string): void;
}

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = COMMANDS.map((c) =>
    `  ${c.name.padEnd(width)}  ${c.summary}\n  ${" ".repeat(width)}  usage: veilnet-conflux ${c.usage}`
  );
  return [
    `veilnet-conflux ${VERSION}: joins this host to a post-quantum overlay network`,
    "",
    "usage: veilnet-conflux [COMMAND] [FLAGS]   (no command means `run`)",
    "",
    "commands:",
    ...lines,
    "",
    "flags:",
    "  -h, --help     this text (after a command: that command's usage)",
    "  -V, --version  print the version",
  ].join("\n");
}

/** Runs the CLI on `argv` (without the program name) and returns the process exit code. */
export async function main(argv: string[], io: Output): Promise<number> {
  const first = argv[0];
  if (first === undefined || first.startsWith("-")) {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        options: { help: { type: "boolean", short: "h" }, version: { type: "boolean", short: "V" } },
        strict: true,
      });
    } catch (error) {
      io.err(`veilnet-conflux: ${(error as Error).message} (see --help)`);
      return 2;
    }
    if (parsed.values.help) {
      io.out(help());
      return 0;
    }
    if (parsed.values.version) {
      io.out(VERSION);
      return 0;
    }
  }
  const name = first === undefined ? "run" : first;
  const command: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (!command) {
    io.err(`veilnet-conflux: unknown command "${name}" (see --help)`);
    return 2;
  }
  const rest = argv.slice(1);
  if (command.name === "guardian") {
    // The guardian command has subcommands with their own help.
    return await runCommand(command.run, rest, io);
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    io.out(
      [
        `usage: veilnet-conflux ${command.usage}`,
        `  ${command.summary}`,
        ...(command.details ?? []).map((d) => `  ${d}`),
      ].join("\n"),
    );
    return 0;
  }
  return await runCommand(command.run, rest, io);
}

/** Runs a command; a bad command line exits 2 and any other failure 1, each with one line on stderr. */
async function runCommand(run: Command["run"], args: string[], io: Output): Promise<number> {
  try {
    return await run(args, io);
  } catch (error) {
    io.err(`veilnet-conflux: ${(error as Error).message}`);
    return error instanceof UsageError ? 2 : 1;
  }
}
