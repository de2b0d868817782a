/**
 * STUN (RFC 5389/8489) as far as the Guardian's STUN service and `netcheck` need it: a strict decoder, the
 * Binding request a client sends, and the Binding answer a server gives (XOR-MAPPED-ADDRESS and nothing more).
 *
 * ```
 * offset size field
 *      0    2 type            00 + class and method bits interleaved (RFC 5389 §6)
 *      2    2 length          bytes after the header, a multiple of 4
 *      4    4 magic cookie    0x2112A442
 *      8   12 transaction id  chosen by the requester, echoed by the answer
 *     20    … attributes      [u16 type][u16 length][value][padding to 4]
 * ```
 * The decoder takes exactly one message filling the whole datagram: length and padding must add up, a
 * FINGERPRINT must be last and correct, only FINGERPRINT may follow MESSAGE-INTEGRITY.
 * @module
 */

import { ByteReader, ByteWriter, WireError } from "./bytes.ts";

/** The magic cookie every RFC 5389 message carries. */
export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_HEADER_BYTES = 20;
export const STUN_TRANSACTION_ID_BYTES = 12;
/** RFC 5389 §7.1: without a known path MTU, a STUN message over UDP stays under 548 bytes. */
export const STUN_MAX_UDP_BYTES = 548;
/** XORed into the CRC-32 of a FINGERPRINT attribute ("STUN"). */
const FINGERPRINT_XOR = 0x5354554e;

/** The four message classes (the C1/C0 bits of the type). */
export enum StunClass {
  Request = 0,
  Indication = 1,
  Success = 2,
  Error = 3,
}

/** The only method this project speaks. */
export const STUN_METHOD_BINDING = 0x001;

/** Attribute types this module knows by name. */
export enum StunAttribute {
  MappedAddress = 0x0001,
  Username = 0x0006,
  MessageIntegrity = 0x0008,
  ErrorCode = 0x0009,
  UnknownAttributes = 0x000a,
  Realm = 0x0014,
  Nonce = 0x0015,
  MessageIntegritySha256 = 0x001c,
  XorMappedAddress = 0x0020,
  Priority = 0x0024,
  UseCandidate = 0x0025,
  Software = 0x8022,
  Fingerprint = 0x8028,
}

/**
 * Comprehension-required attributes (type < 0x8000) a Binding request may carry and still be answered: a server
 * that checks no credentials ignores USERNAME and MESSAGE-INTEGRITY, and ICE's PRIORITY and USE-CANDIDATE do not
 * concern it. Any other one makes the request unanswerable (RFC 5389 would answer 420; see answerBinding).
 */
const IGNORABLE_IN_REQUEST: ReadonlySet<number> = new Set([
  StunAttribute.Username,
  StunAttribute.MessageIntegrity,
  StunAttribute.MessageIntegritySha256,
  StunAttribute.Priority,
  StunAttribute.UseCandidate,
]);

/** One attribute; `value` is a view into the decoded datagram (copy it to keep it). */
export interface StunAttributeValue {
  type: number;
  value: Uint8Array;
}

/** A decoded message. */
export interface StunMessage {
  class: StunClass;
  method: number;
  /** A view into the datagram: 12 bytes. */
  transactionId: Uint8Array;
  attributes: StunAttributeValue[];
}

/** A transport address as STUN carries it: 4 or 16 address bytes and a port. */
export interface StunAddress {
  address: Uint8Array;
  port: number;
}

const typeOf = (cls: StunClass, method: number) =>
  (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) |
  ((cls & 1) << 4) | ((cls & 2) << 7);

let crcTable: Uint32Array | undefined;

/** CRC-32 (ISO-HDLC, as zlib), used by FINGERPRINT. */
export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = crcTable[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Decodes one STUN message filling `datagram` exactly; throws WireError for anything else. */
export function decodeStun(datagram: Uint8Array): StunMessage {
  const r = new ByteReader(datagram, "STUN message");
  const type = r.u16("type");
  const length = r.u16("length");
  const cookie = r.u32("magic cookie");
  const transactionId = r.bytes(STUN_TRANSACTION_ID_BYTES, "transaction id");
  if (type & 0xc000) throw new WireError("type", "STUN message: the two top bits of the type must be 0");
  if (cookie !== STUN_MAGIC_COOKIE) {
    throw new WireError("version", `STUN message: magic cookie ${cookie.toString(16)}, expected 2112a442`);
  }
  if (length % 4 !== 0) throw new WireError("value", `STUN message: length ${length} is not a multiple of 4`);
  if (length !== r.remaining) {
    throw new WireError(
      length > r.remaining ? "truncated" : "trailing",
      `STUN message: length says ${length} bytes of attributes, the datagram holds ${r.remaining}`,
    );
  }
  const attributes: StunAttributeValue[] = [];
  let integrity = false;
  while (r.remaining > 0) {
    const at = r.position;
    const attr = r.u16("attribute type");
    const size = r.u16("attribute length");
    const value = r.bytes(size, "attribute value");
    r.bytes((4 - size % 4) % 4, "attribute padding"); // RFC 8489 §14: whatever it holds, it is ignored
    if (attributes.some((a) => a.type === StunAttribute.Fingerprint)) {
      throw new WireError("trailing", "STUN message: an attribute follows FINGERPRINT");
    }
    if (integrity && attr !== StunAttribute.Fingerprint && attr !== StunAttribute.MessageIntegritySha256) {
      throw new WireError("trailing", "STUN message: an attribute follows MESSAGE-INTEGRITY");
    }
    if (attr === StunAttribute.Fingerprint) {
      if (size !== 4) throw new WireError("value", `STUN message: FINGERPRINT of ${size} bytes`);
      const expected = (crc32(datagram.subarray(0, at)) ^ FINGERPRINT_XOR) >>> 0;
      const got = new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
      if (got !== expected) throw new WireError("value", "STUN message: FINGERPRINT does not match");
    }
    if (attr === StunAttribute.MessageIntegrity || attr === StunAttribute.MessageIntegritySha256) {
      integrity = true;
    }
    attributes.push({ type: attr, value });
  }
  const cls = (((type >> 7) & 2) | ((type >> 4) & 1)) as StunClass;
  const method = (type & 0x000f) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0f80);
  return { class: cls, method, transactionId, attributes };
}

/** Encodes a message; with `fingerprint`, a FINGERPRINT attribute is appended. */
export function encodeStun(message: StunMessage, options: { fingerprint?: boolean } = {}): Uint8Array {
  const w = new ByteWriter("STUN message", STUN_HEADER_BYTES + 64);
  let length = 0;
  for (const a of message.attributes) length += 4 + a.value.length + (4 - a.value.length % 4) % 4;
  if (options.fingerprint) length += 8;
  w.u16(typeOf(message.class, message.method), "type").u16(length, "length");
  w.u32(STUN_MAGIC_COOKIE, "magic cookie").fixed(message.transactionId, STUN_TRANSACTION_ID_BYTES, "id");
  for (const a of message.attributes) {
    w.u16(a.type, "attribute type").u16(a.value.length, "attribute length");
    w.fixed(a.value, a.value.length, "attribute value");
    w.fixed(new Uint8Array((4 - a.value.length % 4) % 4), (4 - a.value.length % 4) % 4, "padding");
  }
  const body = w.finish().slice();
  if (!options.fingerprint) return body;
  const out = new Uint8Array(body.length + 8);
  out.set(body);
  const view = new DataView(out.buffer);
  view.setUint16(body.length, StunAttribute.Fingerprint);
  view.setUint16(body.length + 2, 4);
  view.setUint32(body.length + 4, (crc32(body) ^ FINGERPRINT_XOR) >>> 0);
  return out;
}

/** XORs an address with the cookie (and, for IPv6, the transaction id): the X-Address of RFC 5389 §15.2. */
function xorAddress(address: Uint8Array, transactionId: Uint8Array): Uint8Array {
  const mask = new Uint8Array(16);
  new DataView(mask.buffer).setUint32(0, STUN_MAGIC_COOKIE);
  mask.set(transactionId, 4);
  return address.map((b, i) => b ^ mask[i]!);
}

/** The value of an XOR-MAPPED-ADDRESS attribute for `mapped`. */
export function xorMappedAddressValue(mapped: StunAddress, transactionId: Uint8Array): Uint8Array {
  if (mapped.address.length !== 4 && mapped.address.length !== 16) {
    throw new RangeError(`a STUN address has 4 or 16 bytes, got ${mapped.address.length}`);
  }
  const w = new ByteWriter("XOR-MAPPED-ADDRESS", 20);
  w.u8(0, "reserved").u8(mapped.address.length === 4 ? 1 : 2, "family");
  w.u16(mapped.port ^ (STUN_MAGIC_COOKIE >>> 16), "x-port");
  const x = xorAddress(mapped.address, transactionId);
  return w.fixed(x, x.length, "x-address").finish();
}

/** The XOR-MAPPED-ADDRESS of a message (the first one), or undefined when it has none; throws if it is malformed. */
export function readXorMappedAddress(message: StunMessage): StunAddress | undefined {
  const attr = message.attributes.find((a) => a.type === StunAttribute.XorMappedAddress);
  if (!attr) return undefined;
  const r = new ByteReader(attr.value, "XOR-MAPPED-ADDRESS");
  r.u8("reserved"); // RFC 5389 §15.1: ignored by receivers
  const family = r.u8("family");
  if (family !== 1 && family !== 2) throw new WireError("value", `XOR-MAPPED-ADDRESS: family ${family}`);
  const port = r.u16("x-port") ^ (STUN_MAGIC_COOKIE >>> 16);
  const address = xorAddress(r.bytes(family === 1 ? 4 : 16, "x-address"), message.transactionId);
  r.end();
  return { address, port };
}

/** A Binding request with no attributes (20 bytes): what netcheck sends. */
export function bindingRequest(transactionId: Uint8Array): Uint8Array {
  return encodeStun({ class: StunClass.Request, method: STUN_METHOD_BINDING, transactionId, attributes: [] });
}

/**
 * The server side of STUN, as a pure function: the answer to `datagram` received from `from`, or a WireError.
 *
 * Only a well-formed Binding request gets an answer, and the answer is the smallest that serves: the header and
 * one XOR-MAPPED-ADDRESS (32 bytes for IPv4, 44 for IPv6; no SOFTWARE, no FINGERPRINT, nothing echoed). Anything
 * else (responses, indications, other methods, oversize datagrams, junk) is refused, so the server never sends
 * more than a few bytes more than it received, and nothing at all for traffic that is not a Binding request. A
 * request with an unknown comprehension-required attribute is refused too, where RFC 5389 would answer "420
 * Unknown Attribute": that error would be larger than the request.
 */
export function answerBinding(datagram: Uint8Array, from: StunAddress): Uint8Array {
  if (datagram.length > STUN_MAX_UDP_BYTES) {
    throw new WireError(
      "oversize",
      `STUN request of ${datagram.length} bytes (at most ${STUN_MAX_UDP_BYTES})`,
    );
  }
  const request = decodeStun(datagram);
  if (request.class !== StunClass.Request || request.method !== STUN_METHOD_BINDING) {
    throw new WireError(
      "type",
      `STUN: only Binding requests are answered (class ${request.class}, method ${request.method})`,
    );
  }
  const unknown = request.attributes.find((a) => a.type < 0x8000 && !IGNORABLE_IN_REQUEST.has(a.type));
  if (unknown) {
    throw new WireError("value", `STUN: comprehension-required attribute 0x${unknown.type.toString(16)}`);
  }
  return encodeStun({
    class: StunClass.Success,
    method: STUN_METHOD_BINDING,
    transactionId: request.transactionId,
    attributes: [{
      type: StunAttribute.XorMappedAddress,
      value: xorMappedAddressValue(from, request.transactionId),
    }],
  });
}
