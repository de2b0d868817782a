/**
 * Proof that a login holds the key it asks the Guardian to certify: the node signs its exact request body with
 * that key, bound to its conflux id (so a signed body is worth nothing with another node's token). The body
 * carries a timestamp and a random nonce; the Guardian refuses stale or repeated ones, so a recorded login
 * cannot be replayed.
 *
 * Signed input: `LOGIN_SIGNATURE_CONTEXT || conflux id (UTF-8) || 0x00 || body bytes`.
 * @module
 */

import { LOGIN_SIGNATURE_CONTEXT } from "../spec.ts";
import { domainSeparated, type Identity } from "./identity.ts";
import { pq, type PqBackend } from "./pq.ts";

const encoder = new TextEncoder();

function signingInput(confluxId: string, body: Uint8Array): Uint8Array {
  const id = encoder.encode(confluxId);
  const message = new Uint8Array(id.length + 1 + body.length);
  message.set(id);
  message.set(body, id.length + 1);
  return domainSeparated(encoder.encode(LOGIN_SIGNATURE_CONTEXT), message);
}

/** The signature a node sends with its login body. */
export function signLogin(identity: Identity, confluxId: string, body: Uint8Array): Promise<Uint8Array> {
  return identity.sign(signingInput(confluxId, body));
}

/** Whether `signature` is `publicKey`'s signature over this login body of this conflux. */
export async function verifyLogin(
  publicKey: Uint8Array,
  o: { confluxId: string; body: Uint8Array; signature: Uint8Array; backend?: PqBackend },
): Promise<boolean> {
  const backend = o.backend ?? await pq();
  return backend.verify(publicKey, signingInput(o.confluxId, o.body), o.signature);
}
