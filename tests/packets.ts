/**
 * IP packets for tests: UDP datagrams and ICMP echo, IPv4 and IPv6, with correct checksums, and a parser for
 * what comes back. Used to play the far end of a TUN device.
 * @module
 */

import { checksumAdd, checksumFinish, ipVersion } from "../src/tun/ip.ts";

const UDP = 17;
const ICMP = 1;
const ICMPV6 = 58;

/** The one's-complement sum of the pseudo-header that UDP, TCP and ICMPv6 checksums cover. */
function pseudoSum(src: Uint8Array, dst: Uint8Array, protocol: number, length: number): number {
  const sum = checksumAdd(dst, checksumAdd(src));
  return src.length === 4
    ? sum + protocol + length
    : sum + Math.floor(length / 0x10000) + (length & 0xffff) + protocol;
}

/** Wraps `payload` (a transport header and data) in an IP header from `src` to `dst` (4 or 16 bytes each). */
export function ipPacket(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  payload: Uint8Array,
): Uint8Array {
  if (src.length === 4) {
    const p = new Uint8Array(20 + payload.length);
    const v = new DataView(p.buffer);
    p[0] = 0x45;
    v.setUint16(2, p.length);
    v.setUint16(6, 0x4000); // don't fragment
    p[8] = 64;
    p[9] = protocol;
    p.set(src, 12);
    p.set(dst, 16);
    v.setUint16(10, checksumFinish(checksumAdd(p.subarray(0, 20))));
    p.set(payload, 20);
    return p;
  }
  const p = new Uint8Array(40 + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x60;
  v.setUint16(4, payload.length);
  p[6] = protocol;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  p.set(payload, 40);
  return p;
}

/** A UDP datagram from src:sport to dst:dport, IPv4 or IPv6 by address length. */
export function udpPacket(
  src: Uint8Array,
  dst: Uint8Array,
  ports: { sport: number; dport: number },
  data: Uint8Array,
): Uint8Array {
  const udp = new Uint8Array(8 + data.length);
  const v = new DataView(udp.buffer);
  v.setUint16(0, ports.sport);
  v.setUint16(2, ports.dport);
  v.setUint16(4, udp.length);
  udp.set(data, 8);
  v.setUint16(6, checksumFinish(checksumAdd(udp, pseudoSum(src, dst, UDP, udp.length))) || 0xffff);
  return ipPacket(src, dst, UDP, udp);
}

/** The parts of a UDP packet, or undefined if `packet` is not UDP over IPv4/IPv6. */
export function parseUdp(packet: Uint8Array):
  | { src: Uint8Array; dst: Uint8Array; sport: number; dport: number; data: Uint8Array }
  | undefined {
  const version = ipVersion(packet);
  if (version === 0) return undefined;
  const [headerLength, protocol, src, dst] = version === 4
    ? [(packet[0]! & 0x0f) * 4, packet[9], packet.subarray(12, 16), packet.subarray(16, 20)]
    : [40, packet[6], packet.subarray(8, 24), packet.subarray(24, 40)];
  if (protocol !== UDP || packet.length < headerLength + 8) return undefined;
  const v = new DataView(packet.buffer, packet.byteOffset + headerLength);
  return { src, dst, sport: v.getUint16(0), dport: v.getUint16(2), data: packet.subarray(headerLength + 8) };
}

/** True for an ICMP (IPv4) or ICMPv6 echo request. */
export function isEchoRequest(packet: Uint8Array): boolean {
  const version = ipVersion(packet);
  if (version === 4) return packet[9] === ICMP && packet[(packet[0]! & 0x0f) * 4] === 8;
  if (version === 6) return packet[6] === ICMPV6 && packet[40] === 128;
  return false;
}

/** The echo reply a host would send for an echo `request`: addresses swapped, type changed, checksums redone. */
export function echoReply(request: Uint8Array): Uint8Array {
  const version = ipVersion(request);
  const [headerLength, src, dst] = version === 4
    ? [(request[0]! & 0x0f) * 4, request.subarray(12, 16), request.subarray(16, 20)]
    : [40, request.subarray(8, 24), request.subarray(24, 40)];
  const icmp = request.slice(headerLength);
  icmp[0] = version === 4 ? 0 : 129;
  icmp[2] = icmp[3] = 0;
  const sum = version === 4 ? checksumAdd(icmp) : checksumAdd(icmp, pseudoSum(dst, src, ICMPV6, icmp.length));
  new DataView(icmp.buffer).setUint16(2, checksumFinish(sum));
  return ipPacket(dst.slice(), src.slice(), version === 4 ? ICMP : ICMPV6, icmp);
}
