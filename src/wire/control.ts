/**
 * Control messages: what nodes say to each other over the Master (NATS). Every one is signed by its sender.
 *
 * ```
 * offset size field
 *      0    1 version     CONTROL_VERSION
 *      1    1 kind        ControlKind
 *      2    1 flags       reserved, 0
 *      3   16 sender      node id (SHA-256 of the sender's ML-DSA public key, truncated); all zero: the Guardian
 *     19   16 recipient   node id, or all zero for "everyone in the realm"
 *     35   16 certRef     which of the sender's certificates vouches for its key (hash of the certificate)
 *     51    8 timestamp   sender's clock, ms since the Unix epoch
 *     59   16 id          random; receivers refuse an id seen before
 *     75    4 bodyLength  u32
 *     79    … body        per kind, see BODIES
 *      … 3309 signature   ML-DSA-65 over CONTROL_SIGNATURE_CONTEXT || bytes 0 .. end of body
 * ```
 * Bodies are declared as data (BODIES) and encoded/decoded by one generic codec, so every kind gets the same
 * strict checks: exact sizes for fixed fields, limits on variable ones, valid UTF-8, no trailing bytes.
 *
 * One kind comes from the Guardian, not from a node: `Revoke`. Its sender is the all-zero id (GUARDIAN_SENDER,
 * which no node key hashes to), its recipient is BROADCAST, its certRef is all zero (the decoder insists on both),
 * and the realm key signs it (crypto/control_signing.ts enforces who may send what).
 * @module
 */

import {
  CONTROL_VERSION,
  MAX_CONTROL_MESSAGE_BYTES,
  ML_DSA_65_SIGNATURE_BYTES,
  ML_KEM_768_CIPHERTEXT_BYTES,
  ML_KEM_768_PUBLIC_KEY_BYTES,
  NODE_ID_BYTES,
  X25519_PUBLIC_KEY_BYTES,
} from "../spec.ts";
import { ByteReader, ByteWriter, WireError } from "./bytes.ts";
import { MAX_TAG_BYTES } from "./certificate.ts";
import {
  bytes,
  fixed,
  readRecord,
  type RecordOf,
  type Schema,
  string,
  u32,
  u64,
  u8,
  writeRecord,
} from "./schema.ts";

/** Kinds of control message. Numbers are wire values: never reuse one. */
export enum ControlKind {
  /**
   * "I am here": the sender's certificate, to the nodes that know it (its `peer` subject; a portal also to
   * everyone): when it joins, renews its certificate, and (leaving = 1) leaves.
   */
  Announce = 1,
  /** Opens a stream from sender to recipient (handshake message 1). */
  StreamRequest = 2,
  /** Completes the stream (handshake message 2). */
  StreamResponse = 3,
  /** WebRTC signalling for a tether: SDP offer/answer, ICE candidate, or close. */
  TetherSignal = 4,
  // 5 was DnsQuery (control version 1): Lookup replaced it.
  /** "That is me": the answer to a Lookup, with the answerer's certificate (which holds its addresses). */
  Found = 6,
  /** The sender's taints changed: its re-issued certificate. */
  TaintUpdate = 7,
  /** Who can reach this destination directly? (on its `via` subject: the nodes with a tether to it hear it). */
  RouteQuery = 8,
  /** "I can": a relay's answer, with its round-trip time to the destination when it knows one. */
  RouteAnswer = 9,
  /**
   * From the Guardian (sender GUARDIAN_SENDER, signed by the realm key), never from a node: every certificate of
   * `conflux` issued at or before `before` is void (the node was revoked or removed, or its grants changed).
   */
  Revoke = 10,
  /**
   * Who is this? A tag, an address, or a node id, with the asker's certificate so that the one found can check
   * it and knows the asker from then on. Published where only the owner hears it (a `who` subject, or the node's
   * own); answered with Found.
   */
  Lookup = 11,
  /**
   * What this node sees, for the Guardian's administrator (console, `guardian node list`): its version and the
   * peers it has traffic with (path, link, bytes, round-trip time), as JSON, with the sender's certificate. On
   * the realm's `report` subject, which only Guardians hear; sent every REPORT_MS and soon after a tether changes.
   */
  Report = 12,
}

/** What a Lookup names. */
export enum LookupKind {
  /** `key` is a tag (UTF-8). */
  Tag = 1,
  /** `key` is an address, 4 or 16 bytes: its overlay owner, or a portal whose subnet covers it. */
  Address = 2,
  /** `key` is a node id: the sender of a message this node could not check, asked who it is. */
  Node = 3,
}

/** Signal types inside a TetherSignal. */
export enum TetherSignalType {
  Offer = 1,
  Answer = 2,
  Candidate = 3,
  Close = 4,
}

/** Largest certificate a message may carry. */
export const MAX_CERTIFICATE_BYTES = 16 * 1024;
/** Largest SDP or candidate text. */
export const MAX_SIGNAL_BYTES = 16 * 1024;
/** Largest report text (JSON): its peers are capped (MAX_REPORT_PEERS), so a report's size does not grow with the realm. */
export const MAX_REPORT_BYTES = 16 * 1024;

/** The body of each kind, in wire order. */
export const BODIES = {
  [ControlKind.Announce]: {
    certificate: bytes(MAX_CERTIFICATE_BYTES),
    /** 1 when the sender is shutting down: peers drop it at once instead of waiting for it to expire. */
    leaving: u8(0, 1),
  },
  [ControlKind.StreamRequest]: {
    kemPublicKey: fixed(ML_KEM_768_PUBLIC_KEY_BYTES),
    x25519PublicKey: fixed(X25519_PUBLIC_KEY_BYTES),
  },
  [ControlKind.StreamResponse]: {
    /** SHA-256 of the whole signed request this answers. */
    requestHash: fixed(32),
    kemCiphertext: fixed(ML_KEM_768_CIPHERTEXT_BYTES),
    x25519PublicKey: fixed(X25519_PUBLIC_KEY_BYTES),
  },
  [ControlKind.TetherSignal]: {
    /** Names one tether attempt, so signals of an abandoned attempt are ignored. */
    session: fixed(16),
    signal: u8(TetherSignalType.Offer, TetherSignalType.Close),
    payload: string(MAX_SIGNAL_BYTES),
  },
  [ControlKind.Found]: {
    /** The id of the Lookup this answers. */
    query: fixed(16),
    /** The owner's certificate: the answer's addresses are the ones the realm signed, nothing else. */
    certificate: bytes(MAX_CERTIFICATE_BYTES),
  },
  [ControlKind.TaintUpdate]: { certificate: bytes(MAX_CERTIFICATE_BYTES) },
  [ControlKind.RouteQuery]: { destination: fixed(NODE_ID_BYTES) },
  [ControlKind.RouteAnswer]: {
    destination: fixed(NODE_ID_BYTES),
    /** Milliseconds, 0 when unknown. */
    rttMs: u32,
  },
  [ControlKind.Revoke]: {
    /** The conflux id, as in its certificates. */
    conflux: fixed(16),
    /** Ms since the Unix epoch: the conflux's certificates with notBefore <= before are void. */
    before: u64,
  },
  [ControlKind.Lookup]: {
    certificate: bytes(MAX_CERTIFICATE_BYTES),
    what: u8(LookupKind.Tag, LookupKind.Node),
    key: bytes(MAX_TAG_BYTES),
  },
  [ControlKind.Report]: {
    certificate: bytes(MAX_CERTIFICATE_BYTES),
    report: string(MAX_REPORT_BYTES),
  },
} as const satisfies Record<ControlKind, Schema>;

/** The decoded body of a kind. */
export type ControlBody<K extends ControlKind> = RecordOf<(typeof BODIES)[K]>;

// ---- The envelope ------------------------------------------------------------------------------------------------

/** The all-zero recipient: a message for every node of the realm. */
export const BROADCAST: Uint8Array = new Uint8Array(NODE_ID_BYTES);
/** The all-zero sender: the Guardian, signing with the realm key (only `Revoke` comes from it). */
export const GUARDIAN_SENDER: Uint8Array = new Uint8Array(NODE_ID_BYTES);
/** The all-zero certificate reference of a Guardian message (the realm key needs no certificate). */
export const NO_CERT_REF: Uint8Array = new Uint8Array(16);

/** Fields of a control message other than its signature. */
export interface ControlFields<K extends ControlKind = ControlKind> {
  kind: K;
  sender: Uint8Array;
  recipient: Uint8Array;
  certRef: Uint8Array;
  timestamp: number;
  id: Uint8Array;
  body: ControlBody<K>;
}

/** A decoded control message: its fields, the exact bytes its signature covers, and the signature. */
export type ControlMessage<K extends ControlKind = ControlKind> = ControlFields<K> & {
  signed: Uint8Array;
  signature: Uint8Array;
};

/** Any decoded control message; `switch (m.kind)` narrows `m.body`. */
export type AnyControlMessage = { [K in ControlKind]: ControlMessage<K> }[ControlKind];

const CONTROL_HEADER_BYTES = 3 + 3 * NODE_ID_BYTES + 8 + 16 + 4;
const MAX_BODY_BYTES = MAX_CONTROL_MESSAGE_BYTES - CONTROL_HEADER_BYTES - ML_DSA_65_SIGNATURE_BYTES;

/** Encodes everything the signature covers. Throws RangeError when a field breaks its limits. */
export function encodeControlUnsigned<K extends ControlKind>(m: ControlFields<K>): Uint8Array {
  if (m.kind === ControlKind.Revoke && (!isZero(m.recipient) || !isZero(m.certRef))) {
    throw new RangeError("control message: a Revoke goes to everyone (BROADCAST) with an all-zero certRef");
  }
  const w = new ByteWriter("control message", 512)
    .u8(CONTROL_VERSION, "version")
    .u8(m.kind, "kind")
    .u8(0, "flags")
    .fixed(m.sender, NODE_ID_BYTES, "sender")
    .fixed(m.recipient, NODE_ID_BYTES, "recipient")
    .fixed(m.certRef, 16, "certRef")
    .u64(m.timestamp, "timestamp")
    .fixed(m.id, 16, "id");
  const body = new ByteWriter(`${ControlKind[m.kind]} body`);
  writeRecord(body, BODIES[m.kind], m.body as Record<string, unknown>);
  const encoded = body.finish();
  if (encoded.length > MAX_BODY_BYTES) {
    throw new RangeError(`control message: body is ${encoded.length} bytes, the limit is ${MAX_BODY_BYTES}`);
  }
  return w.u32(encoded.length, "bodyLength").raw(encoded).finish();
}

/** Appends a signature to encoded unsigned bytes. */
export function withSignature(unsigned: Uint8Array, signature: Uint8Array): Uint8Array {
  if (signature.length !== ML_DSA_65_SIGNATURE_BYTES) {
    throw new RangeError(`signature must be ${ML_DSA_65_SIGNATURE_BYTES} bytes, got ${signature.length}`);
  }
  const out = new Uint8Array(unsigned.length + signature.length);
  out.set(unsigned);
  out.set(signature, unsigned.length);
  return out;
}

/**
 * Decodes a control message (without checking its signature: see crypto/control_verifier.ts). Throws WireError
 * for anything that is not exactly one well-formed message within the size limits. Byte fields are views into
 * `message`.
 */
export function decodeControl(message: Uint8Array): AnyControlMessage {
  if (message.length > MAX_CONTROL_MESSAGE_BYTES) {
    throw new WireError(
      "oversize",
      `control message: ${message.length} bytes, the limit is ${MAX_CONTROL_MESSAGE_BYTES}`,
    );
  }
  const r = new ByteReader(message, "control message");
  const version = r.u8("version");
  if (version !== CONTROL_VERSION) {
    throw new WireError(
      "version",
      `control message: version ${version}, this node speaks ${CONTROL_VERSION}`,
    );
  }
  const kind = r.u8("kind") as ControlKind;
  if (!(kind in BODIES)) throw new WireError("type", `control message: unknown kind ${kind}`);
  const flags = r.u8("flags");
  if (flags !== 0) throw new WireError("value", `control message: reserved flags are ${flags}, expected 0`);
  const sender = r.bytes(NODE_ID_BYTES, "sender");
  const recipient = r.bytes(NODE_ID_BYTES, "recipient");
  const certRef = r.bytes(16, "certRef");
  if (kind === ControlKind.Revoke && (!isZero(recipient) || !isZero(certRef))) {
    throw new WireError("value", "control message: a Revoke must go to everyone with an all-zero certRef");
  }
  const timestamp = r.u64("timestamp");
  const id = r.bytes(16, "id");
  const bodyLength = r.u32("bodyLength");
  if (bodyLength > MAX_BODY_BYTES) {
    throw new WireError(
      "oversize",
      `control message: body is ${bodyLength} bytes, the limit is ${MAX_BODY_BYTES}`,
    );
  }
  const br = new ByteReader(r.bytes(bodyLength, "body"), `${ControlKind[kind]} body`);
  const body = readRecord(br, BODIES[kind]);
  br.end();
  const signed = message.subarray(0, r.position);
  const signature = r.bytes(ML_DSA_65_SIGNATURE_BYTES, "signature");
  r.end();
  return { kind, sender, recipient, certRef, timestamp, id, body, signed, signature } as AnyControlMessage;
}

/** True for an all-zero id (BROADCAST, GUARDIAN_SENDER, NO_CERT_REF). */
export function isZero(id: Uint8Array): boolean {
  return id.every((b) => b === 0);
}
