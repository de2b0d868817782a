/**
 * Flag parsing for subcommands: node:util parseArgs, strict, with errors that fit on one line.
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A bad command line: main prints the message as one line and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parses `args` strictly against `options`; throws UsageError naming the problem. */
// deno-lint-ignore explicit-module-boundary-types -- the inferred type carries each flag's type to the caller
export function parse<O extends Options>(
  args: string[],
  options: O,
  positionals: { min?: number; max?: number } = {},
) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: (positionals.max ?? 0) > 0 });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0]!);
  }
  const n = parsed.positionals.length;
  if (n < (positionals.min ?? 0)) throw new UsageError("missing argument (see --help)");
  if (n > (positionals.max ?? 0)) {
    throw new UsageError(`unexpected argument "${parsed.positionals[positionals.max ?? 0]}"`);
  }
  return parsed;
}

/** Splits "host:port" (IPv6 as "[::1]:8080"); a bare ":port" or "port" means all interfaces. */
export function hostPort(text: string, flag: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):?(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new UsageError(`${flag} must be HOST:PORT, got "${text}"`);
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** Splits a comma-separated flag value into trimmed, non-empty items. */
export function list(value: string | undefined): string[] {
  return (value ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
}
