/**
 * A node's identity: an ML-DSA-65 key pair made in memory at start (never stored), and the node id derived from
 * its public key. Anyone holding the public key can recompute the id, so an id cannot be claimed with
 * someone else's key.
 * @module
 */

import { NODE_ID_BYTES } from "../spec.ts";
import { pq, type PqBackend, type SigningKey } from "./pq.ts";
import { bytesEqual, fromHex, toHex } from "../wire/bytes.ts";

export { bytesEqual, fromHex, toHex };

/** SHA-256 of `data`. */
export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
}

/** The node id for a raw ML-DSA-65 public key: the first 16 bytes of its SHA-256. */
export async function nodeIdOf(publicKey: Uint8Array): Promise<Uint8Array> {
  return (await sha256(publicKey)).subarray(0, NODE_ID_BYTES);
}

/** `label || message`: what a key signs, so a signature made for one purpose never verifies for another. */
export function domainSeparated(label: Uint8Array, message: Uint8Array): Uint8Array {
  const input = new Uint8Array(label.length + message.length);
  input.set(label);
  input.set(message, label.length);
  return input;
}

/** A node's signing identity. */
export class Identity {
  private constructor(
    readonly nodeId: Uint8Array,
    readonly publicKey: Uint8Array,
    readonly key: SigningKey,
  ) {}

  /** Makes a fresh identity (or a deterministic one from a 32-byte seed, for tests). */
  static async generate(options: { seed?: Uint8Array; backend?: PqBackend } = {}): Promise<Identity> {
    const backend = options.backend ?? await pq();
    const key = await backend.signingKey(options.seed);
    return new Identity(await nodeIdOf(key.publicKey), key.publicKey, key);
  }

  /** The node id as hex. */
  get id(): string {
    return toHex(this.nodeId);
  }

  sign(message: Uint8Array): Promise<Uint8Array> {
    return this.key.sign(message);
  }
}

/** A conflux id (16 bytes) as its UUID text, the form the Guardian stores and `status` prints. */
export function formatUuid(bytes: Uint8Array): string {
  const h = toHex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
