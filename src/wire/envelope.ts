/**
 * The data envelope: what travels on a tether, hop by hop, from a stream's sender to its destination.
 *
 * ```
 * offset size field
 *      0    1 version      DATA_VERSION
 *      1    1 type         DataType
 *      2    1 flags        reserved, 0
 *      3   16 destination  node id of the final destination (never the path)
 *     19    8 stream       stream id, from the handshake
 *     27    8 counter      u64 big-endian, the AES-GCM nonce (a stream seals each counter once)
 *     35    1 ttl          hops left; relays decrement it
 *     36    … sealed       AES-256-GCM(batch) || 16-byte tag
 * ```
 * Bytes 0..35 (everything but the TTL) are the AEAD's additional data: a relay may only lower the TTL; any other
 * change makes the destination refuse the message. The TTL is last so the authenticated part is contiguous.
 *
 * The sealed plaintext is a batch: 1..MAX_PACKETS_PER_MESSAGE times `[u16 length][offload header][IP packet]`,
 * where the length counts the IP packet and the 10-byte offload header says how a TUN with offload should take it
 * (src/tun/offload.ts; all zero for a plain packet).
 * @module
 */

import {
  AEAD_TAG_BYTES,
  DATA_VERSION,
  MAX_DATA_MESSAGE_BYTES,
  MAX_PACKET_BYTES,
  MAX_PACKETS_PER_MESSAGE,
  NODE_ID_BYTES,
  PACKET_LENGTH_PREFIX_BYTES,
  PACKET_OFFLOAD_BYTES,
  STREAM_ID_BYTES,
} from "../spec.ts";
import { ByteReader, WireError } from "./bytes.ts";

/** Kinds of data-envelope messages. Unknown kinds are refused by the decoder. */
export enum DataType {
  /** A sealed batch of IP packets. */
  Packets = 1,
}

/** Size of the header in front of the sealed payload. */
export const DATA_HEADER_BYTES = 3 + NODE_ID_BYTES + STREAM_ID_BYTES + 8 + 1;
/** The authenticated part of the header: all of it except the trailing TTL byte. */
export const DATA_AAD_BYTES = DATA_HEADER_BYTES - 1;
const TTL_OFFSET = DATA_HEADER_BYTES - 1;
const DESTINATION_OFFSET = 3;
const STREAM_OFFSET = DESTINATION_OFFSET + NODE_ID_BYTES;
const COUNTER_OFFSET = STREAM_OFFSET + STREAM_ID_BYTES;
/** What each packet of a batch costs besides itself: its length and its offload header. */
const ENTRY_OVERHEAD = PACKET_LENGTH_PREFIX_BYTES + PACKET_OFFLOAD_BYTES;
/** Largest sealed plaintext (a batch) that still fits one data message. */
export const MAX_BATCH_BYTES = MAX_DATA_MESSAGE_BYTES - DATA_HEADER_BYTES - AEAD_TAG_BYTES;

/**
 * Whether a data message's header names `destination` and `stream`, read in place and nothing else checked (the
 * stream's opener checks the whole header): finding a message's stream without decoding it.
 */
export function namesStream(message: Uint8Array, destination: Uint8Array, stream: Uint8Array): boolean {
  if (message.length < DATA_HEADER_BYTES) return false;
  for (let i = 0; i < STREAM_ID_BYTES; i++) if (message[STREAM_OFFSET + i] !== stream[i]) return false;
  for (let i = 0; i < NODE_ID_BYTES; i++) {
    if (message[DESTINATION_OFFSET + i] !== destination[i]) return false;
  }
  return true;
}

/** The counter in a data message's header, read in place (for a message its opener already accepted). */
export function counterOf(message: Uint8Array): number {
  let counter = 0;
  for (let i = 0; i < 8; i++) counter = counter * 256 + message[COUNTER_OFFSET + i]!;
  return counter;
}

/** A decoded header. `destination` and `stream` are views into the message: copy them to keep them. */
export interface DataHeader {
  type: DataType;
  destination: Uint8Array;
  stream: Uint8Array;
  counter: number;
  ttl: number;
}

/** Writes the 36-byte header at the start of `message` (which must have room for it). */
export function writeDataHeader(message: Uint8Array, header: DataHeader): void {
  if (message.length < DATA_HEADER_BYTES) {
    throw new RangeError("data message buffer is smaller than its header");
  }
  if (header.destination.length !== NODE_ID_BYTES || header.stream.length !== STREAM_ID_BYTES) {
    throw new RangeError("data header: destination must be 16 bytes and stream 8 bytes");
  }
  if (!Number.isSafeInteger(header.counter) || header.counter < 0) {
    throw new RangeError(`data header: counter must be a safe non-negative integer, got ${header.counter}`);
  }
  if (!Number.isInteger(header.ttl) || header.ttl < 0 || header.ttl > 255) {
    throw new RangeError(`data header: ttl must be 0..255, got ${header.ttl}`);
  }
  const view = new DataView(message.buffer, message.byteOffset, DATA_HEADER_BYTES);
  message[0] = DATA_VERSION;
  message[1] = header.type;
  message[2] = 0;
  message.set(header.destination, DESTINATION_OFFSET);
  message.set(header.stream, STREAM_OFFSET);
  view.setUint32(COUNTER_OFFSET, Math.floor(header.counter / 2 ** 32));
  view.setUint32(COUNTER_OFFSET + 4, header.counter >>> 0);
  message[TTL_OFFSET] = header.ttl;
}

/**
 * Decodes and checks a data message's header; the sealed part is `sealedPart(message)`. Throws `WireError` on a
 * message that is too short or too long, of an unknown version, type or flags, or with no room for a tag.
 */
export function readDataHeader(message: Uint8Array): DataHeader {
  if (message.length > MAX_DATA_MESSAGE_BYTES) {
    throw new WireError(
      "oversize",
      `data message: ${message.length} bytes, the limit is ${MAX_DATA_MESSAGE_BYTES}`,
    );
  }
  const r = new ByteReader(message, "data message");
  const version = r.u8("version");
  if (version !== DATA_VERSION) {
    throw new WireError("version", `data message: version ${version}, this node speaks ${DATA_VERSION}`);
  }
  const type = r.u8("type");
  if (!(type in DataType)) throw new WireError("type", `data message: unknown type ${type}`);
  const flags = r.u8("flags");
  if (flags !== 0) throw new WireError("value", `data message: reserved flags are ${flags}, expected 0`);
  const destination = r.bytes(NODE_ID_BYTES, "destination");
  const stream = r.bytes(STREAM_ID_BYTES, "stream");
  const counter = r.u64("counter");
  const ttl = r.u8("ttl");
  if (r.remaining < AEAD_TAG_BYTES) {
    throw new WireError(
      "truncated",
      `data message: sealed part is ${r.remaining} bytes, shorter than its tag`,
    );
  }
  return { type, destination, stream, counter, ttl };
}

/** The authenticated header bytes (the AEAD's additional data), as a view. */
export function dataAad(message: Uint8Array): Uint8Array {
  return message.subarray(0, DATA_AAD_BYTES);
}

/** The sealed payload (ciphertext and tag), as a view. */
export function sealedPart(message: Uint8Array): Uint8Array {
  return message.subarray(DATA_HEADER_BYTES);
}

/**
 * For relays: lowers the TTL in place and returns the new value, or returns 0 without touching the message when
 * it has no hops left (the caller drops it). Needs only a checked header, never the stream key.
 */
export function decrementTtl(message: Uint8Array): number {
  const ttl = message[TTL_OFFSET] ?? 0;
  if (ttl === 0) return 0;
  message[TTL_OFFSET] = ttl - 1;
  return ttl - 1;
}

// ---- Batches ----------------------------------------------------------------------------------------------------

/**
 * Builds a batch in one buffer so IP packets are read straight into place: `slot()` is where the next packet
 * goes (after its 2-byte length prefix), `commit(n)` records its length. The TUN reads into the slot, so the
 * plaintext to seal is contiguous and is never copied before encryption.
 *
 * Ownership: the builder owns `buffer`; views from `slot()` and `plaintext()` are valid until `reset()`.
 */
export class BatchBuilder {
  readonly buffer: Uint8Array;
  #pos = 0;
  #count = 0;

  constructor(capacity: number = MAX_BATCH_BYTES) {
    if (capacity > MAX_BATCH_BYTES) throw new RangeError(`batch capacity above ${MAX_BATCH_BYTES}`);
    this.buffer = new Uint8Array(capacity);
  }

  /** Number of packets committed. */
  get count(): number {
    return this.#count;
  }

  /** Plaintext bytes committed. */
  get size(): number {
    return this.#pos;
  }

  /** True when no further packet of `packetBytes` (default: one MTU-sized packet) fits. */
  full(packetBytes = 1500): boolean {
    return this.#count >= MAX_PACKETS_PER_MESSAGE ||
      this.#pos + ENTRY_OVERHEAD + packetBytes > this.buffer.length;
  }

  /** The free space for the next packet, up to MAX_PACKET_BYTES. Read a packet into it, then `commit`. */
  slot(): Uint8Array {
    const start = this.#pos + ENTRY_OVERHEAD;
    return this.buffer.subarray(start, Math.min(this.buffer.length, start + MAX_PACKET_BYTES));
  }

  /** Records that `n` bytes were written into the current slot, with their offload header (default: none). */
  commit(n: number, offload?: Uint8Array): void {
    if (this.#count >= MAX_PACKETS_PER_MESSAGE) {
      throw new RangeError("batch already holds the maximum packets");
    }
    if (!Number.isInteger(n) || n < 1 || n > this.slot().length) {
      throw new RangeError(`packet length ${n} does not fit the slot (1..${this.slot().length})`);
    }
    this.buffer[this.#pos] = n >>> 8;
    this.buffer[this.#pos + 1] = n & 0xff;
    const header = this.buffer.subarray(this.#pos + PACKET_LENGTH_PREFIX_BYTES, this.#pos + ENTRY_OVERHEAD);
    if (offload) header.set(offload.subarray(0, PACKET_OFFLOAD_BYTES));
    else header.fill(0);
    this.#pos += ENTRY_OVERHEAD + n;
    this.#count++;
  }

  /** Copies a packet in (for callers that already hold one), with its offload header (default: none). */
  push(packet: Uint8Array, offload?: Uint8Array): void {
    const slot = this.slot();
    if (packet.length > slot.length) throw new RangeError(`packet of ${packet.length} bytes does not fit`);
    slot.set(packet);
    this.commit(packet.length, offload);
  }

  /** The batch so far, as a view. */
  plaintext(): Uint8Array {
    return this.buffer.subarray(0, this.#pos);
  }

  reset(): void {
    this.#pos = 0;
    this.#count = 0;
  }
}

/** A packet of a batch and its offload header: views into the batch. */
export interface BatchEntry {
  offload: Uint8Array;
  packet: Uint8Array;
}

/** The IP packets of an opened batch, without their offload headers (see {@link unpackEntries}). */
export function unpackBatch(plaintext: Uint8Array): Uint8Array[] {
  return unpackEntries(plaintext).map((e) => e.packet);
}

/**
 * Splits an opened batch into its packets and their offload headers (views into `plaintext`, no copies). Refuses
 * an empty batch, more than MAX_PACKETS_PER_MESSAGE packets, zero-length packets and lengths that overrun the
 * batch.
 */
export function unpackEntries(plaintext: Uint8Array): BatchEntry[] {
  if (plaintext.length > MAX_BATCH_BYTES) {
    throw new WireError("oversize", `batch: ${plaintext.length} bytes, the limit is ${MAX_BATCH_BYTES}`);
  }
  const r = new ByteReader(plaintext, "batch");
  const packets: BatchEntry[] = [];
  while (r.remaining > 0) {
    if (packets.length === MAX_PACKETS_PER_MESSAGE) {
      throw new WireError("oversize", `batch: more than ${MAX_PACKETS_PER_MESSAGE} packets`);
    }
    const n = r.u16(`packet ${packets.length} length`);
    if (n === 0) throw new WireError("value", `batch: packet ${packets.length} has length 0`);
    const offload = r.bytes(PACKET_OFFLOAD_BYTES, `packet ${packets.length} offload header`);
    packets.push({ offload, packet: r.bytes(n, `packet ${packets.length}`) });
  }
  if (packets.length === 0) throw new WireError("truncated", "batch: no packets");
  return packets;
}
