/**
 * A direct TCP connection beside a tether's WebRTC link, carrying its data messages when the two hosts can reach
 * each other over TCP (the same network, or a public address). The kernel's TCP (with segmentation offload) costs
 * far less per byte than SCTP over DTLS over UDP in libdatachannel's threads, and it keeps order and resends what
 * is lost, as the link's data channel does. Nothing here is trusted: every message is sealed and authenticated
 * end to end by its stream; the connection itself is tied to the tether by a 32-byte secret sent inside the
 * WebRTC link (DTLS), which the connecting side must present first.
 *
 * Frames: `[u32 length, big-endian][message]`, a message at most MAX_FRAME_BYTES.
 * @module
 */

import { MAX_DATA_MESSAGE_BYTES } from "../spec.ts";
import { bytesEqual } from "../crypto/identity.ts";

/** The secret the connecting side sends first. */
export const SECRET_BYTES = 32;
/** Largest frame taken: a data message. A larger length ends the connection (the tether goes on over WebRTC). */
const MAX_FRAME_BYTES = MAX_DATA_MESSAGE_BYTES;
/** Bytes gathered into one write while the connection is busy. */
const WRITE_CHUNK_BYTES = 256 * 1024;
/**
 * A write the kernel has not taken within this long means the path died under TCP (it would retry for
 * minutes): the connection is closed and the data channel carries on.
 */
export const STALL_MS = 3_000;

/** What the connection reports to its link. */
export interface DirectEvents {
  onMessage(message: Uint8Array): void;
  /** The connection is gone (closed by either side, or failed); called once. */
  onClose(reason: string): void;
}

/** One authenticated TCP connection carrying framed messages both ways. */
export class DirectTcp {
  readonly #conn: Deno.TcpConn;
  readonly #events: DirectEvents;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #closed = false;
  #waiters: (() => void)[] = [];
  /** When the write in progress started (performance.now(), ms); undefined while none is. */
  #writeStarted: number | undefined;
  /**
   * Checks for a stalled write. One timer for the connection, armed by a write when none is armed, never one per
   * write: creating and clearing a timer costs more than a small frame's whole write (~30 us each, measured).
   */
  #watchdog: ReturnType<typeof setTimeout> | undefined;

  private constructor(conn: Deno.TcpConn, events: DirectEvents, first?: Uint8Array) {
    this.#conn = conn;
    this.#events = events;
    conn.setNoDelay(true);
    void this.#readLoop(first ?? new Uint8Array(0));
  }

  /**
   * Listens on `hostname` (an address the peer already reaches over the tether) at a free port, for one
   * connection presenting `secret` within `timeoutMs`; anything else is closed. Resolves with the port, and with
   * the connection once one presented the secret (undefined after the timeout).
   */
  static listen(
    hostname: string,
    secret: Uint8Array,
    events: DirectEvents,
    timeoutMs: number,
  ): { port: number; accepted: Promise<DirectTcp | undefined> } {
    const listener = Deno.listen({ hostname, port: 0, transport: "tcp" });
    const timer = setTimeout(() => listener.close(), timeoutMs);
    const accepted = (async () => {
      try {
        for await (const conn of listener) {
          const presented = await readExactly(conn, SECRET_BYTES, timeoutMs).catch(() => undefined);
          if (presented && bytesEqual(presented.head, secret)) {
            return new DirectTcp(conn, events, presented.rest);
          }
          conn.close();
        }
      } catch { /* the listener closed */ }
      return undefined;
    })().finally(() => {
      clearTimeout(timer);
      try {
        listener.close();
      } catch { /* already closed */ }
    });
    return { port: (listener.addr as Deno.NetAddr).port, accepted };
  }

  /** Connects and presents `secret`; undefined when the host cannot be reached within `timeoutMs`. */
  static async connect(
    hostname: string,
    port: number,
    secret: Uint8Array,
    events: DirectEvents,
    timeoutMs: number,
  ): Promise<DirectTcp | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("timeout")), timeoutMs);
    });
    const connecting = Deno.connect({ hostname, port, transport: "tcp" });
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await Promise.race([connecting, deadline]);
      await Promise.race([writeAll(conn, secret), deadline]);
      return new DirectTcp(conn, events);
    } catch {
      const close = (c: Deno.TcpConn) => {
        try {
          c.close();
        } catch { /* already closed */ }
      };
      if (conn) close(conn);
      else connecting.then(close, () => {}); // one that connects after the deadline is closed then
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Bytes queued and not yet written. */
  get queued(): number {
    return this.#queued;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** This end's address (an address of this host). */
  get localAddress(): string {
    return this.#conn.localAddr.hostname;
  }

  /** Queues one message (copied into its frame); false once closed. */
  send(message: Uint8Array): boolean {
    if (this.#closed) return false;
    const frame = new Uint8Array(4 + message.length);
    new DataView(frame.buffer).setUint32(0, message.length);
    frame.set(message, 4);
    this.#queue.push(frame);
    this.#queued += frame.length;
    if (!this.#writing) void this.#writeLoop();
    return true;
  }

  /** Resolves once fewer than `lowBytes` wait to be written (or the connection closed). */
  drained(lowBytes: number): Promise<void> {
    if (this.#closed || this.#queued < lowBytes) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.#closed || this.#queued < lowBytes) resolve();
        else this.#waiters.push(check);
      };
      this.#waiters.push(check);
    });
  }

  close(reason = "closed"): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#watchdog);
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#wake();
    this.#events.onClose(reason);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        // Frames waiting together go out in one write.
        let chunk = this.#queue.shift()!;
        if (this.#queue.length > 0 && chunk.length < WRITE_CHUNK_BYTES) {
          const parts = [chunk];
          let size = chunk.length;
          while (this.#queue.length > 0 && size + this.#queue[0]!.length <= WRITE_CHUNK_BYTES) {
            size += this.#queue[0]!.length;
            parts.push(this.#queue.shift()!);
          }
          chunk = new Uint8Array(size);
          let at = 0;
          for (const p of parts) {
            chunk.set(p, at);
            at += p.length;
          }
        }
        this.#writeStarted = performance.now();
        this.#watchdog ??= setTimeout(() => this.#checkStall(), STALL_MS);
        try {
          await writeAll(this.#conn, chunk);
        } finally {
          this.#writeStarted = undefined;
        }
        this.#queued -= chunk.length;
        this.#wake();
      }
    } catch (error) {
      this.close(`write failed: ${(error as Error).message}`);
    } finally {
      this.#writing = false;
    }
  }

  /**
   * The watchdog fired: a write that has waited STALL_MS closes the connection (which ends the write), one still
   * in time arms it for the rest of its allowance, and with no write in progress it stays unarmed.
   */
  #checkStall(): void {
    this.#watchdog = undefined;
    if (this.#writeStarted === undefined || this.#closed) return;
    const waited = performance.now() - this.#writeStarted;
    if (waited >= STALL_MS) return this.close(`write failed: stalled for ${STALL_MS} ms`);
    this.#watchdog = setTimeout(() => this.#checkStall(), STALL_MS - waited);
  }

  async #readLoop(first: Uint8Array): Promise<void> {
    // Room for two whole frames: a frame always fits after the whole ones before it are delivered.
    const buffer = new Uint8Array(2 * (4 + MAX_FRAME_BYTES));
    let filled = 0;
    buffer.set(first);
    filled = first.length;
    try {
      for (;;) {
        // Deliver every whole frame in the buffer.
        let at = 0;
        while (filled - at >= 4) {
          const length = new DataView(buffer.buffer, at, 4).getUint32(0);
          if (length === 0 || length > MAX_FRAME_BYTES) return this.close(`bad frame length ${length}`);
          if (filled - at - 4 < length) break;
          this.#events.onMessage(buffer.slice(at + 4, at + 4 + length));
          at += 4 + length;
        }
        if (at > 0) {
          buffer.copyWithin(0, at, filled);
          filled -= at;
        }
        const n = await this.#conn.read(buffer.subarray(filled));
        if (n === null) return this.close("closed by the peer");
        filled += n;
      }
    } catch (error) {
      this.close(`read failed: ${(error as Error).message}`);
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** Reads exactly `n` bytes (and whatever came with them) within `timeoutMs`. */
async function readExactly(
  conn: Deno.Conn,
  n: number,
  timeoutMs: number,
): Promise<{ head: Uint8Array; rest: Uint8Array }> {
  const buffer = new Uint8Array(64 * 1024);
  let filled = 0;
  const deadline = setTimeout(() => conn.close(), timeoutMs);
  try {
    while (filled < n) {
      const got = await conn.read(buffer.subarray(filled));
      if (got === null) throw new Error("closed before the secret");
      filled += got;
    }
  } finally {
    clearTimeout(deadline);
  }
  return { head: buffer.slice(0, n), rest: buffer.slice(n, filled) };
}
