/**
 * Identity tags (issue 21): how a node shows which identities it holds (its owner, its teams) without naming
 * them. Each identity has a 32-byte secret, which the Guardian gives only to the nodes that hold it. A node's
 * certificate carries, per identity, HMAC-SHA-256(secret, context || node key): bound to that node's key, so it
 * says nothing to whoever lacks the secret and cannot be carried over to another key. A peer holding the same
 * identity makes the same tag over the node's key and finds it in the certificate. Pure (node:crypto's HMAC).
 * @module
 */

import { createHmac } from "node:crypto";
import { bytesEqual } from "./identity.ts";

const CONTEXT = new TextEncoder().encode("veilnet-conflux identity tag v1");

/** The tag of the identity whose secret is `secret`, for the node whose ML-DSA public key is `nodeKey`. */
export function identityTag(secret: Uint8Array, nodeKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", secret).update(CONTEXT).update(nodeKey).digest());
}

/** Whether a node (its key and tags) holds one of the identities whose secrets are `secrets`. */
export function sharesIdentity(
  secrets: readonly Uint8Array[],
  node: { nodeKey: Uint8Array; identities: readonly Uint8Array[] },
): boolean {
  return secrets.some((s) => {
    const tag = identityTag(s, node.nodeKey);
    return node.identities.some((t) => bytesEqual(t, tag));
  });
}
