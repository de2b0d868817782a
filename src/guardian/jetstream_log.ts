/**
 * The Guardians' shared state log (state_log.ts) as a JetStream stream on the Master's nats-servers: one stream,
 * replicated by the servers (R3 on a cluster of three), reached with a user of the Guardians' own account, which no
 * node belongs to. An append carries `Nats-Expected-Last-Sequence`, so the stream takes it only from a writer that
 * saw every entry before; reads go to the stream's leader (no direct gets from a follower that may lag).
 *
 * It uses the `nats` client's JetStream API, the one part of NATS that src/control/nats.ts (the control channel)
 * does not offer; the layering test allows these two importers.
 * @module
 */

import {
  connect,
  DiscardPolicy,
  Events,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  NatsError,
  RetentionPolicy,
  StorageType,
} from "nats";
import { connectOptions, keepSocketErrorsCaught } from "../control/nats.ts";
import type { StateLog } from "./state_log.ts";

/** The stream's name, in the Guardians' account. */
export const STATE_STREAM = "VEILNET_GUARDIAN_STATE";
/** The one subject the stream takes. */
const STATE_SUBJECT = "veilnet.guardian.state";
/** How long one JetStream request waits for its answer. */
const REQUEST_MS = 4_000;
/** How often the first connection (and the stream's creation) is tried while the servers cannot answer. */
const RETRY_MS = 1_000;
/** How long a JetStream cluster that just started may take to elect its leaders before the stream can be made. */
const READY_MS = 30_000;

// JetStream API error codes (nats-server's errors.json).
const WRONG_LAST_SEQUENCE = 10071;
const NO_MESSAGE_FOUND = 10037;
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;

/** The JetStream API error code of `error`, if it is one. */
function apiCode(error: unknown): number | undefined {
  return error instanceof NatsError ? error.api_error?.err_code : undefined;
}

/** How to reach the stream. */
export interface JetStreamLogOptions {
  /** The Master's servers (all of a cluster's). */
  urls: string[];
  /** The CA of the servers' certificates (the realm CA) for `tls://` URLs; public roots when undefined. */
  ca?: string;
  /** A user of the Guardians' account (nats_auth.ts guardianStateCredentials). */
  credentials: { jwt: string; seed: string; inboxPrefix: string };
  /** Copies of the stream kept by the servers, when this Guardian is the one creating it (3 on a cluster of 3). */
  replicas: number;
  log: (line: string) => void;
  /** Gives up waiting for the first connection. */
  signal?: AbortSignal;
}

/** The shared state log on JetStream. */
export class JetStreamLog implements StateLog {
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;

  private constructor(nc: NatsConnection, js: JetStreamClient, jsm: JetStreamManager) {
    this.#nc = nc;
    this.#js = js;
    this.#jsm = jsm;
  }

  /**
   * Connects (waiting, and retrying every second, until a server answers or `signal` aborts) and makes sure the
   * stream exists, creating it with `replicas` copies if no Guardian has yet.
   */
  static async open(o: JetStreamLogOptions): Promise<JetStreamLog> {
    if (o.urls.length === 0) {
      throw new TypeError("the shared state needs the Master's URLs (nats://host:port)");
    }
    if (!Number.isInteger(o.replicas) || o.replicas < 1 || o.replicas > 5) {
      throw new RangeError(`a JetStream stream has 1 to 5 replicas, got ${o.replicas}`);
    }
    keepSocketErrorsCaught();
    let nc: NatsConnection | undefined;
    for (let failures = 0; !nc; failures++) {
      if (o.signal?.aborted) {
        throw new Error("gave up connecting to the shared state: the Guardian is stopping");
      }
      try {
        nc = await connect(connectOptions({
          urls: o.urls,
          ca: o.ca,
          name: "guardian-state",
          inboxPrefix: o.credentials.inboxPrefix,
          credentials: () => o.credentials,
        }));
      } catch (error) {
        if (failures === 0 || failures % 30 === 0) {
          o.log(
            `guardian: cannot reach the shared state at ${o.urls.join(", ")} yet (${
              (error as Error).message
            }); ` +
              `retrying every ${RETRY_MS / 1000} s`,
          );
        }
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
    try {
      const jsm = await nc.jetstreamManager({ timeout: REQUEST_MS, checkAPI: false });
      // A cluster that just started answers "temporarily unavailable" (or not at all) until it has a leader.
      const deadline = Date.now() + READY_MS;
      for (let failures = 0;; failures++) {
        try {
          await ensureStream(jsm, o);
          break;
        } catch (error) {
          if (Date.now() > deadline || o.signal?.aborted) throw explain(error);
          if (failures === 0) {
            o.log(`guardian: the shared state stream is not ready yet (${(error as Error).message})`);
          }
          await new Promise((r) => setTimeout(r, RETRY_MS / 4));
        }
      }
      return new JetStreamLog(nc, nc.jetstream({ timeout: REQUEST_MS }), jsm);
    } catch (error) {
      await nc.close();
      throw error;
    }
  }

  async append(entry: Uint8Array, expectedLast: number): Promise<number | "conflict"> {
    try {
      const ack = await this.#js.publish(STATE_SUBJECT, entry, {
        expect: { lastSequence: expectedLast, streamName: STATE_STREAM },
        timeout: REQUEST_MS,
      });
      return ack.seq;
    } catch (error) {
      if (apiCode(error) === WRONG_LAST_SEQUENCE) return "conflict";
      throw error;
    }
  }

  async bounds(): Promise<{ first: number; last: number }> {
    const { state } = await this.#jsm.streams.info(STATE_STREAM);
    return { first: state.messages === 0 ? state.last_seq + 1 : state.first_seq, last: state.last_seq };
  }

  async read(seq: number): Promise<Uint8Array | undefined> {
    try {
      return (await this.#jsm.streams.getMessage(STATE_STREAM, { seq })).data;
    } catch (error) {
      if (apiCode(error) === NO_MESSAGE_FOUND) return undefined;
      throw error;
    }
  }

  async purgeBefore(seq: number): Promise<void> {
    await this.#jsm.streams.purge(STATE_STREAM, { seq });
  }

  watch(onAppend: () => void): void {
    // Entries published to the stream's subject reach plain subscribers too; after a reconnect some may have been
    // missed, so a reconnect is a hint as well.
    this.#nc.subscribe(STATE_SUBJECT, { callback: () => onAppend() });
    (async () => {
      for await (const s of this.#nc.status()) if (s.type === Events.Reconnect) onAppend();
    })().catch(() => {});
  }

  async close(): Promise<void> {
    if (!this.#nc.isClosed()) await this.#nc.close();
  }
}

/** Creates the stream unless it exists; a stream kept by fewer servers than asked for is logged. */
async function ensureStream(jsm: JetStreamManager, o: JetStreamLogOptions): Promise<void> {
  try {
    const info = await jsm.streams.info(STATE_STREAM);
    if (info.config.num_replicas < o.replicas) {
      o.log(
        `guardian: the shared state stream ${STATE_STREAM} has ${info.config.num_replicas} replica(s), ` +
          `fewer than ${o.replicas}: losing a server may lose the state's availability`,
      );
    }
    return;
  } catch (error) {
    if (apiCode(error) !== STREAM_NOT_FOUND) throw error;
  }
  try {
    await jsm.streams.add({
      name: STATE_STREAM,
      subjects: [STATE_SUBJECT],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: o.replicas,
      max_msgs: -1,
      max_bytes: -1,
      deny_delete: true,
      allow_direct: false,
    });
    o.log(`guardian: created the shared state stream ${STATE_STREAM} (${o.replicas} replica(s))`);
  } catch (error) {
    if (apiCode(error) !== STREAM_NAME_IN_USE) throw error; // in use: another Guardian created it meanwhile
  }
}

/** An error of the first JetStream request, with what to do about it. */
function explain(error: unknown): Error {
  const message = (error as Error).message;
  return new Error(
    `the Master refused the shared state stream (${message}): its servers need JetStream for the Guardians' ` +
      "account; write their configurations again with `guardian nats-config --server-name NAME " +
      '--jetstream-dir DIR` (see the README, "Two Guardians"), and give --state nats all of their URLs',
    { cause: error },
  );
}
