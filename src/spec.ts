/**
 * Protocol constants: everything two nodes must agree on for the overlay to work. Changing one of these is a
 * wire-protocol change (bump the matching version). Local choices that peers never see live in `tuning.ts`.
 *
 * Units are in the names: `_MS` milliseconds, `_BYTES` bytes; counts are plain.
 * @module
 */

// ---- Identity -------------------------------------------------------------------------------------------------

/** A node id is the first 16 bytes of SHA-256 over the node's raw ML-DSA-65 public key. */
/** This build's version (`veilnet-conflux version`, and what a node reports to the Guardians). */
export const VERSION = "0.1.0";

export const NODE_ID_BYTES = 16;
/** Raw ML-DSA-65 public key (FIPS 204). */
export const ML_DSA_65_PUBLIC_KEY_BYTES = 1952;
/** ML-DSA-65 signature (FIPS 204). */
export const ML_DSA_65_SIGNATURE_BYTES = 3309;
/** ML-KEM-768 encapsulation key (FIPS 203). */
export const ML_KEM_768_PUBLIC_KEY_BYTES = 1184;
/** ML-KEM-768 ciphertext (FIPS 203). */
export const ML_KEM_768_CIPHERTEXT_BYTES = 1088;
/** Raw X25519 public key (RFC 7748). */
export const X25519_PUBLIC_KEY_BYTES = 32;

// ---- Streams (one direction of traffic between two nodes) -----------------------------------------------------

/** A stream id names one stream at its destination; derived from the handshake, never chosen by one side. */
export const STREAM_ID_BYTES = 8;
/** AES-256-GCM key. */
export const STREAM_KEY_BYTES = 32;
/** AES-GCM authentication tag appended to every sealed payload. */
export const AEAD_TAG_BYTES = 16;
/** The sender starts a fresh stream (new handshake) once its stream is this old... */
export const REKEY_AFTER_MS = 120_000;
/** ...or has sealed this many messages. */
export const REKEY_AFTER_MESSAGES = 2 ** 32;
/** Neither side seals nor opens on a stream older than this. */
export const REJECT_AFTER_MS = 180_000;
/** Hard ceiling on counters: a stream that somehow never rekeyed stops here (well below 2^53 and 2^64). */
export const REJECT_AFTER_MESSAGES = 2 ** 32 + 2 ** 20;
/** Counters this far behind the highest one seen are still accepted once (RFC 6479 sliding window). */
export const REPLAY_WINDOW = 8128;

// ---- Handshake and control messages ---------------------------------------------------------------------------

/** A signed control message (handshakes included) dated further than this from the receiver's clock is refused. */
export const CONTROL_MAX_SKEW_MS = 30_000;
/** HKDF info label for stream keys; the version suffix changes with the key schedule. */
export const STREAM_KDF_LABEL = "veilnet-conflux stream v1";
/** Domain separation prefix for every control-message signature, so a signature never verifies elsewhere. */
export const CONTROL_SIGNATURE_CONTEXT = "veilnet-conflux control v1";
/** Domain separation prefix for a realm key's signature over a certificate. */
export const CERTIFICATE_SIGNATURE_CONTEXT = "veilnet-conflux certificate v1";
/** A certificate dated this far in the future is still accepted (clock skew between Guardian and nodes). */
export const CERTIFICATE_MAX_SKEW_MS = 60_000;
/**
 * The longest a certificate may live (the Guardian refuses a longer `--cert-ttl`). A revocation is kept this long
 * after it is made: by then no certificate it voids can still be valid.
 */
export const MAX_CERTIFICATE_TTL_MS = 24 * 3_600_000;
/** Domain separation prefix for a node's signature over its login request (proof that it holds the key). */
export const LOGIN_SIGNATURE_CONTEXT = "veilnet-conflux login v1";
/** A login request dated further than this from the Guardian's clock is refused. */
export const LOGIN_MAX_SKEW_MS = 60_000;

// ---- Wire formats ---------------------------------------------------------------------------------------------

/**
 * Version byte of data envelopes. 2: each packet of a batch carries its TUN offload header (a TCP super-packet
 * crosses whole); version 1 carried bare packets.
 */
export const DATA_VERSION = 2;
/**
 * Version byte of control messages. 2: peers are learned on demand (Lookup, Found) and announcements go only to the
 * nodes that know the sender; version 1 announced to everyone every few seconds.
 */
export const CONTROL_VERSION = 2;
/** Most IP packets carried by one data message. */
export const MAX_PACKETS_PER_MESSAGE = 25;
/** Largest IP packet a batch may carry: a TCP super-packet from a TUN with offload (its GSO size is capped lower). */
export const MAX_PACKET_BYTES = 65_535;
/** Each packet in a batch is preceded by its length as a big-endian u16 ... */
export const PACKET_LENGTH_PREFIX_BYTES = 2;
/** ... and its offload header (src/tun/offload.ts: the kernel's virtio_net_hdr, little-endian). */
export const PACKET_OFFLOAD_BYTES = 10;
/** Largest data message on the wire: header + sealed batch. Fits one SCTP message of the default 64 KiB limit. */
export const MAX_DATA_MESSAGE_BYTES = 65_536;
/** Largest control message, signature included (nats-server's default max_payload is 1 MiB; we stay far below). */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;
/** A relayed data message is dropped when its TTL reaches zero. */
export const DEFAULT_DATA_TTL = 8;
