/**
 * Sliding-window replay protection for counters (RFC 6479, as in WireGuard's `replay` package).
 *
 * A ring of 256 32-bit words remembers which of the most recent 8192 counters were seen. Moving the window forward
 * clears whole words, so the cost of accepting a counter does not depend on how far it jumps. One word is always
 * the partially filled "current" one, so the usable window is 8192 - 32 = 8160 counters (≥ REPLAY_WINDOW).
 *
 * Counters are plain numbers (safe up to 2^53; streams stop at REJECT_AFTER_MESSAGES, far below).
 * Call `accept` only after the message authenticated: a forged counter must not move the window.
 * @module
 */

import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW } from "../spec.ts";

const WORD_BITS = 32;
const RING_WORDS = 256;
/** Counters at most this far behind the newest one seen are still judged (seen or not); older ones are refused. */
export const WINDOW_SIZE = (RING_WORDS - 1) * WORD_BITS;

if (WINDOW_SIZE < REPLAY_WINDOW) throw new Error("replay window ring is smaller than the protocol requires");

/** Tracks which counters of one stream were already accepted. */
export class ReplayWindow {
  #ring = new Uint32Array(RING_WORDS);
  /** Highest counter accepted, or -1 before the first. */
  #last = -1;

  constructor(readonly limit: number = REJECT_AFTER_MESSAGES) {}

  /** A copy of what the window remembers, for another thread (see `restore`). */
  snapshot(): { ring: Uint32Array; last: number } {
    return { ring: this.#ring.slice(), last: this.#last };
  }

  /** The window `snapshot` described. */
  static restore(state: { ring: Uint32Array; last: number }, limit?: number): ReplayWindow {
    if (state.ring.length !== RING_WORDS || !Number.isSafeInteger(state.last) || state.last < -1) {
      throw new RangeError("not a replay window's snapshot");
    }
    const window = new ReplayWindow(limit);
    window.#ring.set(state.ring);
    window.#last = state.last;
    return window;
  }

  /** Highest counter accepted so far (-1 if none). */
  get last(): number {
    return this.#last;
  }

  /** Whether `counter` would be accepted now; changes nothing. Use to skip decrypting obvious replays. */
  check(counter: number): boolean {
    if (!Number.isSafeInteger(counter) || counter < 0 || counter >= this.limit) return false;
    if (counter > this.#last) return true;
    if (this.#last - counter > WINDOW_SIZE) return false;
    const word = Math.floor(counter / WORD_BITS) % RING_WORDS;
    return (this.#ring[word] & (1 << (counter % WORD_BITS))) === 0;
  }

  /** Marks `counter` seen; returns false (and changes nothing) if it was seen before or is out of the window. */
  accept(counter: number): boolean {
    if (!this.check(counter)) return false;
    const block = Math.floor(counter / WORD_BITS);
    if (counter > this.#last) {
      const current = this.#last < 0 ? -1 : Math.floor(this.#last / WORD_BITS);
      const advance = Math.min(block - current, RING_WORDS);
      for (let i = 1; i <= advance; i++) this.#ring[(current + i) % RING_WORDS] = 0;
      this.#last = counter;
    }
    this.#ring[block % RING_WORDS] |= 1 << (counter % WORD_BITS);
    return true;
  }
}
