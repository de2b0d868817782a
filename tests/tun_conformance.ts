/**
 * One behavioural suite for every Tun: the memory double and the real device run the same tests. A harness plays
 * the host's network stack: it sends UDP datagrams into the device's prefix and receives the datagrams written
 * to the device.
 * @module
 */

import { type Tun, TunClosedError } from "../src/tun/tun.ts";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { parseUdp, udpPacket } from "./packets.ts";

/** The host's side of a UDP receiver. */
export interface HostReceiver {
  /** The next datagram's data. */
  next(): Promise<Uint8Array>;
}

/** A device under test and the host around it. */
export interface TunHarness extends AsyncDisposable {
  tun: Tun;
  /** The device's own addresses: the host's end of the prefix. */
  local: Record<4 | 6, Uint8Array>;
  /** Addresses inside the prefixes, which the host routes into the device. */
  remote: Record<4 | 6, Uint8Array>;
  /** The host sends `data` over UDP to remote[version]:port; it must come out of readBatch. */
  hostSend(version: 4 | 6, port: number, data: Uint8Array): Promise<void>;
  /** The host listens on local[version]:port. */
  hostListen(version: 4 | 6, port: number): Promise<HostReceiver>;
}

/** Rejects if `promise` has not settled within `ms` (a guard against hangs, not a speed assertion). */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads batches until `count` UDP packets to `port` came out; returns their data. Other packets are ignored. */
export async function readUdp(
  tun: Tun,
  port: number,
  count: number,
  batch = 8,
  offset = 0,
): Promise<Uint8Array[]> {
  const bufs = Array.from({ length: batch }, () => new Uint8Array(offset + tun.mtu));
  const sizes = new Array<number>(batch).fill(0);
  const found: Uint8Array[] = [];
  while (found.length < count) {
    const n = await tun.readBatch(bufs, sizes, offset);
    if (n === 0) throw new Error("device closed while reading");
    for (let i = 0; i < n; i++) {
      const udp = parseUdp(bufs[i]!.subarray(offset, offset + sizes[i]!));
      if (udp?.dport === port) found.push(udp.data.slice());
    }
  }
  return found;
}

const enc = new TextEncoder();

/** Registers the suite for one kind of device. `make` builds a fresh harness per test. */
export function tunConformance(
  kind: string,
  make: () => Promise<TunHarness>,
  options: { ignore?: boolean } = {},
): void {
  const test = (name: string, fn: (h: TunHarness) => Promise<void>) =>
    Deno.test({
      name: `${kind}: ${name}`,
      ignore: options.ignore,
      fn: async () => {
        await using h = await make();
        await within(10_000, name, fn(h));
      },
    });

  for (const version of [4, 6] as const) {
    test(`a datagram the host sends into the IPv${version} prefix comes out of readBatch at the offset`, async (h) => {
      await h.hostSend(version, 7001, enc.encode(`hello v${version}`));
      const offset = 36;
      const bufs = [new Uint8Array(offset + h.tun.mtu)];
      const sizes = [0];
      for (;;) {
        assertEquals(await h.tun.readBatch(bufs, sizes, offset), 1);
        const packet = bufs[0]!.subarray(offset, offset + sizes[0]!);
        const udp = parseUdp(packet);
        if (udp?.dport !== 7001) continue; // the host's own chatter (router solicitations, MLD)
        assertEquals(packet[0]! >> 4, version);
        assertEquals([udp.src, udp.dst], [h.local[version], h.remote[version]]);
        assertEquals(new TextDecoder().decode(udp.data), `hello v${version}`);
        assertEquals(bufs[0]!.subarray(0, offset), new Uint8Array(offset), "headroom left untouched");
        return;
      }
    });

    test(`writeBatch delivers IPv${version} datagrams to a host socket, read from behind the headroom`, async (h) => {
      const receiver = await h.hostListen(version, 7002);
      const offset = 16;
      const packets = ["one", "two"].map((word) => {
        const packet = udpPacket(
          h.remote[version],
          h.local[version],
          { sport: 5000, dport: 7002 },
          enc.encode(word),
        );
        const buf = new Uint8Array(offset + packet.length).fill(0xee);
        buf.set(packet, offset);
        return buf;
      });
      assertEquals(h.tun.writeBatch(packets, offset), 2);
      assertEquals(new TextDecoder().decode(await receiver.next()), "one");
      assertEquals(new TextDecoder().decode(await receiver.next()), "two");
      assertEquals(h.tun.stats.writtenPackets, 2);
    });
  }

  test("readBatch hands out every ready packet, at most bufs.length per call", async (h) => {
    for (let i = 0; i < 5; i++) await h.hostSend(4, 7003, Uint8Array.of(i));
    const bufs = Array.from({ length: 3 }, () => new Uint8Array(h.tun.mtu));
    const sizes = [0, 0, 0];
    assertEquals(await h.tun.readBatch(bufs, sizes, 0), 3);
    const first = bufs.map((b, i) => parseUdp(b.subarray(0, sizes[i]))).filter((u) => u?.dport === 7003);
    const rest = await readUdp(h.tun, 7003, 5 - first.length);
    assertEquals([...first.map((u) => u!.data[0]), ...rest.map((d) => d[0])], [0, 1, 2, 3, 4]);
    assert(h.tun.stats.readPackets >= 5);
  });

  test("writeBatch skips a malformed packet, delivers the others, and counts the failure", async (h) => {
    const receiver = await h.hostListen(4, 7004);
    const good = (word: string) =>
      udpPacket(h.remote[4], h.local[4], { sport: 5000, dport: 7004 }, enc.encode(word));
    const garbage = Uint8Array.of(0x00, 1, 2, 3, 4, 5); // not IPv4 or IPv6
    assertEquals(h.tun.writeBatch([good("before"), garbage, good("after")], 0), 2);
    assertEquals(h.tun.stats.writeErrors, 1);
    assertEquals(new TextDecoder().decode(await receiver.next()), "before");
    assertEquals(new TextDecoder().decode(await receiver.next()), "after");
  });

  test("close ends a pending readBatch with 0, is idempotent, and later writes throw TunClosedError", async (h) => {
    const bufs = [new Uint8Array(h.tun.mtu)];
    // Read until the device says it is closed: the host may still send a packet or two of its own first.
    const reader = (async () => {
      while (await h.tun.readBatch(bufs, [0], 0) > 0);
      return 0;
    })();
    // Let the reader reach its wait (a real device is then parked in poll()).
    await new Promise((resolve) => setTimeout(resolve, 50));
    await h.tun.close();
    await h.tun.close();
    assertEquals(await within(2_000, "pending read after close", reader), 0);
    assert(h.tun.closed);
    assertEquals(await h.tun.readBatch(bufs, [0], 0), 0);
    assertThrows(() => h.tun.writeBatch([new Uint8Array(20)], 0), TunClosedError, "is closed");
  });

  test("readBatch refuses buffers too small for offset + MTU", async (h) => {
    let error: unknown;
    try {
      await h.tun.readBatch([new Uint8Array(h.tun.mtu)], [0], 4);
    } catch (e) {
      error = e;
    }
    assert(error instanceof RangeError && error.message.includes("cannot hold offset 4"), String(error));
  });
}
