import { assertEquals, assertRejects, assertThrows } from "../../tests/assert.ts";
import { tempDir } from "../../tests/harness.ts";
import { UsageError } from "./args.ts";
import { checkSecretSources, readSecret, type SecretInput, type SecretSource } from "./secret.ts";

const ENV = "VEILNET_TEST_SECRET";

/** A registration-token source with the given flag values. */
function source(value?: string, file?: string): SecretSource {
  return { what: "registration token", flag: "-t/--token", value, fileFlag: "--token-file", file, env: ENV };
}

/** Standard input holding `text` (read at most once), and the warnings given. */
function input(text = ""): SecretInput & { warnings: string[]; reads: number } {
  const fake = {
    warnings: [] as string[],
    reads: 0,
    stdin: (limit: number) => {
      fake.reads++;
      const bytes = new TextEncoder().encode(text);
      return bytes.length > limit
        ? Promise.reject(new RangeError(`more than ${limit} bytes`))
        : Promise.resolve(bytes);
    },
    warn: (line: string) => void fake.warnings.push(line),
  };
  return fake;
}

/** Runs `fn` with ENV set to `value` (or unset), restoring it after. */
async function withEnv<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = Deno.env.get(ENV);
  if (value === undefined) Deno.env.delete(ENV);
  else Deno.env.set(ENV, value);
  try {
    return await fn();
  } finally {
    if (before === undefined) Deno.env.delete(ENV);
    else Deno.env.set(ENV, before);
  }
}

Deno.test("readSecret takes the token from the flag, standard input, a file or the environment, in that order", async () => {
  await using dir = await tempDir("vc-secret-");
  const file = `${dir.path}/token`;
  await Deno.writeTextFile(file, "REG-from-file\n", { mode: 0o600 });
  const cases: [
    n: number,
    src: SecretSource,
    stdin: string,
    env: string | undefined,
    want: string | undefined,
  ][] = [
    [1, source("REG-flag"), "", "REG-env", "REG-flag"],
    [2, source("-"), "REG-stdin\n", "REG-env", "REG-stdin"],
    [3, source("-"), "  REG-stdin-crlf\r\n", undefined, "REG-stdin-crlf"],
    [4, source(undefined, file), "", "REG-env", "REG-from-file"],
    [5, source(), "REG-stdin", "REG-env", "REG-env"],
    [6, source(), "REG-stdin", undefined, undefined],
    [7, source(), "", "", undefined], // an empty variable is no variable, as before
  ];
  for (const [n, src, stdin, env, want] of cases) {
    const fake = input(stdin);
    assertEquals(await withEnv(env, () => readSecret(src, fake)), want, `case ${n}`);
    assertEquals(fake.reads, src.value === "-" ? 1 : 0, `case ${n}: standard input read only for "-"`);
    assertEquals(fake.warnings, [], `case ${n}`);
  }
});

Deno.test("readSecret refuses an empty, unreadable, oversized, binary or multi-line token, saying where from", async () => {
  await using dir = await tempDir("vc-secret-");
  const write = async (name: string, data: string | Uint8Array) => {
    const path = `${dir.path}/${name}`;
    if (typeof data === "string") await Deno.writeTextFile(path, data, { mode: 0o600 });
    else await Deno.writeFile(path, data, { mode: 0o600 });
    return path;
  };
  const empty = await write("empty", "\n");
  const two = await write("two", "REG-a\nREG-b\n");
  const binary = await write("binary", new Uint8Array([0xff, 0xfe, 0x00]));
  const big = await write("big", "A".repeat(64 * 1024 + 1));
  const cases: [n: number, src: SecretSource, stdin: string, says: string][] = [
    [1, source(undefined, empty), "", `--token-file ${empty}: the registration token is empty`],
    [2, source(undefined, `${dir.path}/missing`), "", `--token-file ${dir.path}/missing: cannot read`],
    [3, source(undefined, dir.path), "", `--token-file ${dir.path}: cannot read`],
    [4, source(undefined, two), "", "holds more than one word or line"],
    [5, source(undefined, binary), "", "not text"],
    [6, source(undefined, big), "", "more than 65536 bytes"],
    [7, source("-"), "", "-t/--token - (standard input): the registration token is empty"],
    [8, source("-"), "A".repeat(64 * 1024 + 1), "more than 65536 bytes"],
    [9, source(""), "", "-t/--token: the registration token is empty"],
    [10, source("REG", empty), "", "-t/--token and --token-file exclude each other"],
    [11, source("-", empty), "", "-t/--token and --token-file exclude each other"],
  ];
  for (const [n, src, stdin, says] of cases) {
    try {
      await assertRejects(() => readSecret(src, input(stdin)), UsageError, says);
    } catch (error) {
      throw new Error(`case ${n}: ${(error as Error).message}`, { cause: error });
    }
  }
});

Deno.test("readSecret warns when others may read the token file, and still reads it", async () => {
  await using dir = await tempDir("vc-secret-");
  const file = `${dir.path}/token`;
  await Deno.writeTextFile(file, "REG-open\n");
  Deno.chmodSync(file, 0o644);
  const fake = input();
  assertEquals(await readSecret(source(undefined, file), fake), "REG-open");
  assertEquals(fake.warnings, [`--token-file ${file} is readable by other users: chmod 600 ${file}`]);
});

Deno.test("checkSecretSources: standard input serves one secret of a command line", () => {
  const jwt = {
    ...source("-"),
    what: "identity token",
    flag: "--jwt",
    fileFlag: "--jwt-file",
    env: undefined,
  };
  assertThrows(() => checkSecretSources([source("-"), jwt]), UsageError, "-t/--token - and --jwt -");
  checkSecretSources([source("-"), { ...jwt, value: undefined, file: "/f" }]);
  checkSecretSources([source("REG"), jwt]);
});
