/**
 * Prints, as one JSON array, the ICE candidates gathered with the ICE servers given as a JSON array in the first
 * argument (the second: how long to wait, ms). A process of its own keeps libdatachannel out of the test runner's
 * workers; run it inside a namespace with `ip netns exec`.
 * @module
 */

import { gatherCandidates } from "../src/tether/webrtc.ts";

if (import.meta.main) {
  const candidates = await gatherCandidates(JSON.parse(Deno.args[0] ?? "[]"), Number(Deno.args[1] ?? 5_000));
  console.log(JSON.stringify(candidates));
  Deno.exit(0);
}
