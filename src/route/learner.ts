/**
 * Next-hop learning for one node (pure: clock and randomness are injected).
 *
 * Per destination, the candidates are the destination itself (direct) and relays that said they reach it
 * directly. A relay forwards only on its own direct tether to the destination, so a path is at most two hops and
 * cannot loop by construction (the TTL in every message is the second guard, and a message never goes back to
 * the hop it came from).
 *
 * The policy is ε-greedy over an estimated cost, with optimistic starts and a bias for the direct path:
 * - cost(hop) = smoothed round-trip time × (1 + LOSS_WEIGHT × smoothed loss); a hop never tried costs its prior, so
 *   each gets tried once unless its prior alone is worse than what is known, and one tried but never acknowledged
 *   costs as a very slow path;
 * - the prior is what other nodes measured and shared (cooperative learning): a relay's answer carries its own
 *   round-trip time to the destination, a lower bound of the path through it, since the leg to the relay only
 *   adds. A relay whose onward leg is slower than a path already measured is not worth a tether to try it. A
 *   hop with no prior costs 0 (optimism). A prior decides only until the hop's first sample: a relay that
 *   understates its leg is tried once, measured, and judged by that;
 * - the direct path is kept while it is healthy and not clearly worse (within DIRECT_BIAS of the best relay);
 * - with probability EPSILON another healthy candidate is tried, so a hop that got better is noticed (but not one
 *   whose prior alone is above the best cost: the prior is refreshed by each answer, so it follows the relay);
 * - a failure (a tether that cannot form, a delivery that timed out) benches the hop at once for a backoff that
 *   doubles up to MAX_BACKOFF_MS and resets on the next success.
 * Why ε-greedy and not UCB: links degrade and recover, so rewards are not stationary. Exponentially weighted
 * estimates follow change within a few samples, and ε keeps re-checking every hop at a bounded cost (at most ε of
 * the choices); UCB's confidence bonus shrinks with the sample count and stops revisiting a hop that recovered.
 * @module
 */

/** Tuning of the learner (exported for tests). */
export const LEARNER = {
  /** Share of choices spent trying a hop other than the best. */
  EPSILON: 0.05,
  /** Weight of a round-trip sample above the average: a hop that got slower is believed quickly... */
  ALPHA: 0.3,
  /** ...and of one below it: a hop that got faster is believed slowly, so a congested hop is not taken back
   * the moment its queue drains (which would make traffic swing between two hops). */
  ALPHA_DOWN: 0.05,
  /** Weight of a new delivery outcome in the loss average: one lost message must not condemn a good hop. */
  LOSS_ALPHA: 0.05,
  /** How much loss raises a hop's cost: cost = rtt × (1 + LOSS_WEIGHT × loss). */
  LOSS_WEIGHT: 2,
  /** The direct path is kept unless the best relay costs less than this share of it. */
  DIRECT_BIAS: 0.85,
  FIRST_BACKOFF_MS: 1_000,
  MAX_BACKOFF_MS: 10_000,
  /** Loss above which the direct path no longer counts as healthy (and any hop is left out of a spread). */
  UNHEALTHY_LOSS: 0.3,
  /**
   * Multi-link: when the preferred hop is backlogged, traffic spreads over hops costing at most SPREAD_FACTOR
   * times the best, or SPREAD_SLACK_MS more (whichever allows more): a much longer path would deliver so late
   * that TCP above takes the reordering for loss.
   */
  SPREAD_FACTOR: 3,
  SPREAD_SLACK_MS: 40,
} as const;

/** The cost of a hop that was tried but never acknowledged anything (ms, as if a very slow path). */
const NEVER_ANSWERED_COST = 1_000_000;

/** What is known about one next hop towards one destination. */
export interface HopStats {
  hop: string;
  /** Smoothed round-trip time through this hop (ms); undefined until measured. */
  rttMs?: number;
  /** Smoothed share of messages not acknowledged (0..1). */
  loss: number;
  samples: number;
  /** What others measured (ms, a lower bound of the round trip): the cost until the first sample. */
  priorMs?: number;
  /** Until when the hop is benched after a failure (ms). */
  benchedUntil: number;
  backoffMs: number;
}

/** Decides, per destination, which next hop to use, from this node's own measurements. */
export class RouteLearner {
  readonly #routes = new Map<string, Map<string, HopStats>>();
  readonly #clock: () => number;
  readonly #random: () => number;

  constructor(options: { clock: () => number; random: () => number }) {
    this.#clock = options.clock;
    this.#random = options.random;
  }

  /**
   * Sets the candidate next hops for `destination` (include the destination itself when direct is possible), with
   * the round-trip time others measured for some of them (`priors`, ms: see the module's notes).
   */
  setCandidates(destination: string, hops: Iterable<string>, priors?: ReadonlyMap<string, number>): void {
    const old = this.#routes.get(destination) ?? new Map<string, HopStats>();
    const next = new Map<string, HopStats>();
    for (const hop of hops) {
      const s = old.get(hop) ?? { hop, loss: 0, samples: 0, benchedUntil: 0, backoffMs: 0 };
      const prior = priors?.get(hop);
      if (prior !== undefined && prior > 0) s.priorMs = prior;
      next.set(hop, s);
    }
    this.#routes.set(destination, next);
  }

  /** Forgets a destination (it left). */
  forget(destination: string): void {
    this.#routes.delete(destination);
  }

  #cost(s: HopStats): number {
    const lossFactor = 1 + LEARNER.LOSS_WEIGHT * s.loss;
    if (s.rttMs === undefined) return s.samples === 0 ? s.priorMs ?? 0 : NEVER_ANSWERED_COST * lossFactor;
    return s.rttMs * lossFactor;
  }

  /**
   * The next hop for a message to `destination`, never `exclude` (the hop it came from), and only among hops
   * `ready` accepts (say, those with an open tether); undefined if none. Without `explore`, never a random hop.
   */
  choose(
    destination: string,
    exclude?: string,
    ready: (hop: string) => boolean = () => true,
    explore = true,
  ): string | undefined {
    const hops = this.#routes.get(destination);
    if (!hops) return undefined;
    const now = this.#clock();
    const usable = [...hops.values()].filter((s) =>
      s.hop !== exclude && s.benchedUntil <= now && ready(s.hop)
    );
    if (usable.length === 0) return undefined;
    let best = usable[0]!;
    for (const s of usable) if (this.#cost(s) < this.#cost(best)) best = s;
    if (explore && usable.length > 1 && this.#random() < LEARNER.EPSILON) {
      // Exploring skips a hop whose shared onward leg alone is slower than the best path: it cannot be better.
      const bound = this.#cost(best);
      const worth = usable.filter((s) => s === best || (s.priorMs ?? 0) < bound);
      return worth[Math.floor(this.#random() * worth.length)]!.hop;
    }
    const direct = usable.find((s) => s.hop === destination);
    if (
      direct && direct !== best && direct.loss < LEARNER.UNHEALTHY_LOSS &&
      this.#cost(best) >= LEARNER.DIRECT_BIAS * this.#cost(direct)
    ) {
      return direct.hop;
    }
    return best.hop;
  }

  /**
   * The hops traffic to `destination` may spread over when its preferred hop is backlogged (concurrent
   * multi-link), cheapest first, among those `ready` accepts: healthy, not benched, and not much costlier than the
   * cheapest (see SPREAD_FACTOR). A hop never measured counts by its prior, so its tether can be formed.
   */
  spread(destination: string, ready: (hop: string) => boolean = () => true): string[] {
    const now = this.#clock();
    const usable = [...(this.#routes.get(destination)?.values() ?? [])].filter((s) =>
      s.benchedUntil <= now && s.loss < LEARNER.UNHEALTHY_LOSS && ready(s.hop)
    ).sort((x, y) => this.#cost(x) - this.#cost(y));
    if (usable.length === 0) return [];
    const best = this.#cost(usable[0]!);
    const bound = Math.max(LEARNER.SPREAD_FACTOR * best, best + LEARNER.SPREAD_SLACK_MS);
    return usable.filter((s) => this.#cost(s) <= bound).map((s) => s.hop);
  }

  /** A message through `hop` was acknowledged after `rttMs`, or (rttMs undefined) was not. */
  observe(destination: string, hop: string, rttMs: number | undefined): void {
    const s = this.#routes.get(destination)?.get(hop);
    if (!s) return;
    const a = LEARNER.ALPHA;
    s.samples++;
    s.loss = (1 - LEARNER.LOSS_ALPHA) * s.loss + LEARNER.LOSS_ALPHA * (rttMs === undefined ? 1 : 0);
    if (rttMs !== undefined) {
      const w = s.rttMs === undefined || rttMs > s.rttMs ? a : LEARNER.ALPHA_DOWN;
      s.rttMs = s.rttMs === undefined ? rttMs : (1 - w) * s.rttMs + w * rttMs;
      s.backoffMs = 0;
    }
  }

  /** `hop` cannot carry traffic now (its tether failed or would not form): bench it with a growing backoff. */
  fail(destination: string, hop: string): void {
    const s = this.#routes.get(destination)?.get(hop);
    if (!s) return;
    s.backoffMs = s.backoffMs === 0
      ? LEARNER.FIRST_BACKOFF_MS
      : Math.min(2 * s.backoffMs, LEARNER.MAX_BACKOFF_MS);
    s.benchedUntil = this.#clock() + s.backoffMs;
  }

  /** `hop` is gone for every destination it served (its tether died). */
  failEverywhere(hop: string): void {
    for (const [destination, hops] of this.#routes) if (hops.has(hop)) this.fail(destination, hop);
  }

  /** True when `hop` failed for `destination` and its backoff has ended: time to try it again. */
  due(destination: string, hop: string): boolean {
    const s = this.#routes.get(destination)?.get(hop);
    return s !== undefined && s.backoffMs > 0 && s.benchedUntil <= this.#clock();
  }

  /** The candidates of `destination`. */
  candidates(destination: string): string[] {
    return [...(this.#routes.get(destination)?.keys() ?? [])];
  }

  /** What is known about each candidate of `destination`. */
  stats(destination: string): HopStats[] {
    return [...(this.#routes.get(destination)?.values() ?? [])].map((s) => ({ ...s }));
  }
}
