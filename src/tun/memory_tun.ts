/**
 * A TUN device in memory, for unit tests of everything above the TUN. The test plays the host's network stack
 * through `host`: it sends packets the device will read, and receives the packets written to the device.
 * Behaves like the real one where it matters: batches, offsets, close semantics, and refusing non-IP writes.
 * @module
 */

import { ipVersion } from "./ip.ts";
import { checkReadBuffers, type Tun, TunClosedError, type TunStats } from "./tun.ts";

/** A FIFO whose consumer can wait. */
class Queue {
  #items: Uint8Array[] = [];
  #waiter: (() => void) | undefined;

  push(item: Uint8Array): void {
    this.#items.push(item);
    this.wake();
  }

  shift(): Uint8Array | undefined {
    return this.#items.shift();
  }

  get length(): number {
    return this.#items.length;
  }

  /** Resolves when an item arrives or wake() is called. */
  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiter = resolve);
  }

  wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}

/** A Tun whose other side is the test. */
export class MemoryTun implements Tun {
  readonly name: string;
  readonly mtu: number;
  readonly stats: TunStats = { readPackets: 0, writtenPackets: 0, writeErrors: 0 };
  #toDevice = new Queue();
  #fromDevice = new Queue();
  #closed = false;

  constructor(options: { name?: string; mtu?: number } = {}) {
    this.name = options.name ?? "veilnet";
    this.mtu = options.mtu ?? 1500;
  }

  /** The host side: what the kernel would do with the device. */
  readonly host = {
    /** Queues a packet for readBatch (copied), as if the host routed it into the device. */
    send: (packet: Uint8Array): void => {
      if (packet.length > this.mtu) {
        throw new RangeError(`packet of ${packet.length} bytes exceeds MTU ${this.mtu}`);
      }
      this.#toDevice.push(packet.slice());
    },
    /** The next packet written to the device; waits for one. Undefined once closed and drained. */
    receive: async (): Promise<Uint8Array | undefined> => {
      while (this.#fromDevice.length === 0) {
        if (this.#closed) return undefined;
        await this.#fromDevice.wait();
      }
      return this.#fromDevice.shift();
    },
  };

  get closed(): boolean {
    return this.#closed;
  }

  async readBatch(bufs: Uint8Array[], sizes: number[], offset: number): Promise<number> {
    checkReadBuffers(bufs, sizes, offset, this.mtu);
    while (this.#toDevice.length === 0) {
      if (this.#closed) return 0;
      await this.#toDevice.wait();
    }
    if (this.#closed) return 0;
    let n = 0;
    for (let p; n < bufs.length && (p = this.#toDevice.shift()); n++) {
      bufs[n]!.set(p, offset);
      sizes[n] = p.length;
    }
    this.stats.readPackets += n;
    return n;
  }

  writeBatch(bufs: Uint8Array[], offset: number): number {
    if (this.#closed) throw new TunClosedError(this.name);
    let written = 0;
    for (const buf of bufs) {
      const packet = buf.subarray(offset);
      // The kernel refuses what is not IPv4/IPv6 or is larger than the MTU; so does the double.
      if (ipVersion(packet) === 0 || packet.length > this.mtu) {
        this.stats.writeErrors++;
        continue;
      }
      this.#fromDevice.push(packet.slice());
      written++;
    }
    this.stats.writtenPackets += written;
    return written;
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#toDevice.wake();
    this.#fromDevice.wake();
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
