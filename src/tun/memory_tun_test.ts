import { parseUdp, udpPacket } from "../../tests/packets.ts";
import { tunConformance, type TunHarness } from "../../tests/tun_conformance.ts";
import { parseIPv4, parseIPv6 } from "./ip.ts";
import { MemoryTun } from "./memory_tun.ts";

tunConformance("MemoryTun", () => {
  const tun = new MemoryTun();
  const local = { 4: parseIPv4("10.99.0.1")!, 6: parseIPv6("fd99::1")! };
  const remote = { 4: parseIPv4("10.99.0.2")!, 6: parseIPv6("fd99::2")! };
  const harness: TunHarness = {
    tun,
    local,
    remote,
    hostSend(version, port, data) {
      tun.host.send(udpPacket(local[version], remote[version], { sport: 40_000, dport: port }, data));
      return Promise.resolve();
    },
    hostListen(version, port) {
      return Promise.resolve({
        async next() {
          for (;;) {
            const packet = await tun.host.receive();
            if (!packet) throw new Error("device closed");
            const udp = parseUdp(packet);
            if (udp && udp.dport === port && udp.dst.length === local[version].length) return udp.data;
          }
        },
      });
    },
    [Symbol.asyncDispose]: () => tun.close(),
  };
  return Promise.resolve(harness);
});
