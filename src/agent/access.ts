/**
 * Who may talk to whom (the seeds' rule): two nodes may communicate only if they are in the same realm and
 * one's taint set is a subset of the other's. A node without taints talks to no one. Pure.
 * @module
 */

/** The part of a certificate access control reads. */
export interface AccessFacts {
  realm: Uint8Array;
  taints: readonly string[];
}

function subset(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  for (const t of a) if (!b.has(t)) return false;
  return true;
}

/** True when `a` and `b` may exchange traffic and control messages. Symmetric. */
export function mayCommunicate(a: AccessFacts, b: AccessFacts): boolean {
  if (a.realm.length !== b.realm.length || a.realm.some((byte, i) => byte !== b.realm[i])) return false;
  if (a.taints.length === 0 || b.taints.length === 0) return false;
  const sa = new Set(a.taints);
  const sb = new Set(b.taints);
  return subset(sa, sb) || subset(sb, sa);
}
