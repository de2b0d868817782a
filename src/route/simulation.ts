/**
 * A synthetic overlay that drives one RouteLearner per node, for learner_test.ts (test-only: nothing else imports
 * it, and mod.ts does not export it). Nodes join and leave, flows send a message every round, and an oracle knows
 * the best path of every flow at every moment, so the learner's choices can be graded against it.
 *
 * One round (ROUND_MS) at a time:
 *
 *   churn (leave, join, end flows, start flows) ─▶ per flow: next hop ─▶ send ─▶ learner observes ─▶ grade
 *
 * The model:
 * - Links. One-way latency is the distance on a 100 × 100 plane plus 1 ms, plus 20–80 ms for a tenth of the pairs
 *   (bad peering: there a relay can beat the direct path); a quarter of the pairs cannot form a tether; a link
 *   loses up to 1% of messages, a tenth of them 5%. A round-trip sample is twice the one-way time plus up to 10%
 *   jitter. Link properties are a hash of the pair (node ids are never reused), so nothing is stored per pair.
 * - Paths. Direct, or through one relay that forwards only on its own tether to the destination.
 * - Discovery, as the agent does it: a node asks who relays to a destination when a flow starts, every 30 s, and
 *   (at most every 3 s) when the direct path failed or no hop is left; up to 8 random live nodes that can reach the destination answer.
 *   Whether the asker can reach them is found out by trying. A node remembers the last MAX_RELAYS answers.
 * - Cooperation (`cooperative`, as the agent does it): each answer carries the relay's own measured round trip to
 *   the destination, which the asker's learner takes as the relay's prior cost (src/route/learner.ts). Without it
 *   (independent learning), every relay starts at cost 0 and is tried once.
 * - Tethers, as the agent's #nextHop: a message goes on the learner's choice among open tethers; the learner's
 *   unrestricted choice, if not open, is formed (at once if the link is up, else `learner.fail`). A message with no
 *   open tether to take would ride the backup pipeline, which is not modelled: it counts as not delivered.
 * - Leaving. A node leaves without a word: the next message on a tether to it is lost and the tether closes
 *   (`learner.failEverywhere`); the realm notices NOTICE_MS later, and every node drops it from its relay lists.
 * - Churn. `churnPerMinute` of the nodes leave per simulated minute, evenly spread; each is replaced at once by a
 *   new node (a new id, place and learner). Flows with an endpoint that left end; new flows between random live
 *   nodes replace them, so the number of flows stays the same.
 * - The oracle. For each flow, the lowest latency among the paths that exist now: direct if its link is up, and
 *   through every live node whose two links are up (not only the candidates the learner was given). The network
 *   changes only when a node leaves or joins, so the oracle is kept exact incrementally: a flow whose best relay
 *   left is recomputed, and each new node is tried as a relay for every flow.
 * @module
 */

import { RouteLearner } from "./learner.ts";

/** Simulated time between two messages of a flow (ms). */
const ROUND_MS = 100;
/** How long the realm takes to notice that a node left without a word (ms). */
const NOTICE_MS = 5_000;
const QUERY_EVERY_MS = 30_000;
const QUERY_AGAIN_MS = 3_000;
const ANSWERS_PER_QUERY = 8;
const MAX_RELAYS = 12;
/** Ratio of a path's latency to the oracle's best below which it counts as near the best. */
export const NEAR = 1.2;
/** A flow's first messages, those graded as `earlyRatios`: how well a newcomer routes. */
const EARLY_MS = 10_000;

/** What a run is asked to do. */
export interface SimulationOptions {
  nodes: number;
  /** Flows kept running at all times, each sending one message per round. */
  flows: number;
  /** Simulated minutes in all, the warm-up included. */
  minutes: number;
  /** Simulated minutes before anything is measured (every flow starts at once at time 0). */
  warmupMinutes: number;
  /** Share of the nodes that leave (and are replaced) per simulated minute. */
  churnPerMinute: number;
  seed: number;
  /** A seeded random source (say tests/fuzz.ts' prng): the run is deterministic. */
  prng: (seed: number) => () => number;
  /** Whether relays' answers carry their measured round trip to the destination as a prior (default true). */
  cooperative?: boolean;
}

/** What a run measured, after the warm-up. */
export interface SimulationReport {
  leaves: number;
  flowsStarted: number;
  messages: number;
  delivered: number;
  /** Messages that found no open tether (they would ride the backup pipeline; counted as not delivered). */
  noHop: number;
  /** Messages whose path repeated a node, or whose hop was not one of the learner's candidates. */
  loops: number;
  /** For each delivered message: latency of the path taken / the oracle's best, sorted. */
  ratios: Float64Array;
  /** The same against the best candidate the learner was given (what discovery let it achieve), sorted. */
  candidateRatios: Float64Array;
  /** Flows measured for at least 10 s, and those of them whose median ratio was within NEAR of the oracle. */
  flowsGraded: number;
  flowsNearOracle: number;
  /**
   * For each flow whose relay left while both its ends stayed: ms until it delivered again, sorted (0 when the
   * message of that very round already took another hop).
   */
  recoveries: number[];
  /** Flows whose relay left and that ended before delivering again (not counted in `recoveries`). */
  recoveriesCutShort: number;
  /** Flows whose incrementally kept oracle disagreed with a recomputation from scratch (checked each minute). */
  oracleErrors: number;
  /** The same as `ratios`, for the messages of each flow's first EARLY_MS (flows started after the warm-up). */
  earlyRatios: Float64Array;
  /** Tethers formed after the warm-up (each one a handshake in the agent): what exploring costs. */
  tethersFormed: number;
  /** Route queries and answers after the warm-up, per node and minute. */
  controlPerNodeMinute: number;
}

interface SimNode {
  id: number;
  name: string;
  x: number;
  y: number;
  alive: boolean;
  learner: RouteLearner;
  /** Names of the peers this node holds an open tether to (as far as it knows). */
  tethers: Set<string>;
  flows: Set<Flow>;
}

interface Flow {
  src: SimNode;
  dst: SimNode;
  /** Relays that answered, oldest first (names). */
  relays: string[];
  /** Each answering relay's round trip to the destination, as it measured it (ms). */
  onward: Map<string, number>;
  startedAt: number;
  lastQuery: number;
  /** The direct path failed, or no hop was left: ask again (answers arrive by the flow's next message). */
  askSoon: boolean;
  /** The hop the last message took. */
  hop?: SimNode;
  /** When the relay this flow used left, until it delivers again. */
  relayLostAt?: number;
  oracle: { ms: number; via?: SimNode };
  /** Best path among the candidates (ms), refreshed when they change or one leaves. */
  candidateBestMs: number;
  graded: number;
  near: number;
}

/** A uniform number in [0, 1) from a pair of node ids and a salt: the same whatever the order of the pair. */
function pairUnit(a: number, b: number, salt: number): number {
  let h = Math.imul(Math.min(a, b), 0x9e3779b1) ^ Math.imul(Math.max(a, b) + salt, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return ((h ^ (h >>> 16)) >>> 0) / 2 ** 32;
}

function linkUp(a: SimNode, b: SimNode): boolean {
  return a.alive && b.alive && pairUnit(a.id, b.id, 1) >= 0.25;
}

function linkLoss(a: SimNode, b: SimNode): number {
  return pairUnit(a.id, b.id, 2) < 0.1 ? 0.05 : 0.01 * pairUnit(a.id, b.id, 3);
}

/** One-way latency of the link (ms). */
function latency(a: SimNode, b: SimNode): number {
  const detour = pairUnit(a.id, b.id, 4) < 0.1 ? 20 + 60 * pairUnit(a.id, b.id, 5) : 0;
  const [dx, dy] = [a.x - b.x, a.y - b.y];
  return Math.sqrt(dx * dx + dy * dy) + 1 + detour;
}

/** One-way latency from `src` to `dst` through `hop` (`dst` itself for the direct path), Infinity if it is down. */
function pathMs(src: SimNode, hop: SimNode, dst: SimNode): number {
  if (hop === dst) return linkUp(src, dst) ? latency(src, dst) : Infinity;
  return linkUp(src, hop) && linkUp(hop, dst) ? latency(src, hop) + latency(hop, dst) : Infinity;
}

/** Runs the simulation and reports what it measured after the warm-up. */
export function simulate(o: SimulationOptions): SimulationReport {
  const rand = o.prng(o.seed);
  let now = 0;
  const byName = new Map<string, SimNode>();
  const live: SimNode[] = [];
  const flows = new Set<Flow>();
  let nextId = 0;
  const warmupMs = o.warmupMinutes * 60_000;
  const endMs = o.minutes * 60_000;
  const measuring = () => now >= warmupMs;
  const report: SimulationReport = {
    leaves: 0,
    flowsStarted: 0,
    messages: 0,
    delivered: 0,
    noHop: 0,
    loops: 0,
    ratios: new Float64Array(0),
    candidateRatios: new Float64Array(0),
    flowsGraded: 0,
    flowsNearOracle: 0,
    recoveries: [],
    recoveriesCutShort: 0,
    oracleErrors: 0,
    earlyRatios: new Float64Array(0),
    tethersFormed: 0,
    controlPerNodeMinute: 0,
  };
  const cooperative = o.cooperative ?? true;
  let controlMessages = 0;
  const early: number[] = [];
  // One entry per delivered message at most: flows × measured rounds.
  const capacity = o.flows * Math.ceil((endMs - warmupMs) / ROUND_MS);
  const ratios = new Float64Array(capacity);
  const candidateRatios = new Float64Array(capacity);
  let graded = 0;

  const join = () => {
    const id = nextId++;
    const node: SimNode = {
      id,
      name: String(id),
      x: rand() * 100,
      y: rand() * 100,
      alive: true,
      learner: new RouteLearner({ clock: () => now, random: o.prng(pairUnit(o.seed, id, 6) * 2 ** 32) }),
      tethers: new Set(),
      flows: new Set(),
    };
    byName.set(node.name, node);
    live.push(node);
    return node;
  };
  const randomLive = () => live[Math.floor(rand() * live.length)]!;

  // ---- The oracle -----------------------------------------------------------------------------------------------

  const bestFromScratch = (src: SimNode, dst: SimNode): Flow["oracle"] => {
    let best: Flow["oracle"] = { ms: pathMs(src, dst, dst) };
    for (const r of live) {
      if (r === src || r === dst) continue;
      const ms = pathMs(src, r, dst);
      if (ms < best.ms) best = { ms, via: r };
    }
    return best;
  };

  // ---- Discovery and candidates ---------------------------------------------------------------------------------

  const refreshCandidates = (f: Flow) => {
    f.src.learner.setCandidates(f.dst.name, [f.dst.name, ...f.relays], cooperative ? f.onward : undefined);
    f.candidateBestMs = pathMs(f.src, f.dst, f.dst);
    for (const r of f.relays) {
      f.candidateBestMs = Math.min(f.candidateBestMs, pathMs(f.src, byName.get(r)!, f.dst));
    }
  };

  /** The agent's #askForRelays: answered at once by up to ANSWERS_PER_QUERY nodes that reach the destination. */
  const ask = (f: Flow) => {
    if (now - f.lastQuery < QUERY_AGAIN_MS) return;
    f.lastQuery = now;
    f.askSoon = false;
    if (measuring()) controlMessages++;
    let answers = 0;
    for (let tries = 0; tries < 4 * ANSWERS_PER_QUERY && answers < ANSWERS_PER_QUERY; tries++) {
      const r = randomLive();
      if (r === f.src || r === f.dst || !linkUp(r, f.dst)) continue;
      answers++;
      if (measuring()) controlMessages++;
      const at = f.relays.indexOf(r.name);
      if (at >= 0) f.relays.splice(at, 1);
      f.relays.push(r.name);
      f.onward.set(r.name, 2 * latency(r, f.dst) * (1 + 0.1 * rand()));
    }
    // Forget the oldest answers beyond MAX_RELAYS, but not the relay in use.
    for (let i = 0; f.relays.length > MAX_RELAYS && i < f.relays.length;) {
      if (f.relays[i] === f.hop?.name) i++;
      else f.onward.delete(f.relays.splice(i, 1)[0]!);
    }
    refreshCandidates(f);
  };

  const startFlow = () => {
    for (;;) {
      const src = randomLive();
      const dst = randomLive();
      if (src === dst || [...src.flows].some((f) => f.dst === dst)) continue;
      const f: Flow = {
        src,
        dst,
        relays: [],
        onward: new Map(),
        startedAt: now,
        lastQuery: -Infinity,
        askSoon: false,
        oracle: bestFromScratch(src, dst),
        candidateBestMs: Infinity,
        graded: 0,
        near: 0,
      };
      src.flows.add(f);
      dst.flows.add(f);
      flows.add(f);
      ask(f);
      if (measuring()) report.flowsStarted++;
      return;
    }
  };

  const endFlow = (f: Flow) => {
    flows.delete(f);
    f.src.flows.delete(f);
    f.dst.flows.delete(f);
    if (f.relayLostAt !== undefined && measuring()) report.recoveriesCutShort++;
    if (f.graded >= 10_000 / ROUND_MS) {
      report.flowsGraded++;
      if (2 * f.near >= f.graded) report.flowsNearOracle++;
    }
  };

  // ---- Churn ----------------------------------------------------------------------------------------------------

  const notices: { at: number; node: SimNode }[] = [];

  const leave = (node: SimNode) => {
    node.alive = false;
    live.splice(live.indexOf(node), 1);
    if (measuring()) report.leaves++;
    for (const f of [...node.flows]) endFlow(f);
    for (const f of flows) {
      if (f.hop === node && f.relayLostAt === undefined) f.relayLostAt = now;
      if (f.oracle.via === node) f.oracle = bestFromScratch(f.src, f.dst);
      if (f.relays.includes(node.name)) refreshCandidates(f);
    }
    notices.push({ at: now + NOTICE_MS, node });
  };

  /** The realm tells every node that `node` left: it is forgotten as a destination, a relay and a tether. */
  const notice = (node: SimNode) => {
    byName.delete(node.name);
    for (const n of live) {
      n.learner.forget(node.name);
      n.tethers.delete(node.name);
    }
    for (const f of flows) {
      const at = f.relays.indexOf(node.name);
      if (at < 0) continue;
      f.relays.splice(at, 1);
      f.onward.delete(node.name);
      refreshCandidates(f);
    }
  };

  const arrive = () => {
    const node = join();
    for (const f of flows) {
      if (f.src === node || f.dst === node) continue;
      const ms = pathMs(f.src, node, f.dst);
      if (ms < f.oracle.ms) f.oracle = { ms, via: node };
    }
  };

  // ---- One message --------------------------------------------------------------------------------------------

  /**
   * The agent's #nextHop: the learner's choice among open tethers; its free choice, if not open, gets a tether
   * formed. When the free choice is open it is also the choice among open tethers (bar exploration), so the
   * second call to the learner is saved: it is most of the run's time.
   */
  const nextHop = (f: Flow): SimNode | undefined => {
    const { learner, tethers } = f.src;
    const d = f.dst.name;
    const wanted = learner.choose(d);
    let chosen = wanted;
    if (wanted !== undefined && !tethers.has(wanted)) {
      chosen = learner.choose(d, undefined, (h) => tethers.has(h));
      const hop = byName.get(wanted);
      if (hop && linkUp(f.src, hop)) {
        tethers.add(wanted);
        if (measuring()) report.tethersFormed++;
        chosen ??= wanted;
      } else {
        learner.fail(d, wanted);
        if (wanted === d) f.askSoon = true;
      }
    }
    if (chosen === undefined) return undefined;
    if (chosen !== d && !f.relays.includes(chosen)) report.loops++; // not a candidate: the learner made it up
    return byName.get(chosen);
  };

  /** Sends one message of `f`; returns the one-way latency if it was delivered. */
  const send = (f: Flow, hop: SimNode): number | undefined => {
    const { src, dst } = f;
    const learner = src.learner;
    const path = hop === dst ? [src, dst] : [src, hop, dst];
    if (hop === src) report.loops++; // the only way a path of at most two hops can repeat a node
    if (!hop.alive) {
      // The tether to a node that left: the message is lost and the tether closes.
      src.tethers.delete(hop.name);
      learner.failEverywhere(hop.name);
      return undefined;
    }
    let ms = 0;
    for (let i = 1; i < path.length; i++) {
      const [a, b] = [path[i - 1]!, path[i]!];
      if (!linkUp(a, b) || rand() < linkLoss(a, b)) {
        learner.observe(dst.name, hop.name, undefined);
        return undefined;
      }
      ms += latency(a, b);
    }
    learner.observe(dst.name, hop.name, 2 * ms * (1 + 0.1 * rand()));
    return ms;
  };

  const round = () => {
    for (const f of flows) {
      if (f.askSoon || now - f.lastQuery >= QUERY_EVERY_MS) ask(f);
      const hop = nextHop(f);
      if (hop === undefined) f.askSoon = true;
      const ms = hop === undefined ? undefined : send(f, hop);
      if (hop !== undefined) f.hop = hop;
      if (ms !== undefined && f.relayLostAt !== undefined) {
        if (measuring()) report.recoveries.push(now - f.relayLostAt);
        f.relayLostAt = undefined;
      }
      if (!measuring()) continue;
      report.messages++;
      if (hop === undefined) report.noHop++;
      if (ms === undefined) continue;
      report.delivered++;
      const ratio = ms / f.oracle.ms;
      ratios[graded] = ratio;
      candidateRatios[graded++] = ms / f.candidateBestMs;
      f.graded++;
      if (ratio <= NEAR) f.near++;
      if (f.startedAt >= warmupMs && now - f.startedAt < EARLY_MS) early.push(ratio);
    }
  };

  // ---- The run --------------------------------------------------------------------------------------------------

  for (let i = 0; i < o.nodes; i++) join();
  for (let i = 0; i < o.flows; i++) startFlow();
  const churnEveryMs = 60_000 / (o.churnPerMinute * o.nodes);
  let nextChurn = churnEveryMs;
  for (; now < endMs; now += ROUND_MS) {
    while (notices.length > 0 && notices[0]!.at <= now) notice(notices.shift()!.node);
    for (; nextChurn <= now; nextChurn += churnEveryMs) {
      leave(randomLive());
      arrive();
      while (flows.size < o.flows) startFlow();
    }
    if (now % 60_000 === 0) {
      for (const f of flows) if (bestFromScratch(f.src, f.dst).ms !== f.oracle.ms) report.oracleErrors++;
    }
    round();
  }
  for (const f of [...flows]) endFlow(f);
  report.ratios = ratios.subarray(0, graded).sort();
  report.candidateRatios = candidateRatios.subarray(0, graded).sort();
  report.recoveries.sort((a, b) => a - b);
  report.earlyRatios = Float64Array.from(early).sort();
  report.controlPerNodeMinute = controlMessages / o.nodes / (o.minutes - o.warmupMinutes);
  return report;
}

/** The value at quantile `q` (0..1) of sorted values. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
