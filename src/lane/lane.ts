/**
 * The main thread's side of the data-plane worker (src/lane/worker.ts): one worker per process, started when the
 * first direct connection or TUN device needs it and stopped when the last lets go. Commands are posted and
 * counted on an eventfd the worker polls; its events come back through the event loop.
 * @module
 */

import { addTo, eventfd } from "../../ffi/eventfd.ts";
import { libc } from "../../ffi/loader.ts";
import type { AddressFacts } from "../agent/access.ts";
import type { OpenerHandover, SealerHandover } from "../crypto/stream.ts";
import type { LinuxTun } from "../tun/linux_tun.ts";
import { readBytes, type Tun, TunClosedError, type TunStats } from "../tun/tun.ts";
import type { Command, Event, LaneStats } from "./protocol.ts";

/** What the worker reads and LaneTun wraps: a real device (or, in tests, anything with a descriptor like one). */
export type LaneDevice = Pick<LinuxTun, "fd" | "name" | "mtu" | "offload" | "stats" | "writeBatch" | "close">;

/** What a connection the worker carries reports to its owner. */
export interface LinkEvents {
  onMessage(message: Uint8Array): void;
  /** Bytes of frames this thread sent that the kernel took. */
  onFlushed(bytes: number): void;
  onClosed(reason: string): void;
}

/** The process's data-plane worker, seen from the main thread. */
export class Lane {
  static #shared: Lane | undefined;

  readonly #worker: Worker;
  readonly #wake: number;
  readonly #ack: number;
  #users = 0;
  #nextLink = 1;
  readonly #links = new Map<number, LinkEvents>();
  /** Messages to send per connection, gathered until the end of this turn of the event loop. */
  readonly #outbox = new Map<number, Uint8Array[]>();
  #stopped: Promise<void> | undefined;
  #onStopped: (() => void) | undefined;
  #tun: LaneTun | undefined;
  /** Whether the worker started (false: it could not, and nothing should be given to it). */
  readonly ready: Promise<boolean>;
  #started: ((ok: boolean) => void) | undefined;
  #failed = false;
  /** The worker gave up a fast route (its stream expired, its connection closed). */
  onUnrouted: ((peer: string, stream: string, reason: string) => void) | undefined;
  /** The worker's counters, every second. */
  onStats: ((stats: LaneStats) => void) | undefined;
  /** A connection was handed to the worker (called in a later task, once its owner has taken the id). */
  onAdopted: (() => void) | undefined;

  private constructor() {
    this.#wake = eventfd();
    this.#ack = eventfd();
    this.ready = new Promise((resolve) => this.#started = resolve);
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<Event>) => this.#event(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#fail(e.message);
    };
    this.#worker.postMessage({ t: "init", wake: this.#wake, ack: this.#ack } satisfies Command);
  }

  /**
   * The worker failed: said once. The failed lane stays the process's, so later users learn it from `ready`
   * instead of starting (and failing) another worker each time.
   */
  #fail(message: string): void {
    if (this.#failed) return;
    console.error(`data-plane worker failed: ${message}`);
    this.#failed = true;
    this.#started?.(false);
    this.#worker.terminate();
  }

  /** Whether the worker failed (connections and devices must not be given to it). */
  get failed(): boolean {
    return this.#failed;
  }

  /** Whether the worker reads the TUN device (`VEILNET_CONFLUX_LANE=0` keeps it on the main thread). */
  static get readsTun(): boolean {
    return Deno.env.get("VEILNET_CONFLUX_LANE") !== "0";
  }

  /** The process's worker, started if it is not running; give it back with `release`. */
  static acquire(): Lane {
    const lane = Lane.#shared ??= new Lane();
    lane.#users++;
    return lane;
  }

  /** One user less; the last one stops the worker (its connections are closed by then). */
  release(): void {
    if (--this.#users > 0 || this.#failed) return;
    if (Lane.#shared === this) Lane.#shared = undefined;
    this.#stopped = new Promise((resolve) => this.#onStopped = resolve);
    this.command({ t: "stop" });
  }

  /** Resolves once a released worker has stopped. */
  get stopped(): Promise<void> {
    return this.#stopped ?? Promise.resolve();
  }

  command(command: Command, transfer: Transferable[] = []): void {
    this.#worker.postMessage(command, transfer);
    addTo(this.#wake);
  }

  /** Gives the worker a connected socket (and what was read from it already); returns its id. */
  adopt(fd: number, first: Uint8Array, events: LinkEvents): number {
    const link = this.#nextLink++;
    this.#links.set(link, events);
    this.command({ t: "adopt", link, fd, first });
    setTimeout(() => this.onAdopted?.(), 0);
    return link;
  }

  /** Queues a message on a connection (copied); it leaves at the end of this turn with the others. */
  send(link: number, message: Uint8Array): void {
    let list = this.#outbox.get(link);
    if (!list) {
      this.#outbox.set(link, list = []);
      if (this.#outbox.size === 1) queueMicrotask(() => this.#flushOutbox());
    }
    list.push(message.slice());
  }

  #flushOutbox(): void {
    for (const [link, messages] of this.#outbox) {
      this.command({ t: "send", link, messages }, messages.map((m) => m.buffer as ArrayBuffer));
    }
    this.#outbox.clear();
  }

  /** Closes a connection; its owner already knows why. */
  close(link: number, reason: string): void {
    this.#flushOutbox();
    this.#links.delete(link);
    this.command({ t: "close", link, reason });
  }

  /** Traffic to `addresses` takes `link`, sealed with the stream handed over, until `unroute` or the worker drops it. */
  route(peer: string, addresses: Uint8Array[], link: number, sealer: SealerHandover): void {
    this.command({ t: "route", peer, addresses, link, sealer });
  }

  unroute(peer: string): void {
    this.command({ t: "unroute", peer });
  }

  /** Messages of this receiving stream are opened by the worker from now on. */
  own(opener: OpenerHandover): void {
    this.command({ t: "opener", state: opener });
  }

  disown(id: string): void {
    this.command({ t: "drop-opener", id });
  }

  /** What each peer may send (undefined: nothing, it is gone) and this node's own addresses. */
  facts(self: AddressFacts, peers: [string, AddressFacts | undefined][]): void {
    this.command({ t: "facts", self, peers });
  }

  /** A message for a stream the worker holds, received by this thread. */
  open(message: Uint8Array): void {
    this.command({ t: "open", message: message.slice() });
  }

  /** Reads the TUN on the worker from now on: packets without a fast route come back through the result. */
  attach(tun: LaneDevice, self: Uint8Array): LaneTun | undefined {
    if (this.#tun) return undefined;
    this.#tun = new LaneTun(this, tun, this.#ack);
    this.command({ t: "tun", self, fd: tun.fd, offload: tun.offload, readBytes: readBytes(tun) });
    return this.#tun;
  }

  /** @internal The TUN was closed. */
  detached(tun: LaneTun): void {
    if (this.#tun === tun) this.#tun = undefined;
  }

  #event(event: Event): void {
    switch (event.t) {
      case "messages": {
        const link = this.#links.get(event.link);
        if (!link) return;
        for (const m of event.messages) {
          try {
            link.onMessage(m);
          } catch (error) {
            console.error(
              `data plane: a message from a direct connection: ${(error as Error).stack ?? error}`,
            );
          }
        }
        return;
      }
      case "log":
        return console.error(`data-plane worker: ${event.message}`);
      case "flushed":
        return this.#links.get(event.link)?.onFlushed(event.bytes);
      case "closed": {
        const link = this.#links.get(event.link);
        this.#links.delete(event.link);
        return link?.onClosed(event.reason);
      }
      case "packets":
        return this.#tun?.take(event.packets);
      case "tun-off":
        return this.#tun?.off();
      case "unrouted":
        return this.onUnrouted?.(event.peer, event.stream, event.reason);
      case "stats":
        this.#tun?.counted(event.stats);
        return this.onStats?.(event.stats);
      case "error":
        return this.#fail(event.message);
      case "stopped": {
        this.#worker.terminate();
        const c = libc();
        c.close(this.#wake);
        c.close(this.#ack);
        return this.#onStopped?.();
      }
      case "ready":
        return this.#started?.(true);
    }
  }
}

/**
 * The TUN as the main thread's data plane sees it once the worker reads it: `readBatch` hands out the packets the
 * worker had no fast route for; writes go straight to the device from this thread.
 */
export class LaneTun implements Tun {
  readonly #lane: Lane;
  readonly #inner: LaneDevice;
  readonly #ack: number;
  #queue: Uint8Array[][] = [];
  #waiter: (() => void) | undefined;
  #closing: Promise<void> | undefined;
  #off: (() => void) | undefined;
  #closed = false;
  /** The worker's counters, merged in (see Lane.onStats). */
  readonly worker = { readPackets: 0, writtenPackets: 0, writeErrors: 0, readMs: 0, writeMs: 0 };

  constructor(lane: Lane, inner: LaneDevice, ack: number) {
    this.#lane = lane;
    this.#inner = inner;
    this.#ack = ack;
  }

  get name(): string {
    return this.#inner.name;
  }
  get mtu(): number {
    return this.#inner.mtu;
  }
  get offload(): boolean {
    return this.#inner.offload;
  }
  get closed(): boolean {
    return this.#closed;
  }

  get stats(): Required<TunStats> {
    const s = this.#inner.stats;
    return {
      readPackets: s.readPackets + this.worker.readPackets,
      writtenPackets: s.writtenPackets + this.worker.writtenPackets,
      writeErrors: s.writeErrors + this.worker.writeErrors,
      readMs: this.worker.readMs,
      writeMs: s.writeMs + this.worker.writeMs,
    };
  }

  /** @internal Packets from the worker. */
  take(packets: Uint8Array[]): void {
    if (this.#closed) return;
    this.#queue.push(packets);
    this.#waiter?.();
  }

  /** @internal The worker's device counters (totals). */
  counted(stats: LaneStats): void {
    this.worker.readPackets = stats.readPackets;
    this.worker.writtenPackets = stats.writtenPackets;
    this.worker.writeErrors = stats.writeErrors;
    this.worker.readMs = stats.stages.tunRead ?? 0;
    this.worker.writeMs = stats.stages.tunWrite ?? 0;
  }

  /** @internal The worker stopped reading the device. */
  off(): void {
    this.#off?.();
  }

  async readBatch(bufs: Uint8Array[], sizes: number[], offset: number): Promise<number> {
    while (this.#queue.length === 0 && !this.#closed) await new Promise<void>((r) => this.#waiter = r);
    this.#waiter = undefined;
    if (this.#closed) return 0;
    let n = 0;
    while (n < bufs.length && this.#queue.length > 0) {
      const batch = this.#queue[0]!;
      while (n < bufs.length && batch.length > 0) {
        const packet = batch.shift()!;
        bufs[n]!.set(packet, offset);
        sizes[n++] = packet.length;
      }
      if (batch.length === 0) {
        this.#queue.shift();
        addTo(this.#ack); // one batch taken: the worker may read the device again
      }
    }
    return n;
  }

  writeBatch(bufs: Uint8Array[], offset: number): number {
    if (this.#closed) throw new TunClosedError(this.name);
    return this.#inner.writeBatch(bufs, offset);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#waiter?.();
      // The worker lets go of the descriptor before it is closed (its number could be reused meanwhile).
      // (A worker that failed never answers: then after a second, as it no longer polls anything.)
      let timer: ReturnType<typeof setTimeout> | undefined;
      const off = new Promise<void>((resolve) => {
        this.#off = resolve;
        timer = setTimeout(resolve, this.#lane.failed ? 0 : 1_000);
      });
      this.#lane.command({ t: "tun-off" });
      await off;
      clearTimeout(timer);
      this.#lane.detached(this);
      await this.#inner.close();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
