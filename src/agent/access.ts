/**
 * Who may talk to whom, by the realm's access model (the seeds' two rules). By taints: two nodes may communicate
 * only if they are in the same realm and one's taint set is a subset of the other's; a node without taints talks
 * to no one. By teams: only if they share an identity (the same owner, or a team both hold), which this node
 * recognises in the peer's identity tags with the secrets of its own identities. And a packet from a peer
 * reaches this node's TUN only if it is from the peer's own address to this node's (or, for portals, their
 * subnets). Pure.
 * @module
 */

import { sharesIdentity } from "../crypto/identity_tags.ts";
import { ACCESS_TEAMS } from "../wire/certificate.ts";

export { type AddressFacts, admitPacket, ownsAddress } from "./addresses.ts";

/** The part of a certificate access control reads. */
export interface AccessFacts {
  realm: Uint8Array;
  taints: readonly string[];
  /** The realm's access model the certificate states (ACCESS_TAINTS when absent). */
  access?: number;
  identities?: readonly Uint8Array[];
  nodeKey?: Uint8Array;
}

function subset(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  for (const t of a) if (!b.has(t)) return false;
  return true;
}

/**
 * True when this node (`a`, holding the identities whose secrets are `secrets`) and peer `b` may exchange traffic
 * and control messages. By taints it is symmetric and needs no secrets; by teams `b` must hold one of `a`'s
 * identities, and both certificates must say the realm's access is by teams (a node still on a certificate of
 * the other model is refused until it logs in again).
 */
export function mayCommunicate(a: AccessFacts, b: AccessFacts, secrets: readonly Uint8Array[] = []): boolean {
  if (a.realm.length !== b.realm.length || a.realm.some((byte, i) => byte !== b.realm[i])) return false;
  if (a.access === ACCESS_TEAMS || b.access === ACCESS_TEAMS) {
    return a.access === b.access && b.nodeKey !== undefined &&
      sharesIdentity(secrets, { nodeKey: b.nodeKey, identities: b.identities ?? [] });
  }
  if (a.taints.length === 0 || b.taints.length === 0) return false;
  const sa = new Set(a.taints);
  const sb = new Set(b.taints);
  return subset(sa, sb) || subset(sb, sa);
}
