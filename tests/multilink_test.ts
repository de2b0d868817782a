/**
 * Concurrent multi-link end to end (the testbed: tests/multilink.ts): one TCP transfer from A to B uses A's direct
 * path and both relays together, and loses nothing when the direct path is cut in the middle of it. How fast it
 * goes against the paths' capacity is the bench's to measure (`deno task bench multilink`): here only that it
 * beats what one path alone can carry, which it cannot without using several at once.
 */

import { assert } from "./assert.ts";
import { multilinkRealm, PATH_MBIT } from "./multilink.ts";
import { netnsUnavailable } from "./netns.ts";

Deno.test({
  name:
    "multi-link: one TCP transfer spreads over a direct path and two relays, 20 Mbit/s each, and survives the direct path's cut",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    await using m = await multilinkRealm();
    const first = await m.transfer(60 * 1024 * 1024, 5204);
    console.log(`a's paths to b (peers --json): ${await m.paths()}`);
    console.log(
      `60 MiB A→B: ${first.mbit.toFixed(1)} Mbit/s over three paths of ${PATH_MBIT}; relayed by C ` +
        `${(100 * first.relayed[0]).toFixed(0)}%, by D ${(100 * first.relayed[1]).toFixed(0)}%`,
    );
    assert(first.intact, "bytes differ");
    for (const [i, share] of first.relayed.entries()) {
      assert(share > 0.2, `relay ${"cd"[i]} carried only ${(100 * share).toFixed(0)}%`);
    }
    assert(first.mbit > 1.25 * PATH_MBIT, `${first.mbit.toFixed(1)} Mbit/s: no more than one path carries`);

    // Two seconds into another transfer, everything between A and B is dropped: the relays carry the rest.
    const second = await m.transfer(40 * 1024 * 1024, 5205, async () => {
      await new Promise((r) => setTimeout(r, 2_000));
      await m.cutDirect();
    });
    console.log(
      `40 MiB A→B, the direct path cut 2 s in: ${second.mbit.toFixed(1)} Mbit/s, the longest wait for data ` +
        `${second.longestGapMs} ms; a's paths to b: ${await m.paths()}`,
    );
    assert(second.intact, "bytes differ after the cut");
  },
});
