/**
 * A direct TCP connection beside a tether's WebRTC link, carrying its data messages when the two hosts can reach
 * each other over TCP (the same network, or a public address). The kernel's TCP (with segmentation offload) costs
 * far less per byte than SCTP over DTLS over UDP in libdatachannel's threads, and it keeps order and resends what
 * is lost, as the link's data channel does. Nothing here is trusted: every message is sealed and authenticated
 * end to end by its stream; the connection itself is tied to the tether by a 32-byte secret sent inside the
 * WebRTC link (DTLS), which the connecting side must present first.
 *
 * Frames: `[u32 length, big-endian][message]`, a message at most MAX_DATA_MESSAGE_BYTES. Once set up here, the
 * connection belongs to the data-plane worker (src/lane/), which reads and writes it: the main thread's messages
 * reach it through the worker, and the worker carries the traffic it can seal and open itself.
 * @module
 */

import { LINUX } from "../../ffi/libc.ts";
import {
  closeFd,
  recvNow,
  sendNow,
  socketError,
  sockname,
  tcpAccept,
  tcpConnect,
  tcpListen,
  unacknowledged,
  waitFd,
} from "../../ffi/socket.ts";
import { bytesEqual } from "../crypto/identity.ts";
import { Lane } from "../lane/lane.ts";
import { formatAddress, parseAddress } from "../tun/ip.ts";

export { STALL_MS } from "../lane/worker.ts";

/** The secret the connecting side sends first. */
export const SECRET_BYTES = 32;

/** What the connection reports to its link. */
export interface DirectEvents {
  onMessage(message: Uint8Array): void;
  /** The connection is gone (closed by either side, or failed); called once. */
  onClose(reason: string): void;
}

function addressOf(hostname: string): Uint8Array {
  const address = parseAddress(hostname);
  if (!address) throw new TypeError(`not an IP address: "${hostname}"`);
  return address;
}

/** One authenticated TCP connection carrying framed messages both ways. */
export class DirectTcp {
  readonly #lane: Lane;
  readonly #link: number;
  readonly #events: DirectEvents;
  readonly #local: string;
  readonly #fd: number;
  /** Frame bytes handed to the worker, and those it reported written. */
  #pushed = 0;
  #flushed = 0;
  #closed = false;
  #waiters: (() => void)[] = [];

  /** Gives a connected socket to the data-plane worker; undefined (the socket closed) if the worker failed. */
  static async #adopt(fd: number, events: DirectEvents, first: Uint8Array): Promise<DirectTcp | undefined> {
    const lane = Lane.acquire();
    if (await lane.ready) return new DirectTcp(lane, fd, events, first);
    lane.release();
    closeFd(fd);
    return undefined;
  }

  private constructor(lane: Lane, fd: number, events: DirectEvents, first: Uint8Array) {
    this.#events = events;
    let local = "";
    try {
      local = formatAddress(sockname(fd).address);
    } catch { /* shown as unknown */ }
    this.#local = local;
    this.#fd = fd;
    this.#lane = lane;
    this.#link = this.#lane.adopt(fd, first, {
      onMessage: (m) => this.#events.onMessage(m),
      onFlushed: (bytes) => {
        this.#flushed += bytes;
        this.#wake();
      },
      onClosed: (reason) => this.#end(reason),
    });
  }

  /**
   * Listens on `hostname` (an address the peer already reaches over the tether) at a free port, for one
   * connection presenting `secret` within `timeoutMs`; anything else is closed. Resolves with the port, and with
   * the connection once one presented the secret (undefined after the timeout). Throws when it cannot listen.
   */
  static listen(
    hostname: string,
    secret: Uint8Array,
    events: DirectEvents,
    timeoutMs: number,
  ): { port: number; accepted: Promise<DirectTcp | undefined> } {
    const { fd, port } = tcpListen(addressOf(hostname));
    const deadline = performance.now() + timeoutMs;
    const accepted = (async () => {
      try {
        while (performance.now() < deadline) {
          if (!(await waitFd(fd, LINUX.POLLIN, deadline - performance.now()))) continue;
          const conn = tcpAccept(fd);
          if (conn === undefined) continue;
          const presented = await readSecret(conn, deadline);
          if (presented && bytesEqual(presented.head, secret)) {
            return await DirectTcp.#adopt(conn, events, presented.rest);
          }
          closeFd(conn);
        }
      } catch { /* the listener failed: no direct connection */ }
      return undefined;
    })().finally(() => closeFd(fd));
    return { port, accepted };
  }

  /** Connects and presents `secret`; undefined when the host cannot be reached within `timeoutMs`. */
  static async connect(
    hostname: string,
    port: number,
    secret: Uint8Array,
    events: DirectEvents,
    timeoutMs: number,
  ): Promise<DirectTcp | undefined> {
    let fd: number;
    try {
      fd = tcpConnect(addressOf(hostname), port);
    } catch {
      return undefined;
    }
    try {
      const ready = await waitFd(fd, LINUX.POLLOUT, timeoutMs);
      if ((ready & LINUX.POLLOUT) && socketError(fd) === 0 && sendNow(fd, secret) === secret.length) {
        return await DirectTcp.#adopt(fd, events, new Uint8Array(0));
      }
    } catch { /* refused, reset: no direct connection */ }
    closeFd(fd);
    return undefined;
  }

  /** Bytes queued and not yet written. */
  get queued(): number {
    return this.#pushed - this.#flushed;
  }

  /**
   * Bytes on their way and not acknowledged by the peer: queued here, and what the socket holds (the worker owns
   * it; asking the kernel from this thread reads nothing but a count).
   */
  get behind(): number {
    return this.queued + (this.#closed ? 0 : unacknowledged(this.#fd));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** This end's address (an address of this host). */
  get localAddress(): string {
    return this.#local;
  }

  /** The worker's id for this connection (what a fast route names). */
  get link(): number {
    return this.#link;
  }

  /** Queues one message (copied into its frame); false once closed. */
  send(message: Uint8Array): boolean {
    if (this.#closed) return false;
    this.#lane.send(this.#link, message);
    this.#pushed += 4 + message.length;
    return true;
  }

  /** Resolves once fewer than `lowBytes` wait to be written (or the connection closed). */
  drained(lowBytes: number): Promise<void> {
    if (this.#closed || this.queued < lowBytes) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.#closed || this.queued < lowBytes) resolve();
        else this.#waiters.push(check);
      };
      this.#waiters.push(check);
    });
  }

  close(reason = "closed"): void {
    if (this.#closed) return;
    this.#lane.close(this.#link, reason);
    this.#end(reason);
  }

  #end(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#lane.release();
    this.#wake();
    this.#events.onClose(reason);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Reads the secret (and whatever came with it) from a new connection before `deadline`. */
async function readSecret(
  fd: number,
  deadline: number,
): Promise<{ head: Uint8Array; rest: Uint8Array } | undefined> {
  const buffer = new Uint8Array(64 * 1024);
  let filled = 0;
  try {
    while (filled < SECRET_BYTES) {
      const left = deadline - performance.now();
      if (left <= 0 || !(await waitFd(fd, LINUX.POLLIN, left))) return undefined;
      const got = recvNow(fd, buffer.subarray(filled));
      if (got === 0) return undefined;
      if (got > 0) filled += got;
    }
  } catch {
    return undefined;
  }
  return { head: buffer.slice(0, SECRET_BYTES), rest: buffer.slice(SECRET_BYTES, filled) };
}
