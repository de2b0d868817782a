import { assert, assertEquals } from "../../tests/assert.ts";
import { COMMANDS } from "./commands.ts";
import { main, VERSION } from "./main.ts";

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("cli: --help lists every contract command and marks the ones not built", async () => {
  const { code, out } = await cli("--help");
  assertEquals(code, 0);
  for (const c of COMMANDS) {
    assert(out.includes(`usage: veilnet-conflux ${c.usage}`), c.name);
    assertEquals(out.includes(`${c.summary} (not built yet)`), c.run === undefined, c.name);
  }
});

Deno.test("cli: --version prints the version", async () => {
  assertEquals(await cli("-V"), { code: 0, out: VERSION, err: "" });
});

Deno.test("cli: a command not built yet says so in one line and exits 2", async () => {
  for (const argv of [["ping", "x"], ["up"], ["install"]]) {
    const { code, out, err } = await cli(...argv);
    assertEquals(code, 2);
    assertEquals(out, "");
    assertEquals(err.split("\n").length, 1);
    assert(err.includes("is not built yet"), err);
  }
});

Deno.test("cli: unknown commands and flags exit 2 with one clear line", async () => {
  const unknown = await cli("frobnicate");
  assertEquals([unknown.code, unknown.err], [
    2,
    'veilnet-conflux: unknown command "frobnicate" (see --help)',
  ]);
  const flag = await cli("--frob");
  assertEquals(flag.code, 2);
  assert(flag.err.includes("--frob") && flag.err.includes("see --help"), flag.err);
});

Deno.test("cli: COMMAND --help prints that command's usage", async () => {
  const { code, out } = await cli("peers", "--help");
  assertEquals(code, 0);
  assert(out.startsWith("usage: veilnet-conflux peers [--json]"), out);
});
