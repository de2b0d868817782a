/**
 * Per-source rate limits of the Guardian's API: token buckets by remote address (an IPv6 source by its /64, which
 * one host gets cheaply), in a bounded table. Each source has two budgets: its requests, all of them, and the
 * refusals of its requests that did not authenticate (bad tokens, unknown routes, oversize bodies). A source
 * flooding bad tokens empties its own failure budget in a moment and then gets 429 for the price of a table
 * lookup; other sources have budgets of their own and never notice.
 *
 * Many nodes may share one source address (NAT), so the request budget is sized for a site, not a host: nodes
 * renew at 2/3 of their certificate's life, so even 10,000 nodes behind one address with 1 h certificates log in
 * about 4 times a second, and a site restarting 1,000 nodes at once fits the burst.
 * @module
 */

import { formatAddress, parseIPv4, parseIPv6 } from "../tun/ip.ts";

/** One token bucket's shape: it holds at most `burst` and gains `perSecond`. */
export interface Budget {
  perSecond: number;
  burst: number;
}

/** How the Guardian limits each source. */
export interface SourceLimitsOptions {
  /** Every request of a source. */
  requests: Budget;
  /** Refusals of a source's unauthenticated requests (401, 404, 405, 413). */
  failures: Budget;
  /** Sources remembered at most; the least recently seen is forgotten first (it starts again with full budgets). */
  maxSources: number;
}

/** Budgets that a realm of thousands of nodes renewing never meets, even behind one NAT address (see above). */
export const DEFAULT_SOURCE_LIMITS: SourceLimitsOptions = {
  requests: { perSecond: 100, burst: 1_000 },
  failures: { perSecond: 2, burst: 30 },
  maxSources: 65_536,
};

class Bucket {
  #tokens: number;
  #at: number;
  constructor(readonly budget: Budget, now: number) {
    this.#tokens = budget.burst;
    this.#at = now;
  }

  #refill(now: number): void {
    const gained = Math.max(0, now - this.#at) / 1000 * this.budget.perSecond;
    this.#tokens = Math.min(this.budget.burst, this.#tokens + gained);
    this.#at = now;
  }

  /** Takes one token: 0 when there was one, else the seconds until there is (at least 1). */
  take(now: number): number {
    this.#refill(now);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return this.wait(now);
  }

  /** Seconds until a token is there (0 when one is), without taking it. */
  wait(now: number): number {
    this.#refill(now);
    if (this.#tokens >= 1) return 0;
    return Math.max(1, Math.ceil((1 - this.#tokens) / this.budget.perSecond));
  }
}

/** The budgets of every source seen lately. */
export class SourceLimits {
  readonly #table = new Map<string, { requests: Bucket; failures: Bucket }>();
  readonly options: SourceLimitsOptions;
  readonly #clock: () => number;

  constructor(options: Partial<SourceLimitsOptions> = {}, clock: () => number = Date.now) {
    this.options = { ...DEFAULT_SOURCE_LIMITS, ...options };
    for (
      const [name, b] of [["requests", this.options.requests], ["failures", this.options.failures]] as const
    ) {
      if (!(b.perSecond > 0) || !(b.burst >= 1)) {
        throw new RangeError(
          `the ${name} budget needs perSecond > 0 and burst >= 1, got ${JSON.stringify(b)}`,
        );
      }
    }
    this.#clock = clock;
  }

  /** How many sources are remembered now. */
  get size(): number {
    return this.#table.size;
  }

  #source(source: string) {
    let entry = this.#table.get(source);
    const now = this.#clock();
    if (entry) {
      this.#table.delete(source); // re-inserted below: the table's order is least recently seen first
    } else {
      entry = {
        requests: new Bucket(this.options.requests, now),
        failures: new Bucket(this.options.failures, now),
      };
      if (this.#table.size >= this.options.maxSources) this.#table.delete(this.#table.keys().next().value!);
    }
    this.#table.set(source, entry);
    return { entry, now };
  }

  /** Takes one request from `source`'s budget: 0 when admitted, else the seconds it should wait. */
  request(source: string): number {
    const { entry, now } = this.#source(source);
    return entry.requests.take(now);
  }

  /** Seconds until `source` may fail again (0 while its failure budget lasts), without taking from it. */
  failing(source: string): number {
    const { entry, now } = this.#source(source);
    return entry.failures.wait(now);
  }

  /** Takes one failure from `source`'s budget: 0 while it lasts, else the seconds it should wait. */
  failure(source: string): number {
    const { entry, now } = this.#source(source);
    return entry.failures.take(now);
  }
}

/**
 * The source a request is limited as: its remote IPv4 address, or the /64 of an IPv6 one (an IPv4-mapped
 * address counts as IPv4); "unknown" when the server gave none (a handler called in-process).
 */
export function sourceOf(remote: { hostname: string } | undefined): string {
  if (!remote) return "unknown";
  const host = remote.hostname.replace(/^\[|\]$/g, "");
  if (parseIPv4(host)) return host;
  const six = parseIPv6(host.replace(/%.*$/, ""));
  if (!six) return host;
  const mapped = six.subarray(0, 10).every((b) => b === 0) && six[10] === 0xff && six[11] === 0xff;
  if (mapped) return formatAddress(six.subarray(12));
  const prefix = new Uint8Array(16);
  prefix.set(six.subarray(0, 8));
  return `${formatAddress(prefix)}/64`;
}
