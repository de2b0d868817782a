/**
 * The Guardian's STUN service: UDP sockets on its listen host that answer Binding requests with the address and
 * port they came from (src/wire/stun.ts decides what is answered), so every realm has server-reflexive candidates
 * with nothing configured. It listens on two ports (N and N+1) so `netcheck` can compare the mappings a NAT gives
 * one local socket towards two destinations.
 *
 * Defences, each tested: only well-formed Binding requests are answered, with the smallest answer (never more than
 * 24 bytes above the request); anything else is dropped without a word; and answers to one source address are rate
 * limited, so spoofed requests cannot turn the Guardian into a reflector aimed at someone else.
 * @module
 */

import dgram from "node:dgram";
import { parseAddress, parseIPv4 } from "../tun/ip.ts";
import { WireError } from "../wire/bytes.ts";
import { answerBinding } from "../wire/stun.ts";

/** How many answers one source address gets: a token bucket per address. Local tuning, not protocol. */
export interface StunLimits {
  /** Answers per second, sustained, per source address (a NAT may hide many nodes behind one). */
  perSecond: number;
  /** Answers in a burst, per source address (a node forming many tethers at once gathers once per tether). */
  burst: number;
  /** Source addresses tracked at once; when full, new ones are not answered until idle ones age out. */
  maxSources: number;
}

export const DEFAULT_STUN_LIMITS: StunLimits = { perSecond: 50, burst: 200, maxSources: 65_536 };

/** A token bucket per key, on an injected clock (ms). */
export class SourceLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(readonly limits: StunLimits, readonly clock: () => number) {}

  /** Takes one token for `key`; false when it has none left (or too many keys are tracked). */
  take(key: string): boolean {
    const now = this.clock();
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      if (this.#buckets.size >= this.limits.maxSources) this.#sweep(now);
      if (this.#buckets.size >= this.limits.maxSources) return false;
      bucket = { tokens: this.limits.burst, at: now };
      this.#buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(
      this.limits.burst,
      bucket.tokens + (now - bucket.at) * this.limits.perSecond / 1000,
    );
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Forgets keys whose bucket has refilled: they are where a new key would start anyway. */
  #sweep(now: number): void {
    for (const [key, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.limits.perSecond / 1000 >= this.limits.burst) {
        this.#buckets.delete(key);
      }
    }
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/** What the service did, by outcome. */
export interface StunCounters {
  answered: number;
  /** Dropped datagrams by reason: a WireError reason ("type", "truncated", ...) or "rate-limited". */
  dropped: Record<string, number>;
}

/** How to run the service. */
export interface StunServerOptions {
  /** The address to listen on ("0.0.0.0", "::" or one address). */
  hostname: string;
  /** Each port gets a socket; the Guardian uses [N, N+1]. */
  ports: number[];
  limits?: StunLimits;
  clock?: () => number;
  log?: (line: string) => void;
}

/** The address bytes of a datagram's source (an IPv4-mapped IPv6 source is answered as IPv4). */
function sourceBytes(address: string): Uint8Array | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? parseIPv4(mapped[1]!) : parseAddress(address.replace(/%.*$/, ""));
}

/** Closes a socket; resolves once it is closed (at once if it already was). */
function closeSocket(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve();
    }
  });
}

/** Binds one UDP socket; rejects with the socket's error (EADDRINUSE, EACCES...). */
function bind(hostname: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: hostname.includes(":") ? "udp6" : "udp4" });
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => void closeSocket(socket).then(() => reject(error));
    socket.once("error", fail);
    socket.bind(port, hostname, () => {
      socket.off("error", fail);
      resolve(socket);
    });
  });
}

/** The STUN service on one host and a few ports. */
export class StunServer implements AsyncDisposable {
  readonly counters: StunCounters = { answered: 0, dropped: {} };
  readonly #sockets: dgram.Socket[];
  readonly #limiter: SourceLimiter;
  readonly #log: (line: string) => void;
  #closed = false;

  private constructor(sockets: dgram.Socket[], o: StunServerOptions) {
    this.#sockets = sockets;
    this.#limiter = new SourceLimiter(o.limits ?? DEFAULT_STUN_LIMITS, o.clock ?? (() => Date.now()));
    this.#log = o.log ?? (() => {});
    for (const socket of sockets) {
      socket.on("message", (msg, rinfo) => this.#onDatagram(socket, msg, rinfo));
      // A send that fails (an unreachable source) must not end the process; there is nothing to do about it.
      socket.on("error", (error) => this.#log(`stun: socket error: ${error.message}`));
    }
  }

  /**
   * Listens on every port of `o.ports`, or on none: if one cannot be bound, the others are closed again and the
   * error names the port (its `cause` is the socket's error, e.g. EADDRINUSE).
   */
  static async listen(o: StunServerOptions): Promise<StunServer> {
    const sockets: dgram.Socket[] = [];
    for (const port of o.ports) {
      try {
        sockets.push(await bind(o.hostname, port));
      } catch (cause) {
        await Promise.all(sockets.map(closeSocket));
        throw new Error(`cannot listen for STUN on UDP ${o.hostname}:${port}: ${(cause as Error).message}`, {
          cause,
        });
      }
    }
    return new StunServer(sockets, o);
  }

  /** The bound ports, in the order given. */
  get ports(): number[] {
    return this.#sockets.map((s) => s.address().port);
  }

  #drop(reason: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
  }

  #onDatagram(socket: dgram.Socket, msg: Uint8Array, rinfo: dgram.RemoteInfo): void {
    const address = sourceBytes(rinfo.address);
    if (!address || rinfo.port === 0) return this.#drop("source");
    let answer: Uint8Array;
    try {
      answer = answerBinding(msg, { address, port: rinfo.port });
    } catch (error) {
      if (!(error instanceof WireError)) this.#log(`stun: unexpected error answering: ${error}`);
      return this.#drop(error instanceof WireError ? error.reason : "internal");
    }
    if (!this.#limiter.take(rinfo.address)) return this.#drop("rate-limited");
    this.counters.answered++;
    socket.send(answer, rinfo.port, rinfo.address);
  }

  /** Closes every socket; resolves once they are closed. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#sockets.map(closeSocket));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
