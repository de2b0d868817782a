import { assert, assertEquals } from "../../tests/assert.ts";
import { prng } from "../../tests/fuzz.ts";
import { LEARNER, RouteLearner } from "./learner.ts";
import { NEAR, quantile, simulate } from "./simulation.ts";

Deno.test("learner: tries each candidate, then keeps the direct path while it is not clearly worse", () => {
  const l = new RouteLearner({ clock: () => 0, random: () => 0.99 });
  l.setCandidates("d", ["d", "r1", "r2"]);
  const seen = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const hop = l.choose("d")!;
    seen.add(hop);
    l.observe("d", hop, { d: 20, r1: 18, r2: 40 }[hop]);
  }
  assertEquals(seen, new Set(["d", "r1", "r2"]));
  assertEquals(l.choose("d"), "d"); // r1 is better, but not clearly (18 > 0.8 × 20)
  for (let i = 0; i < 10; i++) l.observe("d", "d", 60); // direct degrades
  assertEquals(l.choose("d"), "r1");
});

Deno.test("learner: a failed hop is benched at once, with a backoff that doubles and resets on success", () => {
  let now = 0;
  const l = new RouteLearner({ clock: () => now, random: () => 0.99 });
  l.setCandidates("d", ["d", "r"]);
  l.observe("d", "d", 10);
  l.observe("d", "r", 30);
  l.fail("d", "d");
  assertEquals(l.choose("d"), "r");
  now += LEARNER.FIRST_BACKOFF_MS;
  assertEquals(l.choose("d"), "d");
  l.fail("d", "d");
  now += LEARNER.FIRST_BACKOFF_MS;
  assertEquals(l.choose("d"), "r", "second failure: twice the backoff");
  now += LEARNER.FIRST_BACKOFF_MS;
  assertEquals(l.choose("d"), "d");
  l.observe("d", "d", 10);
  assertEquals(l.stats("d").find((s) => s.hop === "d")!.backoffMs, 0);
});

Deno.test("learner: never chooses the hop a message came from, and nothing when nothing is left", () => {
  const l = new RouteLearner({ clock: () => 0, random: () => 0.99 });
  l.setCandidates("d", ["r"]);
  assertEquals(l.choose("d", "r"), undefined);
  assertEquals(l.choose("nowhere"), undefined);
});

Deno.test("learner: a hop that never acknowledges anything stops being chosen", () => {
  const l = new RouteLearner({ clock: () => 0, random: () => 0.99 });
  l.setCandidates("d", ["dead", "r"]);
  l.observe("d", "r", 50);
  assertEquals(l.choose("d"), "dead"); // untried: gets its chance
  l.observe("d", "dead", undefined);
  assertEquals(l.choose("d"), "r");
});

// ---- Simulation: 1000 nodes with churn, graded against an oracle (the model is drawn in simulation.ts) ----------

Deno.test("learner simulation: 1000 nodes with 5% churn a minute deliver, never loop, recover within a second, and stay near the oracle's best path", () => {
  const options = { nodes: 1000, flows: 1000, minutes: 4, warmupMinutes: 0.5, churnPerMinute: 0.05 };
  const r = simulate({ ...options, seed: 42, prng });
  // Every flow has both ends alive: a flow ends the moment one of them leaves.
  const delivery = r.delivered / r.messages;
  const nearFlows = r.flowsNearOracle / r.flowsGraded;
  const nearMessages = r.ratios.filter((x) => x <= NEAR).length / r.ratios.length;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const ratio = (xs: Float64Array) =>
    `median ${quantile(xs, 0.5).toFixed(3)}, p95 ${quantile(xs, 0.95).toFixed(2)}`;
  const measured = options.minutes - options.warmupMinutes;
  console.log([
    `${options.nodes} nodes, ${options.flows} flows, ${measured} minutes measured: ${r.leaves} nodes left and ` +
    `were replaced, ${r.flowsStarted} flows started`,
    `delivery ${pct(delivery)} (${r.noHop} of ${r.messages} messages found no open tether)`,
    `path / oracle's best: ${ratio(r.ratios)}; within 20%: ${pct(nearMessages)} of messages, ` +
    `${r.flowsNearOracle}/${r.flowsGraded} flows (${pct(nearFlows)}) by their median`,
    `path / best candidate discovered: ${ratio(r.candidateRatios)}`,
    `${r.recoveries.length} flows lost their relay; they delivered again after median ` +
    `${quantile(r.recoveries, 0.5)} ms, at most ${r.recoveries.at(-1)} ms`,
  ].join("\n"));
  assertEquals(r.oracleErrors, 0, "the oracle kept incrementally agrees with one recomputed from scratch");
  assertEquals(r.loops, 0, "a message never visits a node twice, nor takes a hop that is not a candidate");
  assert(r.leaves >= 0.95 * measured * options.churnPerMinute * options.nodes, `only ${r.leaves} nodes left`);
  assert(delivery > 0.97, `delivery ${delivery}`);
  // Exploration (ε, and one message on each newly discovered relay) makes the tail; the bulk sits on the best.
  assert(quantile(r.ratios, 0.5) <= 1.05, `median ratio ${quantile(r.ratios, 0.5)}`);
  assert(quantile(r.ratios, 0.95) <= 3, `p95 ratio ${quantile(r.ratios, 0.95)}`);
  assert(nearMessages >= 0.85, `only ${pct(nearMessages)} of messages within 20% of the oracle`);
  assert(nearFlows >= 0.9, `only ${pct(nearFlows)} of flows mostly within 20% of the oracle`);
  assert(
    r.recoveries.length >= 30,
    `only ${r.recoveries.length} flows lost their relay: recovery went untested`,
  );
  assertEquals(r.recoveriesCutShort, 0, "no flow that lost its relay was still without one when it ended");
  assert(r.recoveries.at(-1)! <= 1_000, `a flow took ${r.recoveries.at(-1)} ms to deliver again`);
});

Deno.test("learner simulation: cooperative learning (relays share their measured onward legs) beats learning alone", () => {
  const options = {
    nodes: 1000,
    flows: 1000,
    minutes: 2.5,
    warmupMinutes: 0.5,
    churnPerMinute: 0.05,
    seed: 7,
    prng,
  };
  const alone = simulate({ ...options, cooperative: false });
  const together = simulate({ ...options, cooperative: true });
  const near = (xs: Float64Array) => xs.filter((x) => x <= NEAR).length / xs.length;
  const line = (name: string, r: typeof alone) =>
    `${name}: delivery ${(100 * r.delivered / r.messages).toFixed(2)}%, within 20% of the oracle ` +
    `${(100 * near(r.ratios)).toFixed(1)}% (p95 ${
      quantile(r.ratios, 0.95).toFixed(2)
    }), in a flow's first 10 s ` +
    `${(100 * near(r.earlyRatios)).toFixed(1)}% (p90 ${quantile(r.earlyRatios, 0.9).toFixed(2)}), ` +
    `${r.tethersFormed} tethers formed, ${
      r.controlPerNodeMinute.toFixed(1)
    } route messages per node and minute`;
  console.log(`${line("alone", alone)}\n${line("together", together)}`);
  assert(together.delivered / together.messages >= alone.delivered / alone.messages - 0.001, "delivery kept");
  assert(near(together.ratios) > near(alone.ratios), "more messages near the oracle");
  assert(quantile(together.ratios, 0.95) < quantile(alone.ratios, 0.95), "a shorter tail");
  assert(quantile(together.earlyRatios, 0.9) < quantile(alone.earlyRatios, 0.9), "newcomers route better");
  assert(together.tethersFormed < 0.75 * alone.tethersFormed, "far fewer tethers formed only to explore");
  // Sharing rides the answers that exist anyway: no message more per node.
  assert(together.controlPerNodeMinute <= alone.controlPerNodeMinute * 1.02, "no more control messages");
});

Deno.test("learner: a relay's shared onward leg is its cost until measured, and keeps a hopeless relay unexplored", () => {
  const l = new RouteLearner({ clock: () => 0, random: () => 0.99 });
  l.setCandidates("d", ["d", "near", "far"], new Map([["near", 5], ["far", 80]]));
  assertEquals(l.choose("d"), "d"); // no prior: optimism, tried first
  l.observe("d", "d", 40);
  assertEquals(l.choose("d"), "near"); // 5 < 40: worth a try; "far" (80 > 40) is not
  l.observe("d", "near", 60); // it understated: judged by what was measured
  assertEquals(l.choose("d"), "d");
  // Exploring (random below ε) picks among the direct path and "near", never "far".
  const picks = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const draws = [0, i / 50];
    const explorer = new RouteLearner({ clock: () => 0, random: () => draws.shift() ?? 0.99 });
    explorer.setCandidates("d", ["d", "near", "far"], new Map([["near", 5], ["far", 80]]));
    explorer.observe("d", "d", 40);
    explorer.observe("d", "near", 60);
    picks.add(explorer.choose("d")!);
  }
  assertEquals(picks, new Set(["d", "near"]));
});

Deno.test("learner: spreads over healthy hops not much costlier than the best, cheapest first; never a benched or lossy one", () => {
  let now = 0;
  const l = new RouteLearner({ clock: () => now, random: () => 0.99 });
  l.setCandidates("d", ["d", "near", "slow", "lossy", "down", "fresh"], new Map([["fresh", 3]]));
  for (const [hop, rtt] of [["d", 5], ["near", 12], ["slow", 200], ["lossy", 6], ["down", 4]] as const) {
    l.observe("d", hop, rtt);
  }
  for (let i = 0; i < 20; i++) l.observe("d", "lossy", undefined);
  l.fail("d", "down");
  // Best 3 (fresh's shared leg), so the bound is 23 ms: near is in, slow (200) is not.
  assertEquals(l.spread("d"), ["fresh", "d", "near"]);
  assertEquals(l.spread("d", (hop) => hop !== "fresh"), ["d", "near"]);
  now += LEARNER.FIRST_BACKOFF_MS;
  assertEquals(l.spread("d"), ["fresh", "down", "d", "near"]);
  assertEquals(l.spread("unknown"), []);
});
