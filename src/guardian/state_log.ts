/**
 * The shared log that several Guardians keep their state in (replication.ts): entries numbered 1, 2, … in the
 * order the log took them, appended only by a writer that has seen every entry before (an append names the last
 * sequence its writer saw, and is refused when that is no longer the last). The JetStream log (jetstream_log.ts)
 * is the real one; {@link MemoryStateLog} is its double for unit tests.
 * @module
 */

/** A log of entries shared by the Guardians of one realm set. */
export interface StateLog {
  /**
   * Appends `entry` if the log's last sequence is `expectedLast` (0: the log is empty). Resolves to the entry's
   * sequence, or "conflict" when another entry came first. Rejects when the log cannot be reached or did not
   * answer: the entry may then have been taken or not.
   */
  append(entry: Uint8Array, expectedLast: number): Promise<number | "conflict">;
  /** The first and the last sequence held; `first` is `last + 1` when the log holds nothing. */
  bounds(): Promise<{ first: number; last: number }>;
  /** The entry at `seq`, or undefined when the log does not hold it (dropped, or not there yet). */
  read(seq: number): Promise<Uint8Array | undefined>;
  /** Drops every entry before `seq`. */
  purgeBefore(seq: number): Promise<void>;
  /** Calls `onAppend` whenever entries may have been appended, by anyone: a hint, which may come late or twice. */
  watch(onAppend: () => void): void;
  /** Closes this writer's connection to the log (the log itself stays); idempotent. */
  close(): Promise<void>;
}

/**
 * A StateLog in memory, shared by the replicas of one test. `loseAnswers` makes the next appends take the entry
 * and then fail as a lost answer would; `down` makes every call fail as an unreachable log would.
 */
export class MemoryStateLog {
  readonly #entries = new Map<number, Uint8Array>();
  readonly #watchers = new Set<() => void>();
  #first = 1;
  #last = 0;
  /** Appends still to answer with an error after taking the entry. */
  loseAnswers = 0;
  /** Whether the log is unreachable. */
  down = false;

  /** A writer's handle on this log (each replica gets its own, as each has its own connection). */
  connect(): StateLog {
    let closed = false;
    const watchers: (() => void)[] = [];
    /** Runs `f` as a call to the log: rejected when this connection is closed or the log is down. */
    const call = <T>(f: () => T): Promise<T> => {
      try {
        if (closed) throw new Error("memory state log: this connection is closed");
        if (this.down) throw new Error("memory state log: unreachable");
        return Promise.resolve(f());
      } catch (error) {
        return Promise.reject(error);
      }
    };
    return {
      append: (entry, expectedLast) =>
        call(() => {
          if (expectedLast !== this.#last) return "conflict" as const;
          this.#entries.set(++this.#last, entry.slice());
          queueMicrotask(() => this.#watchers.forEach((w) => w()));
          if (this.loseAnswers > 0) {
            this.loseAnswers--;
            throw new Error("memory state log: the answer was lost");
          }
          return this.#last;
        }),
      bounds: () => call(() => ({ first: this.#first, last: this.#last })),
      read: (seq) => call(() => this.#entries.get(seq)?.slice()),
      purgeBefore: (seq) =>
        call(() => {
          for (let s = this.#first; s < seq; s++) this.#entries.delete(s);
          this.#first = Math.max(this.#first, Math.min(seq, this.#last + 1));
        }),
      watch: (onAppend) => {
        watchers.push(onAppend);
        this.#watchers.add(onAppend);
      },
      close: () => {
        closed = true;
        for (const w of watchers) this.#watchers.delete(w);
        return Promise.resolve();
      },
    };
  }

  /** How many entries the log holds now. */
  get size(): number {
    return this.#entries.size;
  }
}
