/**
 * TUN offload metadata (the kernel's `struct virtio_net_hdr`, 10 bytes, little-endian) and what a node without
 * offload must do in its place. With offload, a TUN hands out TCP "super-packets" of up to 64 KiB (one IP and
 * TCP header for many segments, `gso_size` bytes of payload each) with the checksum left partial, and takes them
 * back the same way: the kernel segments and checksums. Batches carry each packet with its header, so a super-
 * packet crosses the overlay whole; a receiver whose TUN has no offload splits it here (`segment`) and completes
 * partial checksums (`completeChecksum`).
 *
 * ```
 * offset size field
 *      0    1 flags        bit 0 NEEDS_CSUM: the checksum at csum_start + csum_offset is partial
 *      1    1 gso_type     0 none, 1 TCPv4, 4 TCPv6 (bit 7: ECN)
 *      2    2 hdr_len      IP + TCP header bytes (advisory: recomputed here)
 *      4    2 gso_size     payload bytes per segment
 *      6    2 csum_start   where checksumming starts (the TCP or UDP header)
 *      8    2 csum_offset  where the checksum field is, from csum_start
 * ```
 * @module
 */

import { PACKET_OFFLOAD_BYTES } from "../spec.ts";
import { checksumAdd, checksumFinish } from "./ip.ts";

/** Bytes of the offload header in front of every packet when offload is on (a batch carries it as it is). */
export const OFFLOAD_HEADER_BYTES = PACKET_OFFLOAD_BYTES;
/** An offload header saying "a plain packet, checksums complete". */
export const NO_OFFLOAD: Uint8Array = new Uint8Array(OFFLOAD_HEADER_BYTES);

export const NEEDS_CSUM = 1;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_TCPV6 = 4;
const GSO_ECN = 0x80;

const TCP = 6;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/** A decoded offload header. */
export interface Offload {
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** Decodes the 10-byte header at the start of `header`. */
export function readOffload(header: Uint8Array): Offload {
  const v = new DataView(header.buffer, header.byteOffset, OFFLOAD_HEADER_BYTES);
  return {
    flags: header[0]!,
    gsoType: header[1]! & ~GSO_ECN,
    gsoSize: v.getUint16(4, true),
    csumStart: v.getUint16(6, true),
    csumOffset: v.getUint16(8, true),
  };
}

/** Whether the packet needs work before a TUN without offload takes it. */
export function needsWork(header: Uint8Array): boolean {
  return header[0] !== 0 || header[1] !== 0;
}

/**
 * Packets as a TUN without offload takes them: `packet` itself when its header asks for nothing, the packet with
 * its partial checksum completed, or a TCP super-packet split into segments of `gso_size` with full checksums.
 * Undefined for what cannot be done here (a malformed packet, an unknown kind of segmentation): it is dropped.
 */
export function plainPackets(header: Uint8Array, packet: Uint8Array): Uint8Array[] | undefined {
  if (!needsWork(header)) return [packet];
  const o = readOffload(header);
  if (o.gsoType === GSO_NONE) {
    return (o.flags & NEEDS_CSUM) && completeChecksum(packet, o.csumStart, o.csumOffset)
      ? [packet]
      : undefined;
  }
  if (o.gsoType === GSO_TCPV4 || o.gsoType === GSO_TCPV6) return segment(packet, o.gsoSize);
  return undefined;
}

/**
 * Completes a partial checksum in place: the field at `start + offset` holds the pseudo-header's sum, and the
 * checksum covers everything from `start` on. False when the offsets fall outside the packet.
 */
export function completeChecksum(packet: Uint8Array, start: number, offset: number): boolean {
  const at = start + offset;
  if (start >= packet.length || at + 2 > packet.length) return false;
  let sum = checksumFinish(checksumAdd(packet.subarray(start)));
  // A UDP checksum of 0 means "none": it is sent as all ones (RFC 768); TCP never sees the difference.
  if (sum === 0) sum = 0xffff;
  packet[at] = sum >>> 8;
  packet[at + 1] = sum & 0xff;
  return true;
}

/**
 * Splits a TCP super-packet (IPv4 or IPv6 without extension headers) into segments of at most `mss` payload
 * bytes: each a copy of the IP and TCP headers with its own length, IPv4 id, sequence number and flags (FIN and
 * PSH only on the last, CWR only on the first), and full IP and TCP checksums. Undefined if malformed.
 */
export function segment(packet: Uint8Array, mss: number): Uint8Array[] | undefined {
  const version = packet[0]! >> 4;
  const ipLen = version === 4 ? (packet[0]! & 0x0f) * 4 : 40;
  if ((version !== 4 && version !== 6) || packet.length < ipLen + 20 || mss < 1) return undefined;
  if ((version === 4 ? packet[9] : packet[6]) !== TCP) return undefined;
  const tcpLen = (packet[ipLen + 12]! >> 4) * 4;
  const headerLen = ipLen + tcpLen;
  if (tcpLen < 20 || packet.length < headerLen) return undefined;
  const payload = packet.length - headerLen;
  const count = Math.max(1, Math.ceil(payload / mss));
  const src = version === 4 ? packet.subarray(12, 20) : packet.subarray(8, 40);
  const pseudo = checksumAdd(src, TCP);
  const view = new DataView(packet.buffer, packet.byteOffset, packet.length);
  const seq0 = view.getUint32(ipLen + 4);
  const id0 = version === 4 ? view.getUint16(4) : 0;
  const flags0 = packet[ipLen + 13]!;
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const from = headerLen + i * mss;
    const size = Math.min(mss, payload - i * mss);
    const s = new Uint8Array(headerLen + size);
    s.set(packet.subarray(0, headerLen));
    s.set(packet.subarray(from, from + size), headerLen);
    const v = new DataView(s.buffer);
    if (version === 4) {
      v.setUint16(2, s.length);
      v.setUint16(4, (id0 + i) & 0xffff);
      v.setUint16(10, 0);
      v.setUint16(10, checksumFinish(checksumAdd(s.subarray(0, ipLen))));
    } else v.setUint16(4, s.length - 40);
    v.setUint32(ipLen + 4, (seq0 + i * mss) >>> 0);
    let flags = flags0;
    if (i < count - 1) flags &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) flags &= ~TCP_CWR;
    s[ipLen + 13] = flags;
    v.setUint16(ipLen + 16, 0);
    v.setUint16(ipLen + 16, checksumFinish(checksumAdd(s.subarray(ipLen), pseudo + (s.length - ipLen))));
    out.push(s);
  }
  return out;
}
