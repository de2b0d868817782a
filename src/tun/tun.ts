/**
 * The TUN device as the data plane sees it: packets in batches. The only synchronous boundary of the pipeline.
 *
 * Buffers follow wireguard-go's convention: packet i lives at `bufs[i][offset ..]`, so a caller can leave
 * `offset` bytes of headroom in front of each packet for its own header and avoid a copy.
 * @module
 */

import { MAX_PACKET_BYTES } from "../spec.ts";
import { OFFLOAD_HEADER_BYTES } from "./offload.ts";

/** Counters a device keeps; they only grow. */
export interface TunStats {
  /** Packets handed out by readBatch. */
  readPackets: number;
  /** Packets the kernel (or the double) accepted from writeBatch. */
  writtenPackets: number;
  /** Packets writeBatch could not hand over (malformed, or refused by the kernel); they are skipped, not retried. */
  writeErrors: number;
  /** Milliseconds spent in the device's read and write calls (not waiting), where the device counts them. */
  readMs?: number;
  writeMs?: number;
}

/** A TUN device, real or in memory. One reader at a time; writes may come from anywhere. */
export interface Tun extends AsyncDisposable {
  /** Interface name, e.g. "veilnet". */
  readonly name: string;
  /** Largest IP packet the device carries. */
  readonly mtu: number;
  /**
   * With offload, every packet read or written starts with its 10-byte offload header (src/tun/offload.ts), and
   * reads may return TCP super-packets of up to `readBytes` bytes (header included).
   */
  readonly offload?: boolean;
  readonly stats: Readonly<TunStats>;
  /** True once close() was called. */
  readonly closed: boolean;

  /**
   * Waits for at least one packet, then reads as many as are ready, up to `bufs.length`, without waiting again.
   * Packet i is written to `bufs[i]` at `offset` and its length to `sizes[i]`. Every buffer needs room for
   * `offset + mtu` bytes (`offset + readBytes(tun)` with offload). Resolves to the number of packets, or to 0
   * once the device is closed.
   */
  readBatch(bufs: Uint8Array[], sizes: number[], offset: number): Promise<number>;

  /**
   * Hands `bufs[i][offset ..]` to the host's network stack, for every i. Never waits. Returns how many were
   * accepted; a bad packet is counted in `stats.writeErrors` and skipped without affecting the others.
   * Throws only if the device is closed.
   */
  writeBatch(bufs: Uint8Array[], offset: number): number;

  /** Closes the device (a real one disappears from the host). A pending readBatch resolves to 0. Idempotent. */
  close(): Promise<void>;
}

/** The error writeBatch throws on a closed device. */
export class TunClosedError extends Error {
  override name = "TunClosedError";
  constructor(name: string) {
    super(`TUN device "${name}" is closed`);
  }
}

/** The largest read a device hands out: an MTU-sized packet, or an offload header and a super-packet. */
export function readBytes(tun: Pick<Tun, "mtu" | "offload">): number {
  return tun.offload ? OFFLOAD_HEADER_BYTES + MAX_PACKET_BYTES : tun.mtu;
}

/** Checks the read buffers once per call: a buffer too small would silently truncate packets. */
export function checkReadBuffers(bufs: Uint8Array[], sizes: number[], offset: number, mtu: number): void {
  if (sizes.length < bufs.length) {
    throw new RangeError(`sizes has ${sizes.length} slots for ${bufs.length} buffers`);
  }
  for (const b of bufs) {
    if (b.length < offset + mtu) {
      throw new RangeError(`read buffer of ${b.length} bytes cannot hold offset ${offset} + MTU ${mtu}`);
    }
  }
}
