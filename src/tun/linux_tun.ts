/**
 * A real Linux TUN device, driven through FFI.
 *
 * Reading: synchronous `read()` calls (about 0.4 µs each) until the device is empty (EAGAIN), and only then one
 * `poll()` on a worker thread (about 50 µs) to wait for more. Under load the device is rarely empty, so the cost
 * per packet is the synchronous call. The poll also watches an eventfd, which close() signals, because closing
 * an fd does not wake a thread already polling it.
 * @module
 */

import { addTo, eventfd } from "../../ffi/eventfd.ts";
import { LINUX } from "../../ffi/libc.ts";
import { errno, libc, readKernelFile, SyscallError, writeKernelFile } from "../../ffi/loader.ts";
import { addIPv4, addIPv6, createTun, enableOffload, setMtu, setUp } from "../../ffi/tun.ts";
import { type Cidr, parseCidr } from "./ip.ts";
import { checkReadBuffers, readBytes, type Tun, TunClosedError, type TunStats } from "./tun.ts";

/** How to create a device. */
export interface LinuxTunOptions {
  /** Interface name (default "veilnet"): 1-15 characters, no "/", ":" or whitespace. */
  name?: string;
  /** Default 1500. */
  mtu?: number;
  /** Addresses with prefixes, e.g. ["10.128.0.1/16", "fd00:128::1/64"]; the prefix routes the range here. */
  addresses?: string[];
  /**
   * Offload (default false): packets carry their offload header, and TCP leaves in super-packets of up to
   * `gsoMaxBytes` that the kernel segments and checksums (src/tun/offload.ts). If the kernel refuses TSO, the
   * headers stay (all zero) and `offloadError` says why.
   */
  offload?: boolean;
  /** Largest super-packet with offload (default 65000, so one fits a data message with its headers). */
  gsoMaxBytes?: number;
}

/** Checks an interface name the way the kernel would, with a clearer message. */
export function checkInterfaceName(name: string): void {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes < 1 || bytes > 15 || name === "." || name === ".." || /[/:\s]/.test(name)) {
    throw new RangeError(`bad interface name "${name}": use 1-15 characters without "/", ":" or whitespace`);
  }
}

/**
 * Waits until the kernel has installed the local route of each IPv6 address. It does that from a work queue
 * shortly after the link comes up; until then, packets to the address are dropped. IPv4 needs no wait.
 * The table is read from this thread's namespace (thread-self), which is where the device is.
 */
async function ipv6Ready(name: string, addresses: Cidr[], timeoutMs = 2_000): Promise<void> {
  const wanted = addresses.map((a) =>
    `${Array.from(a.address, (b) => b.toString(16).padStart(2, "0")).join("")} 80`
  );
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const routes = readKernelFile("/proc/thread-self/net/ipv6_route").split("\n");
    const missing = wanted.filter((w) =>
      !routes.some((r) => r.startsWith(w) && r.trimEnd().endsWith(` ${name}`))
    );
    if (missing.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`IPv6 address(es) on "${name}" not usable after ${timeoutMs} ms (is IPv6 disabled?)`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * Asks the kernel not to give the device an IPv6 link-local address (addr_gen_mode 1, "none"), before it comes up.
 * The overlay routes by its own addresses; with a link-local one the kernel sends router solicitations into the
 * device as it comes up, which the node can only drop, and which cut the data-plane worker's warm-up short as if
 * real traffic waited (src/lane/worker.ts). Where the setting cannot be written (a host without IPv6, a container's
 * read-only /proc/sys), the device keeps its link-local address and works as before.
 */
function noLinkLocal(name: string): void {
  try {
    writeKernelFile(`/proc/sys/net/ipv6/conf/${name}/addr_gen_mode`, "1");
  } catch (error) {
    if (!(error instanceof SyscallError)) throw error;
  }
}

/** A TUN device on this host (in the calling thread's network namespace). */
export class LinuxTun implements Tun {
  readonly stats: Required<TunStats> = {
    readPackets: 0,
    writtenPackets: 0,
    writeErrors: 0,
    readMs: 0,
    writeMs: 0,
  };

  readonly #fd: number;
  readonly #wake: number;
  /** struct pollfd[2]: the device, then the eventfd. Kept alive while a poll runs on another thread. */
  readonly #pollfds = new Uint8Array(16);
  #closed = false;
  #closing: Promise<void> | undefined;
  #reading = false;
  /** The poll in flight, if any: close() waits for it before closing the fds it watches. */
  #polling: Promise<number> | undefined;

  private constructor(
    readonly name: string,
    readonly mtu: number,
    readonly offload: boolean,
    /** Why the kernel refused TSO, when offload was asked for and refused (packets then come one by one). */
    readonly offloadError: string | undefined,
    fd: number,
    wake: number,
  ) {
    this.#fd = fd;
    this.#wake = wake;
    const view = new DataView(this.#pollfds.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, LINUX.POLLIN, true);
    view.setInt32(8, wake, true);
    view.setInt16(12, LINUX.POLLIN, true);
  }

  /**
   * Creates, configures and brings up a device, and resolves once its addresses carry traffic. Every failure
   * throws an Error that says what to do, and leaves nothing behind (the half-made device is removed).
   */
  static async open(options: LinuxTunOptions = {}): Promise<LinuxTun> {
    const name = options.name ?? "veilnet";
    const mtu = options.mtu ?? 1500;
    checkInterfaceName(name);
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) {
      throw new RangeError(`bad MTU ${mtu}: use 576..65535`);
    }
    const addresses: Cidr[] = (options.addresses ?? []).map(parseCidr);
    const c = libc();
    const offload = options.offload ?? false;
    const fd = createTun(name, { vnetHdr: offload });
    let wake = -1;
    let offloadError: string | undefined;
    try {
      wake = eventfd();
      setMtu(name, mtu);
      if (offload) {
        try {
          enableOffload(fd, name, options.gsoMaxBytes ?? 65_000);
        } catch (error) {
          offloadError = (error as Error).message;
        }
      }
      for (const a of addresses) (a.version === 4 ? addIPv4 : addIPv6)(name, a.address, a.prefix);
      noLinkLocal(name);
      setUp(name);
      await ipv6Ready(name, addresses.filter((a) => a.version === 6));
    } catch (error) {
      if (wake >= 0) c.close(wake);
      c.close(fd);
      throw error;
    }
    return new LinuxTun(name, mtu, offload, offloadError, fd, wake);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The device's descriptor, for the data-plane worker (src/lane/), which reads it instead of readBatch. */
  get fd(): number {
    return this.#fd;
  }

  async readBatch(bufs: Uint8Array[], sizes: number[], offset: number): Promise<number> {
    checkReadBuffers(bufs, sizes, offset, readBytes(this));
    if (this.#reading) {
      throw new Error(`TUN "${this.name}": readBatch is already running (one reader at a time)`);
    }
    this.#reading = true;
    try {
      const c = libc();
      // Consecutive reads that failed with something other than "empty": errno can be disturbed by the runtime
      // between two calls, so one odd errno only sends us to poll(); a second in a row is a real failure.
      let strikes = 0;
      while (!this.#closed) {
        let n = 0;
        const started = performance.now();
        while (n < bufs.length) {
          const buf = bufs[n]!;
          const got = Number(c.read(this.#fd, buf.subarray(offset), BigInt(buf.length - offset)));
          if (got > 0) {
            sizes[n++] = got;
            strikes = 0;
            continue;
          }
          const code = got < 0 ? errno() : LINUX.EAGAIN;
          if (code !== LINUX.EAGAIN && code !== LINUX.EINTR && ++strikes >= 2) {
            throw new SyscallError(`reading from TUN "${this.name}"`, code);
          }
          break;
        }
        this.stats.readMs += performance.now() - started;
        if (n > 0) {
          this.stats.readPackets += n;
          return n;
        }
        // A result of -1 is EINTR, or a failure the next read reports precisely: either way, read again.
        this.#polling = c.poll(this.#pollfds, 2n, -1);
        await this.#polling;
        this.#polling = undefined;
      }
      return 0;
    } finally {
      this.#reading = false;
    }
  }

  writeBatch(bufs: Uint8Array[], offset: number): number {
    if (this.#closed) throw new TunClosedError(this.name);
    const c = libc();
    const started = performance.now();
    let written = 0;
    for (const buf of bufs) {
      const length = buf.length - offset;
      if (Number(c.write(this.#fd, buf.subarray(offset), BigInt(length))) === length) written++;
      else this.stats.writeErrors++;
    }
    this.stats.writtenPackets += written;
    this.stats.writeMs += performance.now() - started;
    return written;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      const c = libc();
      addTo(this.#wake);
      // The fds stay open until the poll watching them has returned: closing first could let the number be
      // reused while the other thread still polls it.
      await this.#polling;
      c.close(this.#wake);
      c.close(this.#fd);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
