/**
 * Puts one stream's opened messages back in the order they were sealed (pure: the clock is passed in).
 *
 * A sender that spreads a destination's traffic over several paths (concurrent multi-link) has its messages
 * arrive out of order, and TCP above takes a reordered segment for a lost one: it retransmits and slows down.
 * Counters are consecutive per stream, so a gap is a message still on a slower path. Messages behind a gap wait
 * for it, at most `holdMs` (then the gap counts as lost and what follows goes on), and at most `maxHeld` of them.
 * Only messages already opened (authentic, and not replays) come here: a member relaying forged messages cannot
 * hold anything back. One arriving after its gap was given up goes at once.
 * @module
 */

interface Held<T> {
  item: T;
  at: number;
}

export class Reorder<T> {
  readonly #held = new Map<number, Held<T>>();
  #next: number | undefined;

  constructor(readonly holdMs: number, readonly maxHeld: number) {}

  /** Takes the message with `counter`; returns what may go now, in counter order. */
  take(counter: number, item: T, now: number): T[] {
    this.#next ??= counter;
    if (counter < this.#next) return [item];
    if (counter > this.#next) {
      this.#held.set(counter, { item, at: now });
      return this.#held.size > this.maxHeld ? this.#skip() : [];
    }
    this.#next++;
    return this.#drain([item]);
  }

  /**
   * Takes the message with `counter` if it may go at once with nothing held behind it (the common case, without
   * building a list): true when the caller should send it on itself.
   */
  passes(counter: number): boolean {
    if (this.#held.size > 0 || (this.#next !== undefined && counter > this.#next)) return false;
    if (this.#next === undefined || counter === this.#next) this.#next = counter + 1;
    return true;
  }

  /** Whether the message with `counter` would wait (a message sealed before it has not come yet). */
  waits(counter: number): boolean {
    return this.#next !== undefined && counter > this.#next;
  }

  /** Gives up the gaps whose messages waited `holdMs`: returns what goes now, in counter order. */
  expire(now: number): T[] {
    const out: T[] = [];
    while (this.#held.size > 0 && (this.deadline ?? Infinity) <= now) out.push(...this.#skip());
    return out;
  }

  /** Everything held, in counter order, the gaps given up (the stream ends, or moves to another thread). */
  flush(): T[] {
    const out: T[] = [];
    while (this.#held.size > 0) out.push(...this.#skip());
    return out;
  }

  /** When the longest wait ends (ms), if anything waits. */
  get deadline(): number | undefined {
    let first: number | undefined;
    for (const h of this.#held.values()) if (first === undefined || h.at < first) first = h.at;
    return first === undefined ? undefined : first + this.holdMs;
  }

  get held(): number {
    return this.#held.size;
  }

  /** Gives up the first gap: the lowest counter held goes, and whatever follows it in order. */
  #skip(): T[] {
    let lowest = Infinity;
    for (const counter of this.#held.keys()) lowest = Math.min(lowest, counter);
    this.#next = lowest;
    return this.#drain([]);
  }

  #drain(out: T[]): T[] {
    for (let h = this.#held.get(this.#next!); h; h = this.#held.get(this.#next!)) {
      this.#held.delete(this.#next!);
      this.#next!++;
      out.push(h.item);
    }
    return out;
  }
}
