/**
 * Reproducible hostile inputs for decoder tests: a seeded PRNG and the usual corruptions of a valid message.
 * @module
 */

/** xorshift32: deterministic, so a failing case can be replayed from its seed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

/** Random bytes of length `n` from `rand`. */
export function randomBytes(rand: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

/** A labelled corrupted input. */
export interface Mutant {
  what: string;
  bytes: Uint8Array;
}

/**
 * `count` corruptions of `valid`, each different from it: pure noise of random length (up to `maxLength`), truncations, extensions with
 * garbage, single bit flips, and random byte overwrites.
 */
export function* mutants(
  valid: Uint8Array,
  count: number,
  options: { seed?: number; maxLength?: number } = {},
): Generator<Mutant> {
  const rand = prng(options.seed ?? 1);
  const maxLength = options.maxLength ?? valid.length * 2;
  for (let i = 0; i < count; i++) {
    const k = i % 5;
    if (k === 0) {
      yield { what: `noise #${i}`, bytes: randomBytes(rand, Math.floor(rand() * maxLength)) };
    } else if (k === 1) {
      yield { what: `truncated #${i}`, bytes: valid.slice(0, Math.floor(rand() * valid.length)) };
    } else if (k === 2) {
      const extra = randomBytes(rand, 1 + Math.floor(rand() * 64));
      const bytes = new Uint8Array(valid.length + extra.length);
      bytes.set(valid);
      bytes.set(extra, valid.length);
      yield { what: `extended #${i}`, bytes };
    } else if (k === 3) {
      const bytes = valid.slice();
      const bit = Math.floor(rand() * valid.length * 8);
      bytes[bit >> 3] ^= 1 << (bit & 7);
      yield { what: `bit ${bit} flipped`, bytes };
    } else {
      // Distinct positions, each XORed with a non-zero byte, so the result always differs from `valid`.
      const bytes = valid.slice();
      const positions = new Set(
        Array.from({ length: 1 + Math.floor(rand() * 8) }, () => rand() * bytes.length | 0),
      );
      for (const at of positions) bytes[at] ^= 1 + Math.floor(rand() * 255);
      yield { what: `overwritten #${i}`, bytes };
    }
  }
}
