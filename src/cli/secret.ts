/**
 * Secrets given to the CLI without putting them on its command line, where every user of the host reads them in
 * `ps`: a flag's value may be the secret itself (kept for scripts), `-` for standard input, or a file named by
 * its `--…-file` flag; else an environment variable. One reader for every token-taking flag, so they agree.
 * @module
 */

import { UsageError } from "./args.ts";
import type { Output } from "./main.ts";

/** The longest secret accepted: a JWT with many claims fits; a mistaken file (a binary, a log) does not. */
const MAX_SECRET_BYTES = 64 * 1024;

/** Where one secret may come from. */
export interface SecretSource {
  /** What the secret is, for messages ("registration token"). */
  what: string;
  /** The flag's name and value: the secret itself, or "-" to read it from standard input. */
  flag: string;
  value: string | undefined;
  /** The file flag's name and value: a file holding the secret. */
  fileFlag: string;
  file: string | undefined;
  /** The environment variable read when neither flag is given. */
  env?: string;
}

/** How secrets are read: standard input and warnings, injected so tests need no terminal. */
export interface SecretInput {
  /** All of standard input (at most `limit` bytes; more is an error). */
  stdin(limit: number): Promise<Uint8Array>;
  /** Says something on stderr without failing (a file others can read). */
  warn(line: string): void;
}

/** This process's standard input, and the command's stderr for warnings. */
export function secretInput(io: Pick<Output, "err">): SecretInput {
  return {
    async stdin(limit) {
      if (Deno.stdin.isTerminal()) {
        io.err("reading the secret from standard input: type it, then Enter, Ctrl-D");
      }
      return await readAtMost(Deno.stdin.readable, limit);
    },
    warn: io.err,
  };
}

/** Reads a stream to its end; throws a RangeError past `limit` bytes. */
async function readAtMost(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of stream) {
    length += chunk.length;
    if (length > limit) throw new RangeError(`more than ${limit} bytes`);
    chunks.push(chunk);
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

/** The flags (and variable) a source names, as a usage message lists them. */
function sources(s: SecretSource): string {
  return `${s.flag} T, ${s.flag} - (standard input), ${s.fileFlag} FILE${s.env ? ` or ${s.env}` : ""}`;
}

/**
 * Checks the secrets of one command line before any is read: at most one source each, and at most one of them
 * from standard input (it can be read once).
 */
export function checkSecretSources(all: SecretSource[]): void {
  for (const s of all) {
    if (s.value !== undefined && s.file !== undefined) {
      throw new UsageError(`${s.flag} and ${s.fileFlag} exclude each other: give the ${s.what} once`);
    }
  }
  const fromStdin = all.filter((s) => s.value === "-");
  if (fromStdin.length > 1) {
    throw new UsageError(
      `${fromStdin.map((s) => `${s.flag} -`).join(" and ")}: standard input can hold only one of them; ` +
        `give the others by file (${fromStdin.slice(1).map((s) => s.fileFlag).join(", ")})`,
    );
  }
}

/**
 * The secret a source gives: the flag's value, standard input for `-`, the file's content, else the environment
 * variable; undefined when none is given. Surrounding whitespace (a trailing newline) is dropped; an empty,
 * unreadable, oversized or multi-word secret is a UsageError naming where it came from.
 */
export async function readSecret(s: SecretSource, input: SecretInput): Promise<string | undefined> {
  checkSecretSources([s]);
  let where: string;
  let bytes: Uint8Array;
  if (s.value === "-") {
    where = `${s.flag} - (standard input)`;
    try {
      bytes = await input.stdin(MAX_SECRET_BYTES);
    } catch (error) {
      throw new UsageError(`${where}: cannot read the ${s.what}: ${(error as Error).message}`);
    }
  } else if (s.file !== undefined) {
    where = `${s.fileFlag} ${s.file}`;
    try {
      bytes = await Deno.readFile(s.file);
      if ((Deno.statSync(s.file).mode ?? 0) & 0o077) {
        input.warn(`${where} is readable by other users: chmod 600 ${s.file}`);
      }
    } catch (error) {
      throw new UsageError(`${where}: cannot read the ${s.what}: ${(error as Error).message}`);
    }
    if (bytes.length > MAX_SECRET_BYTES) {
      throw new UsageError(`${where}: more than ${MAX_SECRET_BYTES} bytes; expected only the ${s.what}`);
    }
  } else if (s.value !== undefined) {
    return checked(s.value, `${s.flag}`, s);
  } else {
    const value = s.env === undefined ? undefined : Deno.env.get(s.env);
    return value === undefined || value === "" ? undefined : checked(value, s.env!, s);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new UsageError(`${where}: not text; expected the ${s.what}`);
  }
  return checked(text, where, s);
}

/** The secret without surrounding whitespace; refused when empty or when it is several words or lines. */
function checked(text: string, where: string, s: SecretSource): string {
  const secret = text.trim();
  if (secret === "") throw new UsageError(`${where}: the ${s.what} is empty (give it by ${sources(s)})`);
  if (/\s/.test(secret)) {
    throw new UsageError(`${where}: holds more than one word or line; expected only the ${s.what}`);
  }
  return secret;
}
