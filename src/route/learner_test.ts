import { assert, assertEquals } from "../../tests/assert.ts";
import { prng } from "../../tests/fuzz.ts";
import { LEARNER, RouteLearner } from "./learner.ts";

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

// ---- Simulation: 200 nodes ---------------------------------------------------------------------------------------

const NODES = 200;
const FLOWS = 400;
const ROUND_MS = 100;

interface Net {
  pos: [number, number][];
  blocked: Set<string>;
  loss: Map<string, number>;
  alive: boolean[];
}

const key = (a: number, b: number) => (a < b ? `${a}-${b}` : `${b}-${a}`);

function network(rand: () => number): Net {
  const pos = Array.from({ length: NODES }, () => [rand() * 100, rand() * 100] as [number, number]);
  const blocked = new Set<string>();
  const loss = new Map<string, number>();
  for (let a = 0; a < NODES; a++) {
    for (let b = a + 1; b < NODES; b++) {
      if (rand() < 0.25) blocked.add(key(a, b)); // a quarter of the pairs cannot form a direct tether
      loss.set(key(a, b), rand() < 0.1 ? 0.05 : rand() * 0.01);
    }
  }
  return { pos, blocked, loss, alive: new Array(NODES).fill(true) };
}

/** One-way latency of a link (ms): distance on the plane, plus 1. */
function latency(n: Net, a: number, b: number): number {
  return Math.hypot(n.pos[a]![0] - n.pos[b]![0], n.pos[a]![1] - n.pos[b]![1]) + 1;
}

function linkUp(n: Net, a: number, b: number): boolean {
  return !n.blocked.has(key(a, b)) && n.alive[a]! && n.alive[b]!;
}

/** The nodes a message visits (origin first) and whether it arrived; never more than two hops. */
function send(n: Net, rand: () => number, src: number, hop: number, dst: number) {
  const path = [src, hop];
  if (!linkUp(n, src, hop) || rand() < n.loss.get(key(src, hop))!) return { path, delivered: false, ms: 0 };
  let ms = latency(n, src, hop);
  if (hop !== dst) {
    // A relay forwards only on its own direct tether to the destination.
    path.push(dst);
    if (!linkUp(n, hop, dst) || rand() < n.loss.get(key(hop, dst))!) return { path, delivered: false, ms };
    ms += latency(n, hop, dst);
  }
  return { path, delivered: true, ms };
}

Deno.test("learner simulation: 200 nodes deliver, never loop, converge near the best path, and route around failures", () => {
  const rand = prng(42);
  const net = network(rand);
  let now = 0;
  const learners = Array.from(
    { length: NODES },
    (_, i) => new RouteLearner({ clock: () => now, random: prng(1000 + i) }),
  );
  const flows: { src: number; dst: number; best: number; chosen: number[]; latencies: number[] }[] = [];
  while (flows.length < FLOWS) {
    const src = Math.floor(rand() * NODES);
    const dst = Math.floor(rand() * NODES);
    if (src === dst) continue;
    // Discovery: the direct path if it can form, and up to 8 relays that answered "I reach it directly".
    const relays = [];
    for (let r = 0; r < NODES && relays.length < 8; r++) {
      const pick = Math.floor(rand() * NODES);
      if (pick !== src && pick !== dst && linkUp(net, src, pick) && linkUp(net, pick, dst)) relays.push(pick);
    }
    const candidates = [...new Set([...(linkUp(net, src, dst) ? [dst] : []), ...relays])];
    if (candidates.length === 0) continue;
    const pathMs = (h: number) =>
      h === dst ? latency(net, src, dst) : latency(net, src, h) + latency(net, h, dst);
    learners[src]!.setCandidates(String(dst), candidates.map(String));
    flows.push({ src, dst, best: Math.min(...candidates.map(pathMs)), chosen: [], latencies: [] });
  }

  /** One message per flow; returns the delivered share among flows whose two ends are alive. */
  const round = (record: boolean) => {
    let delivered = 0;
    let live = 0;
    for (const f of flows) {
      const l = learners[f.src]!;
      const hop = Number(l.choose(String(f.dst)));
      const r = send(net, rand, f.src, hop, f.dst);
      assertEquals(new Set(r.path).size, r.path.length, `loop on ${r.path}`);
      assert(r.path.length <= 3);
      if (!net.alive[hop]!) l.fail(String(f.dst), String(hop)); // its tether fails
      l.observe(String(f.dst), String(hop), r.delivered ? 2 * r.ms : undefined);
      if (net.alive[f.src]! && net.alive[f.dst]!) live++;
      if (r.delivered) delivered++;
      if (record) {
        f.chosen.push(hop);
        if (r.delivered) f.latencies.push(r.ms);
      }
    }
    now += ROUND_MS;
    return delivered / live;
  };

  for (let i = 0; i < 60; i++) round(false); // learning
  const ratios: number[] = [];
  for (let i = 0; i < 200; i++) ratios.push(round(true));
  const delivery = ratios.reduce((a, b) => a + b) / ratios.length;
  assert(delivery > 0.97, `delivery ${delivery}`);

  // Convergence: the hop chosen most (exploitation) is within 20% of the best path for nearly every flow, and
  // the average latency actually seen, exploration included, for most.
  const mode = (xs: number[]) => {
    const count = new Map<number, number>();
    for (const x of xs) count.set(x, (count.get(x) ?? 0) + 1);
    return [...count].sort((a, b) => b[1] - a[1])[0]![0];
  };
  let nearBest = 0;
  let averageNearBest = 0;
  for (const f of flows) {
    const h = mode(f.chosen);
    const ms = h === f.dst ? latency(net, f.src, f.dst) : latency(net, f.src, h) + latency(net, h, f.dst);
    if (ms <= 1.2 * f.best) nearBest++;
    const avg = f.latencies.reduce((a, b) => a + b, 0) / f.latencies.length;
    if (avg <= 1.2 * f.best) averageNearBest++;
  }
  assert(
    nearBest / flows.length >= 0.95,
    `only ${nearBest}/${flows.length} flows settled within 20% of the best`,
  );
  assert(
    averageNearBest / flows.length >= 0.9,
    `only ${averageNearBest}/${flows.length} averaged within 20%`,
  );

  // Failures: kill the ten relays carrying the most flows; each affected flow must deliver again within a second.
  const load = new Map<number, number>();
  for (const f of flows) {
    const h = mode(f.chosen);
    if (h !== f.dst) load.set(h, (load.get(h) ?? 0) + 1);
  }
  const victims = [...load].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([h]) => h);
  for (const v of victims) net.alive[v] = false;
  const affected = flows.filter((f) =>
    victims.includes(mode(f.chosen)) && !victims.includes(f.dst) && !victims.includes(f.src)
  );
  assert(affected.length > 10, `only ${affected.length} flows used the killed relays`);
  for (const f of flows) f.latencies = [];
  for (let i = 0; i < 10; i++) round(true); // one simulated second
  const recovered = affected.filter((f) => f.latencies.length > 0).length;
  assertEquals(recovered, affected.length, "every flow that lost its relay delivers again within a second");
  const after: number[] = [];
  for (let i = 0; i < 100; i++) after.push(round(false));
  const deliveryAfter = after.reduce((a, b) => a + b) / after.length;
  assert(deliveryAfter > 0.97, `delivery after the failures ${deliveryAfter}`);
  console.log(
    `delivery ${
      (100 * delivery).toFixed(1)
    }%, ${nearBest}/${flows.length} flows within 20% of the best path, ` +
      `${affected.length} flows moved off ${victims.length} killed relays within 1 s, then ${
        (100 * deliveryAfter).toFixed(1)
      }%`,
  );
});
