/**
 * Several Guardians, one state: state-machine replication of the SQLite store (store.ts) over a shared log
 * (state_log.ts; JetStream in production). Every Guardian keeps a full replica in memory, reads it synchronously,
 * and commits a transaction like this:
 *
 *   record   run `fn` on the replica (as of the last entry applied, N), keep its write statements, undo them
 *   append   offer the statements to the log as entry N+1, "only if the last entry is still N"
 *   apply    taken: apply them here (once: entries are applied by sequence, in order, by whoever sees them first)
 *   retry    refused (another Guardian took N+1): apply the newer entries, run `fn` again over the newer state
 *
 * So transactions are serialised by the log: a single-use token consumed by one Guardian is seen as consumed by
 * the other, whose `fn` then refuses; unique tags and addresses hold across Guardians. Every replica follows the
 * log (a subscription hint, a poll every second, and a catch-up before an unknown token is refused).
 *
 * The log starts with a snapshot (a dump of a store): the first Guardian to start against an empty log seeds it
 * with its local state; the others, and every restart, load the snapshot at the log's head and apply what follows.
 * Every `snapshotEvery` entries a Guardian appends a new snapshot and drops the entries before it, so the log
 * stays bounded. A snapshot larger than one message is split into parts appended back to back.
 * @module
 */

import type { StateLog } from "./state_log.ts";
import type { Committer, Store, StoreDump, Write } from "./store.ts";

/** The shared state cannot be reached (or lost its answer) for too long: the API answers 503. */
export class StateUnavailable extends Error {
  override name = "StateUnavailable";
}

/** Characters of a snapshot's JSON per log entry (a NATS message holds 1 MiB; escaping may double the size). */
const SNAPSHOT_PART_CHARS = 200_000;

/** One log entry: the writes of a transaction, or one part of a snapshot. */
type Entry =
  | { v: 1; kind: "writes"; id: string; schema: number; writes: Write[] }
  | { v: 1; kind: "snapshot"; id: string; part: number; parts: number; text: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encode(entry: Entry): Uint8Array {
  return encoder.encode(JSON.stringify(entry));
}

/** Decodes an entry; a malformed one is an error (only Guardians write to the log). */
function decode(bytes: Uint8Array, seq: number): Entry {
  let entry: Entry;
  try {
    entry = JSON.parse(decoder.decode(bytes));
  } catch (error) {
    throw new Error(`shared state entry ${seq} is not JSON: ${(error as Error).message}`);
  }
  const ok = entry?.v === 1 && typeof entry.id === "string" &&
    (entry.kind === "writes"
      ? Array.isArray(entry.writes) && Number.isInteger(entry.schema)
      : entry.kind === "snapshot" && Number.isInteger(entry.part) && Number.isInteger(entry.parts) &&
        typeof entry.text === "string");
  if (!ok) throw new Error(`shared state entry ${seq} is not a Guardian state entry (version 1)`);
  return entry;
}

/** How a replica runs. */
export interface ReplicaOptions {
  /** The state that seeds an empty log (the local store's dump). */
  seed: StoreDump;
  log: (line: string) => void;
  /** How long a commit keeps retrying an unreachable log before it fails with StateUnavailable. */
  commitTimeoutMs?: number;
  /** Entries after a snapshot before the next one is taken. */
  snapshotEvery?: number;
  /** How often the log is polled for entries whose hint was missed. */
  pollMs?: number;
  /** How long a replica starting waits for a snapshot still being appended at the log's head. */
  startTimeoutMs?: number;
}

/** A store kept as a replica of the shared log. */
export class Replica implements Committer, AsyncDisposable {
  readonly #store: Store;
  readonly #log: StateLog;
  readonly #o: Required<ReplicaOptions>;
  /** The last sequence applied to the store. */
  #applied = 0;
  /** Where the newest snapshot seen starts. */
  #snapshotAt = 0;
  /** Commits (and snapshots) run one at a time. */
  #queue: Promise<unknown> = Promise.resolve();
  #syncing: Promise<void> | undefined;
  #syncAgain = false;
  /** Ids of this replica's appends whose fate is unknown, and those of them seen in the log. */
  readonly #uncertain = new Set<string>();
  readonly #taken = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #failing = false;
  #closed = false;

  private constructor(store: Store, log: StateLog, o: ReplicaOptions) {
    this.#store = store;
    this.#log = log;
    this.#o = { commitTimeoutMs: 8_000, snapshotEvery: 1_000, pollMs: 1_000, startTimeoutMs: 10_000, ...o };
  }

  /**
   * Makes `store` (empty, e.g. ":memory:") a replica of `log`: seeds an empty log with `o.seed`, else loads the
   * log's state. From then on the store's transactions commit through the log. `seeded` tells which happened.
   * The replica owns `log` (closing it closes the log's connection).
   */
  static async open(
    store: Store,
    log: StateLog,
    o: ReplicaOptions,
  ): Promise<{ replica: Replica; seeded: boolean }> {
    const replica = new Replica(store, log, o);
    let seeded = false;
    const { last } = await log.bounds();
    if (last === 0) {
      const at = await replica.#appendSnapshot(o.seed, 0);
      if (at) {
        store.load(o.seed);
        replica.#applied = at.last;
        replica.#snapshotAt = at.first;
        seeded = true;
      }
    }
    if (!seeded) await replica.#rebuild();
    await replica.#catchUp();
    store.replicateThrough(replica);
    log.watch(() => replica.#follow());
    replica.#timer = setInterval(() => replica.#follow(), replica.#o.pollMs);
    return { replica, seeded };
  }

  /** The last log sequence applied here. */
  get applied(): number {
    return this.#applied;
  }

  /** Commits `fn` through the log (see the module comment); commits of this replica run one at a time. */
  commit<T>(fn: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new StateUnavailable("the shared state is closed"));
    const run = this.#queue.then(() => this.#commit(fn));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Applies every entry the log holds now; rejects when the log cannot be read. */
  sync(): Promise<void> {
    if (this.#syncing) {
      this.#syncAgain = true;
      return this.#syncing;
    }
    this.#syncing = (async () => {
      try {
        do {
          this.#syncAgain = false;
          await this.#catchUp();
        } while (this.#syncAgain);
      } finally {
        this.#syncing = undefined;
      }
    })();
    return this.#syncing;
  }

  /** A sync in the background; failures are logged once until the log answers again. */
  #follow(): void {
    if (this.#closed) return;
    this.sync().then(() => {
      if (this.#failing) this.#o.log("guardian: the shared state answers again");
      this.#failing = false;
    }, (error) => {
      if (!this.#failing) {
        this.#o.log(`guardian: cannot follow the shared state (${(error as Error).message}); retrying`);
      }
      this.#failing = true;
    });
  }

  async #commit<T>(fn: () => T): Promise<T> {
    const deadline = Date.now() + this.#o.commitTimeoutMs;
    /** Results of this commit's appends whose answer was lost, by entry id: one of them may have been taken. */
    const attempts = new Map<string, T>();
    const ids: string[] = [];
    try {
      for (;;) {
        for (const [id, result] of attempts) if (this.#taken.has(id)) return result;
        const { result, writes } = this.#store.record(fn); // a refusal by `fn` ends the commit here
        if (writes.length === 0) return result;
        const entry: Entry = {
          v: 1,
          kind: "writes",
          id: crypto.randomUUID(),
          schema: this.#store.schema,
          writes,
        };
        const expected = this.#applied;
        ids.push(entry.id);
        this.#uncertain.add(entry.id);
        try {
          const seq = await this.#log.append(encode(entry), expected);
          if (seq === "conflict") {
            await this.sync();
            continue;
          }
          // Taken as seq = expected + 1. A sync may have applied it already; else nothing came in between.
          if (this.#applied === seq - 1) this.#apply(seq, entry);
          this.#maybeSnapshot();
          return result;
        } catch (error) {
          attempts.set(entry.id, result);
          if (Date.now() > deadline) {
            throw new StateUnavailable(
              `the shared state (NATS JetStream) did not take a change within ${this.#o.commitTimeoutMs} ms: ` +
                `${(error as Error).message}; nothing may have changed, retry`,
              { cause: error },
            );
          }
          await new Promise((r) => setTimeout(r, 250));
          await this.sync().catch(() => {}); // its entry may be there: the loop's head looks
        }
      }
    } finally {
      for (const id of ids) {
        this.#uncertain.delete(id);
        this.#taken.delete(id);
      }
    }
  }

  /** Applies the entry at `seq`, which must follow the last one applied. */
  #apply(seq: number, entry: Entry): void {
    if (seq <= this.#applied) return;
    if (seq !== this.#applied + 1) {
      throw new Error(`shared state entry ${seq} does not follow ${this.#applied}, the last applied here`);
    }
    if (entry.kind === "writes") {
      if (entry.schema !== this.#store.schema) {
        throw new Error(
          `shared state entry ${seq} was written by a Guardian with schema version ${entry.schema}, this one has ` +
            `${this.#store.schema}: every Guardian sharing a state must run the same version`,
        );
      }
      this.#store.apply(entry.writes);
      if (this.#uncertain.has(entry.id)) this.#taken.add(entry.id);
    } else if (entry.part === 0) {
      // A snapshot of the state already here: nothing to apply. Its start is where the log may be cut.
      this.#snapshotAt = seq;
    }
    this.#applied = seq;
  }

  /** Applies what the log holds after the last entry applied; starts over from its snapshot if it moved past. */
  async #catchUp(): Promise<void> {
    const { first, last } = await this.#log.bounds();
    if (this.#applied + 1 < first) {
      this.#o.log(`guardian: the shared state log was cut past entry ${this.#applied}; loading its snapshot`);
      await this.#rebuild();
    }
    for (let seq = this.#applied + 1; seq <= last; seq = this.#applied + 1) {
      const bytes = await this.#log.read(seq);
      if (seq <= this.#applied) continue; // applied meanwhile by this replica's own commit
      if (bytes === undefined) {
        // Cut meanwhile by a snapshot: start over from it.
        await this.#rebuild();
        continue;
      }
      this.#apply(seq, decode(bytes, seq));
    }
  }

  /** Loads the snapshot at the log's head (waiting while its parts are still being appended). */
  async #rebuild(): Promise<void> {
    const deadline = Date.now() + this.#o.startTimeoutMs;
    for (;;) {
      const { first, last } = await this.#log.bounds();
      const parts: string[] = [];
      let head: Entry | undefined;
      for (let seq = first; seq <= last; seq++) {
        const bytes = await this.#log.read(seq);
        if (bytes === undefined) break; // cut meanwhile: look again
        const entry = decode(bytes, seq);
        if (entry.kind !== "snapshot" || (head && (entry.id !== head.id || entry.part !== parts.length))) {
          throw new Error(
            `the shared state log does not start with a whole snapshot (entry ${seq}): it was not written by ` +
              "Guardians of this version",
          );
        }
        head ??= entry;
        parts.push(entry.text);
        if (parts.length === entry.parts) {
          this.#store.load(JSON.parse(parts.join("")) as StoreDump);
          this.#applied = seq;
          this.#snapshotAt = first;
          return;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(
          `the shared state log holds no whole snapshot at its head after ${this.#o.startTimeoutMs} ms ` +
            "(a Guardian seeding it stopped half-way?)",
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Appends `dump` as a snapshot whose first part follows `expected`: its first and last sequences, or undefined
   * when another entry came first (a snapshot cut short after its first part is left unfinished: harmless, as
   * replicas following the log ignore snapshots, and the log is only ever cut at a whole one).
   */
  async #appendSnapshot(
    dump: StoreDump,
    expected: number,
  ): Promise<{ first: number; last: number } | undefined> {
    const text = JSON.stringify(dump);
    const parts = Math.max(1, Math.ceil(text.length / SNAPSHOT_PART_CHARS));
    const id = crypto.randomUUID();
    let first = 0;
    let last = expected;
    for (let part = 0; part < parts; part++) {
      const chunk = text.slice(part * SNAPSHOT_PART_CHARS, (part + 1) * SNAPSHOT_PART_CHARS);
      const seq = await this.#log.append(
        encode({ v: 1, kind: "snapshot", id, part, parts, text: chunk }),
        last,
      );
      if (seq === "conflict") return undefined;
      if (part === 0) first = seq;
      last = seq;
    }
    return { first, last };
  }

  /** Takes a snapshot and cuts the log before it, once enough entries followed the last one (in the background). */
  #maybeSnapshot(): void {
    if (this.#applied - this.#snapshotAt < this.#o.snapshotEvery) return;
    const job = async () => {
      if (this.#closed || this.#applied - this.#snapshotAt < this.#o.snapshotEvery) return;
      const at = await this.#appendSnapshot(this.#store.dump(), this.#applied);
      if (!at) return; // another Guardian wrote first; one of the next commits tries again
      await this.sync();
      await this.#log.purgeBefore(at.first);
      this.#o.log(`guardian: shared state snapshot at entry ${at.first}; the entries before it are dropped`);
    };
    const run = this.#queue.then(job);
    this.#queue = run.catch((error) =>
      this.#o.log(`guardian: taking a snapshot of the shared state failed: ${(error as Error).message}`)
    );
  }

  /** Stops following the log and closes its connection; commits already queued finish first. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#queue;
    await this.#syncing?.catch(() => {});
    await this.#log.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
