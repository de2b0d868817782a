/**
 * What the main thread and the data-plane worker (src/lane/worker.ts) say to each other. The main thread posts a
 * command and adds one to the worker's wake counter (an eventfd the worker polls beside its sockets); the worker
 * posts events, which the main thread's event loop delivers. Buffers are transferred, not copied.
 * @module
 */

import type { AddressFacts } from "../agent/addresses.ts";
import type { OpenerHandover, SealerHandover } from "../crypto/stream.ts";

/** Main thread → worker. */
export type Command =
  | { t: "init"; wake: number; ack: number }
  | { t: "tun"; self: Uint8Array; fd: number; offload: boolean; readBytes: number }
  | { t: "tun-off" }
  | { t: "adopt"; link: number; fd: number; first: Uint8Array }
  | { t: "send"; link: number; messages: Uint8Array[] }
  | { t: "close"; link: number; reason: string }
  | { t: "route"; peer: string; addresses: Uint8Array[]; link: number; sealer: SealerHandover }
  | { t: "unroute"; peer: string }
  | { t: "opener"; state: OpenerHandover }
  | { t: "drop-opener"; id: string }
  | { t: "facts"; self: AddressFacts; peers: [string, AddressFacts | undefined][] }
  | { t: "open"; message: Uint8Array }
  | { t: "stop" };

/** Counters the worker reports every second (deltas since its last report, except `stages`, which are totals). */
export interface LaneStats {
  /**
   * Per peer: IP bytes and packets sent and received on the fast path, batches sent, and how many of those found
   * the connection backlogged (SPILL_BYTES or more queued or not acknowledged).
   */
  traffic: [
    string,
    {
      txBytes: number;
      txPackets: number;
      rxBytes: number;
      rxPackets: number;
      batches: number;
      backlogged: number;
    },
  ][];
  drops: [string, number][];
  /** The time these counters cover (ms). */
  periodMs: number;
  /** Cumulative milliseconds on the worker's thread, by stage (see DataStages), estimated from sampled turns. */
  stages: Record<string, number>;
  readPackets: number;
  writtenPackets: number;
  writeErrors: number;
  /** Rounds of made-up traffic the worker's warm-up ran at start, in its first report (0 after). */
  warmUpRounds: number;
}

/** Worker → main thread. */
export type Event =
  | { t: "ready" }
  | { t: "packets"; packets: Uint8Array[] }
  | { t: "messages"; link: number; messages: Uint8Array[] }
  | { t: "flushed"; link: number; bytes: number }
  | { t: "closed"; link: number; reason: string }
  | { t: "unrouted"; peer: string; stream: string; reason: string }
  | { t: "stats"; stats: LaneStats }
  | { t: "tun-off" }
  | { t: "error"; message: string }
  | { t: "log"; message: string }
  | { t: "stopped" };
