/**
 * `deno task fuzz`: every parser that takes bytes from the network, fed hostile inputs (noise, truncations,
 * extensions, bit flips, overwrites of valid messages: tests/fuzz.ts). A parser passes when each input is either
 * accepted or refused with its own error type; anything else (another exception, a hang) is a failure, and the
 * input is written to `fuzz/crashes/` to be replayed.
 *
 * `deno task fuzz` runs 1,000,000 inputs per target; `deno task fuzz -- 20000 control dns` fewer, and some.
 * CI runs a short pass (tests/fuzz_test.ts).
 * @module
 */

import { shutdownWebRtc } from "../src/tether/webrtc.ts";
import { targets } from "./targets.ts";

const DEFAULT_COUNT = 1_000_000;

if (import.meta.main) {
  const [first, ...rest] = Deno.args;
  const count = first !== undefined && /^\d+$/.test(first) ? Number(first) : DEFAULT_COUNT;
  const names = first !== undefined && /^\d+$/.test(first) ? rest : Deno.args;
  const all = await targets();
  const unknown = names.filter((n) => !all.some((t) => t.name === n));
  if (unknown.length > 0) {
    console.error(
      `fuzz: unknown target(s) ${unknown.join(", ")}; targets: ${all.map((t) => t.name).join(", ")}`,
    );
    Deno.exit(2);
  }
  let failed = false;
  for (const target of all.filter((t) => names.length === 0 || names.includes(t.name))) {
    const started = performance.now();
    const result = await target.run(count);
    const seconds = (performance.now() - started) / 1000;
    const rate = (result.inputs / seconds).toFixed(0);
    if (result.failure) {
      failed = true;
      const path = `${new URL("./crashes/", import.meta.url).pathname}${target.name}-${Date.now()}.bin`;
      await Deno.mkdir(new URL("./crashes/", import.meta.url), { recursive: true });
      await Deno.writeFile(path, result.failure.bytes);
      console.log(`${target.name.padEnd(12)} FAILED after ${result.inputs} inputs: ${result.failure.error}`);
      console.log(`${"".padEnd(12)} input (${result.failure.what}) written to ${path}`);
    } else {
      console.log(
        `${target.name.padEnd(12)} ${String(result.inputs).padStart(9)} inputs in ${seconds.toFixed(1)} s ` +
          `(${rate}/s): ${result.accepted} accepted, the rest refused with the parser's own error`,
      );
    }
  }
  shutdownWebRtc();
  Deno.exit(failed ? 1 : 0);
}
