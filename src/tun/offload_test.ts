import { assert, assertEquals } from "../../tests/assert.ts";
import { ipPacket, udpPacket } from "../../tests/packets.ts";
import { checksumAdd, checksumFinish } from "./ip.ts";
import {
  GSO_TCPV4,
  GSO_TCPV6,
  NEEDS_CSUM,
  NO_OFFLOAD,
  OFFLOAD_HEADER_BYTES,
  plainPackets,
} from "./offload.ts";

const V4 = [Uint8Array.of(10, 0, 0, 1), Uint8Array.of(10, 0, 0, 2)] as const;
const V6 = [new Uint8Array(16).fill(1), new Uint8Array(16).fill(2)] as const;

function header(flags: number, gsoType: number, gsoSize: number, csumStart: number, csumOffset: number) {
  const h = new Uint8Array(OFFLOAD_HEADER_BYTES);
  const v = new DataView(h.buffer);
  h[0] = flags;
  h[1] = gsoType;
  v.setUint16(4, gsoSize, true);
  v.setUint16(6, csumStart, true);
  v.setUint16(8, csumOffset, true);
  return h;
}

/** Sum of the transport pseudo-header, as the kernel leaves it in a partial checksum. */
function pseudo(src: Uint8Array, dst: Uint8Array, protocol: number, length: number): number {
  return checksumAdd(dst, checksumAdd(src)) + protocol + length;
}

/** A TCP super-packet as a TUN with offload hands it out: one header, `payload` bytes, partial checksum. */
function superPacket(src: Uint8Array, dst: Uint8Array, payload: Uint8Array, tcpFlags: number): Uint8Array {
  const tcp = new Uint8Array(20 + payload.length);
  const v = new DataView(tcp.buffer);
  v.setUint16(0, 40000);
  v.setUint16(2, 5201);
  v.setUint32(4, 0xfffffa00); // the sequence number wraps inside the super-packet
  tcp[12] = 5 << 4;
  tcp[13] = tcpFlags;
  v.setUint16(14, 65535);
  tcp.set(payload, 20);
  const p = ipPacket(src, dst, 6, tcp);
  const ipLen = src.length === 4 ? 20 : 40;
  let sum = pseudo(src, dst, 6, tcp.length);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  new DataView(p.buffer).setUint16(ipLen + 16, sum);
  return p;
}

/** Whether a segment's IP (v4) and TCP checksums verify. */
function checksumsHold(s: Uint8Array, src: Uint8Array, dst: Uint8Array): boolean {
  const ipLen = src.length === 4 ? 20 : 40;
  const ipOk = src.length === 16 || checksumFinish(checksumAdd(s.subarray(0, 20))) === 0;
  return ipOk && checksumFinish(checksumAdd(s.subarray(ipLen), pseudo(src, dst, 6, s.length - ipLen))) === 0;
}

for (const [name, [src, dst], gso] of [["IPv4", V4, GSO_TCPV4], ["IPv6", V6, GSO_TCPV6]] as const) {
  Deno.test(`offload: a TCP super-packet (${name}) is split into segments a TUN without offload takes`, () => {
    const payload = Uint8Array.from({ length: 3500 }, (_, i) => i * 7);
    const ipLen = src.length === 4 ? 20 : 40;
    const flags = 0x80 | 0x10 | 0x08 | 0x01; // CWR, ACK, PSH, FIN
    const packets = plainPackets(
      header(NEEDS_CSUM, gso, 1448, ipLen, 16),
      superPacket(src, dst, payload, flags),
    )!;
    assertEquals(packets.map((p) => p.length - ipLen - 20), [1448, 1448, 604]);
    const v = (p: Uint8Array) => new DataView(p.buffer);
    assertEquals(packets.map((p) => v(p).getUint32(ipLen + 4)), [0xfffffa00, 0xffffffa8, 1360]);
    assertEquals(
      packets.map((p) => p[ipLen + 13]),
      [0x90, 0x10, 0x19],
      "CWR first only, PSH and FIN last only",
    );
    if (src.length === 4) assertEquals(packets.map((p) => v(p).getUint16(2)), [1488, 1488, 644]);
    else assertEquals(packets.map((p) => v(p).getUint16(4)), [1468, 1468, 624]);
    for (const p of packets) assert(checksumsHold(p, src, dst), "IP and TCP checksums verify");
    const joined = packets.flatMap((p) => [...p.subarray(ipLen + 20)]);
    assertEquals(joined, [...payload], "the payload, whole and in order");
  });
}

Deno.test("offload: a partial checksum is completed; a plain packet passes untouched; nonsense is refused", () => {
  const full = udpPacket(V4[0], V4[1], { sport: 1, dport: 2 }, Uint8Array.of(1, 2, 3, 4, 5));
  const partial = full.slice();
  let sum = pseudo(V4[0], V4[1], 17, full.length - 20);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  new DataView(partial.buffer).setUint16(26, sum);
  assertEquals(plainPackets(header(NEEDS_CSUM, 0, 0, 20, 6), partial), [full]);
  assertEquals(plainPackets(NO_OFFLOAD, full), [full]);
  assertEquals(plainPackets(header(NEEDS_CSUM, 0, 0, 200, 6), full.slice()), undefined, "offsets outside");
  assertEquals(plainPackets(header(0, 3, 1000, 20, 6), full.slice()), undefined, "UDP fragmentation offload");
  assertEquals(plainPackets(header(0, GSO_TCPV4, 1000, 20, 16), full.slice()), undefined, "not TCP");
});
