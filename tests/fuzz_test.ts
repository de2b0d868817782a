/**
 * The short fuzz pass CI runs: every target of `deno task fuzz` (fuzz/targets.ts) with a few thousand hostile
 * inputs. The long pass (a million each) is `deno task fuzz`. The SDP target runs in a process of its own, as
 * `deno task fuzz` does: libdatachannel stays out of the test runner.
 */

import { assert, assertEquals } from "./assert.ts";
import { targets } from "../fuzz/targets.ts";

for (const target of (await targets()).filter((t) => t.name !== "sdp")) {
  Deno.test(`fuzz (short): ${target.name} accepts or refuses every hostile input with its own error`, async () => {
    const result = await target.run(3_000);
    assertEquals(
      result.failure,
      undefined,
      `${target.name}: ${result.failure?.what}: ${result.failure?.error}`,
    );
    assertEquals(result.inputs, 3_000);
  });
}

Deno.test("fuzz (short): sdp from a peer is accepted or refused with libdatachannel's error, never a crash", async () => {
  const fuzz = new URL("../fuzz/fuzz.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--quiet", fuzz, "3000", "sdp"] })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, text);
  assert(text.includes("3000 inputs"), text);
});
