/**
 * TUN benchmark, in a network namespace: packets per second written into the device (host-bound) and read out of
 * it while another process floods UDP into the device's prefix.
 * @module
 */

import { LinuxTun } from "../src/tun/linux_tun.ts";
import { parseIPv4 } from "../src/tun/ip.ts";
import { Netns, netnsUnavailable } from "../tests/netns.ts";
import { udpPacket } from "../tests/packets.ts";
import type { Figure } from "./crypto.ts";

/** A flooder in Python: the fastest plain UDP sender on a stock Debian machine, and a separate process. */
const FLOOD = `
import socket, sys, time
size, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = b"x" * size
sent, end = 0, time.time() + seconds
while time.time() < end:
    for _ in range(1000):
        try:
            s.sendto(data, ("10.97.0.2", 9))
            sent += 1
        except OSError:
            pass
print(sent)
`;

/** Reads while the flooder runs; the device is closed at the end (which also ends the last pending read). */
async function readRate(ns: Netns, payload: number, seconds: number): Promise<Figure> {
  await using tun = await LinuxTun.open({ name: "vb1", addresses: ["10.97.0.1/24"] });
  const bufs = Array.from({ length: 64 }, () => new Uint8Array(tun.mtu));
  const sizes = new Array<number>(64).fill(0);
  const flood = ns.exec("python3", ["-c", FLOOD, String(payload), String(seconds)]);
  let received = 0;
  let done = false;
  const finished = flood.then((out) => {
    done = true;
    return Number(out.text.trim());
  });
  const start = performance.now();
  const reading = (async () => {
    for (let n; (n = await tun.readBatch(bufs, sizes, 0)) > 0;) if (!done) received += n;
  })();
  const sent = await finished;
  const elapsed = (performance.now() - start) / 1000;
  await tun.close();
  await reading;
  return {
    name: `TUN read, ${payload + 28}-byte packets`,
    value: received / elapsed / 1000,
    unit: "kpkt/s",
    note: `${(received * (payload + 28) * 8 / elapsed / 1e6).toFixed(0)} Mbit/s; flooder sent ${
      (sent / elapsed / 1000).toFixed(0)
    } kpkt/s, read ${(100 * received / Math.max(sent, 1)).toFixed(0)}%`,
  };
}

function writeRate(tun: LinuxTun, payload: number, seconds: number): Figure {
  const packet = udpPacket(
    parseIPv4("10.97.0.2")!,
    parseIPv4("10.97.0.1")!,
    { sport: 9, dport: 9 },
    new Uint8Array(payload),
  );
  const batch = Array.from({ length: 64 }, () => packet);
  let written = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) written += tun.writeBatch(batch, 0);
  const elapsed = (performance.now() - start) / 1000;
  return {
    name: `TUN write, ${packet.length}-byte packets`,
    value: written / elapsed / 1000,
    unit: "kpkt/s",
    note: `${(written * packet.length * 8 / elapsed / 1e6).toFixed(0)} Mbit/s`,
  };
}

/** Write and read rates for small and MTU-sized packets. */
export async function tunBench(options: { seconds?: number } = {}): Promise<Figure[]> {
  const seconds = options.seconds ?? 3;
  const why = netnsUnavailable();
  if (why) return [{ name: "TUN benchmark skipped", value: 0, unit: "", note: why }];
  await using ns = await Netns.create("bench");
  ns.enter();
  const figures: Figure[] = [];
  {
    await using tun = await LinuxTun.open({ name: "vb0", addresses: ["10.97.0.1/24"] });
    for (const payload of [36, 1372]) figures.push(writeRate(tun, payload, seconds));
  }
  for (const payload of [36, 1372]) figures.push(await readRate(ns, payload, seconds));
  return figures;
}
