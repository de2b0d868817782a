/**
 * The stream handshake: two signed control messages that give a sender and a receiver the same fresh AES-256-GCM
 * key and stream id for one direction of traffic (sender → receiver).
 *
 * ```
 * initiator I (will send)                              responder R (will receive)
 *   ek, dk  = ML-KEM-768 key pair (fresh)
 *   xi      = X25519 key pair (fresh)
 *   request = sign_I(StreamRequest{ek, xi.pub}, to R) ───▶ verify (ControlVerifier: sig, time, replay, id = H(key))
 *                                                          ct, ss_kem = Encaps(ek);  xr = X25519 pair (fresh)
 *                                                          ss_dh = X25519(xr, xi.pub)
 *                                      ◀─── response = sign_R(StreamResponse{H(request), ct, xr.pub}, to I)
 *   verify; match H(request) to a pending request
 *   ss_kem = Decaps(dk, ct); ss_dh = X25519(xi, xr.pub)
 *
 * both: key || id = HKDF-SHA256(ikm = ss_kem || ss_dh, salt = H(request),
 *                               info = label || I || R || ct || xr.pub, 40 bytes)
 * ```
 * Both messages are signed over everything they carry, including both node ids (sender and recipient fields), so
 * neither a relay nor the Master can substitute a key or redirect a handshake; the request hash binds the response
 * to one request, so an old response cannot complete a new handshake, and an old request is refused by the
 * verifier's timestamp and replay checks. The hybrid secret stays safe while either ML-KEM-768 or X25519 holds.
 *
 * No I/O: messages in, messages and secrets out; the caller moves bytes and supplies the clock.
 * @module
 */

import { concat } from "../wire/bytes.ts";
import { Refused } from "../errors.ts";
import { STREAM_ID_BYTES, STREAM_KDF_LABEL, STREAM_KEY_BYTES } from "../spec.ts";
import { HANDSHAKE_TIMEOUT_MS, MAX_PENDING_HANDSHAKES } from "../tuning.ts";
import { ControlKind, type ControlMessage } from "../wire/control.ts";
import { signControl } from "./control_signing.ts";
import { bytesEqual, type Identity, sha256, toHex } from "./identity.ts";
import { type KemKeyPair, pq, type PqBackend } from "./pq.ts";
import type { StreamSecrets } from "./stream.ts";

/** Why a handshake step was refused: a stable label for metrics. */
export type HandshakeErrorReason = "misdirected" | "unexpected" | "wrong-peer" | "bad-key" | "busy";

/** A handshake message refused; the caller drops it and counts `reason`. */
export class HandshakeError extends Refused<HandshakeErrorReason> {
  override name = "HandshakeError";
}

interface Pending {
  peer: Uint8Array;
  kem: KemKeyPair;
  x25519: CryptoKeyPair;
  startedAt: number;
}

const X25519 = { name: "X25519" };
const label = new TextEncoder().encode(STREAM_KDF_LABEL);

async function x25519Pair(): Promise<{ pair: CryptoKeyPair; publicKey: Uint8Array }> {
  const pair = await crypto.subtle.generateKey(X25519, false, ["deriveBits"]) as CryptoKeyPair;
  return { pair, publicKey: new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)) };
}

async function x25519(privateKey: CryptoKey, peerPublic: Uint8Array): Promise<Uint8Array> {
  try {
    const peer = await crypto.subtle.importKey("raw", peerPublic as BufferSource, X25519, false, []);
    return new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: peer }, privateKey, 256));
  } catch (cause) {
    // Includes low-order points, for which WebCrypto refuses an all-zero secret.
    throw new HandshakeError("bad-key", "peer's X25519 key is unusable", { cause });
  }
}

/** The key schedule shared by both sides. */
async function deriveStream(input: {
  kemSecret: Uint8Array;
  dhSecret: Uint8Array;
  requestHash: Uint8Array;
  initiator: Uint8Array;
  responder: Uint8Array;
  kemCiphertext: Uint8Array;
  responderX25519: Uint8Array;
}): Promise<{ id: Uint8Array; key: CryptoKey; raw: Uint8Array }> {
  const ikm = await crypto.subtle.importKey(
    "raw",
    concat(input.kemSecret, input.dhSecret) as BufferSource,
    "HKDF",
    false,
    ["deriveBits"],
  );
  const info = concat(label, input.initiator, input.responder, input.kemCiphertext, input.responderX25519);
  const okm = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: input.requestHash as BufferSource, info: info as BufferSource },
      ikm,
      (STREAM_KEY_BYTES + STREAM_ID_BYTES) * 8,
    ),
  );
  const key = await crypto.subtle.importKey("raw", okm.subarray(0, STREAM_KEY_BYTES), "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
  return { id: okm.slice(STREAM_KEY_BYTES), key, raw: okm.slice(0, STREAM_KEY_BYTES) };
}

function fullMessage(m: ControlMessage): Uint8Array {
  return concat(m.signed, m.signature);
}

/** Runs stream handshakes for one node, as initiator and as responder. */
export class Handshaker {
  readonly #identity: Identity;
  readonly #certRef: () => Uint8Array;
  readonly #clock: () => number;
  readonly #backend: PqBackend | undefined;
  /** Requests sent and not yet answered, by hex SHA-256 of the signed request. */
  readonly #pending = new Map<string, Pending>();

  constructor(options: {
    identity: Identity;
    /** The reference of this node's current certificate (it changes on renewal). */
    certRef: () => Uint8Array;
    /** Milliseconds since the Unix epoch. */
    clock: () => number;
    backend?: PqBackend;
  }) {
    this.#identity = options.identity;
    this.#certRef = options.certRef;
    this.#clock = options.clock;
    this.#backend = options.backend;
  }

  /** Requests waiting for a response. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Initiator, step 1: the signed request to send to `peer`. */
  async request(peer: Uint8Array): Promise<Uint8Array> {
    this.expire();
    if (this.#pending.size >= MAX_PENDING_HANDSHAKES) {
      throw new HandshakeError("busy", `${MAX_PENDING_HANDSHAKES} handshakes already pending`);
    }
    const backend = this.#backend ?? await pq();
    const kem = await backend.kemKeyPair();
    const x = await x25519Pair();
    const now = this.#clock();
    const message = await signControl(this.#identity, {
      kind: ControlKind.StreamRequest,
      recipient: peer,
      certRef: this.#certRef(),
      body: { kemPublicKey: kem.publicKey, x25519PublicKey: x.publicKey },
    }, now);
    this.#pending.set(toHex(await sha256(message)), {
      peer: peer.slice(),
      kem,
      x25519: x.pair,
      startedAt: now,
    });
    return message;
  }

  /**
   * Responder: answers a verified request addressed to this node. Returns the signed response to send back and
   * the receiving stream's secrets.
   */
  async respond(
    request: ControlMessage<ControlKind.StreamRequest>,
  ): Promise<{ response: Uint8Array; secrets: StreamSecrets }> {
    if (!bytesEqual(request.recipient, this.#identity.nodeId)) {
      throw new HandshakeError("misdirected", "stream request not addressed to this node");
    }
    const backend = this.#backend ?? await pq();
    let encapsulated;
    try {
      encapsulated = await backend.encapsulate(request.body.kemPublicKey);
    } catch (cause) {
      throw new HandshakeError("bad-key", "peer's ML-KEM key is unusable", { cause });
    }
    const x = await x25519Pair();
    const dhSecret = await x25519(x.pair.privateKey, request.body.x25519PublicKey);
    const requestHash = await sha256(fullMessage(request));
    const stream = await deriveStream({
      kemSecret: encapsulated.sharedSecret,
      dhSecret,
      requestHash,
      initiator: request.sender,
      responder: this.#identity.nodeId,
      kemCiphertext: encapsulated.ciphertext,
      responderX25519: x.publicKey,
    });
    const now = this.#clock();
    const response = await signControl(this.#identity, {
      kind: ControlKind.StreamResponse,
      recipient: request.sender,
      certRef: this.#certRef(),
      body: { requestHash, kemCiphertext: encapsulated.ciphertext, x25519PublicKey: x.publicKey },
    }, now);
    return { response, secrets: { ...stream, peer: request.sender.slice(), createdAt: now } };
  }

  /** Initiator, step 2: a verified response completes a pending request; returns the sending stream's secrets. */
  async complete(response: ControlMessage<ControlKind.StreamResponse>): Promise<StreamSecrets> {
    if (!bytesEqual(response.recipient, this.#identity.nodeId)) {
      throw new HandshakeError("misdirected", "stream response not addressed to this node");
    }
    this.expire();
    const key = toHex(response.body.requestHash);
    const pending = this.#pending.get(key);
    if (!pending) {
      throw new HandshakeError("unexpected", "stream response to no pending request (late or replayed)");
    }
    if (!bytesEqual(pending.peer, response.sender)) {
      throw new HandshakeError(
        "wrong-peer",
        `stream response from ${toHex(response.sender)}, not the node asked`,
      );
    }
    // Single use: whatever happens next, this request cannot be completed twice.
    this.#pending.delete(key);
    let kemSecret;
    try {
      kemSecret = await pending.kem.decapsulate(response.body.kemCiphertext);
    } catch (cause) {
      throw new HandshakeError("bad-key", "ML-KEM ciphertext is unusable", { cause });
    }
    const dhSecret = await x25519(pending.x25519.privateKey, response.body.x25519PublicKey);
    const stream = await deriveStream({
      kemSecret,
      dhSecret,
      requestHash: response.body.requestHash,
      initiator: this.#identity.nodeId,
      responder: pending.peer,
      kemCiphertext: response.body.kemCiphertext,
      responderX25519: response.body.x25519PublicKey,
    });
    return { ...stream, peer: pending.peer, createdAt: this.#clock() };
  }

  /** Forgets requests older than HANDSHAKE_TIMEOUT_MS; returns the peers they were for. */
  expire(): Uint8Array[] {
    const now = this.#clock();
    const gone: Uint8Array[] = [];
    for (const [key, p] of this.#pending) {
      if (now - p.startedAt >= HANDSHAKE_TIMEOUT_MS) {
        this.#pending.delete(key);
        gone.push(p.peer);
      }
    }
    return gone;
  }
}
