/**
 * NATS subjects of a realm. Everything a realm says lives under `veilnet.<realm id>`; a node's credentials allow
 * publishing anywhere under it but subscribing only to the broadcasts and to its own direct subject.
 * @module
 */

/** The subjects of one realm. */
export interface RealmSubjects {
  /** `veilnet.<realm>`: the realm's whole namespace. */
  prefix: string;
  /** Presence announcements (certificates), to everyone. */
  announce: string;
  /** Other messages to everyone (DNS queries, taint updates). */
  broadcast: string;
  /** Messages to one node, by node id (hex). */
  node(nodeId: string): string;
  /** Sealed data messages to one node while no tether can form (the backup pipeline). */
  data(nodeId: string): string;
}

/** Subjects of the realm with id `realmId` (hex, no dots). */
export function realmSubjects(realmId: string): RealmSubjects {
  if (!/^[0-9a-f]{32}$/.test(realmId)) {
    throw new RangeError(`realm id must be 32 hex digits, got "${realmId}"`);
  }
  const prefix = `veilnet.${realmId}`;
  return {
    prefix,
    announce: `${prefix}.announce`,
    broadcast: `${prefix}.broadcast`,
    node: (nodeId) => `${prefix}.node.${checkNodeId(nodeId)}`,
    data: (nodeId) => `${prefix}.data.${checkNodeId(nodeId)}`,
  };
}

function checkNodeId(nodeId: string): string {
  if (!/^[0-9a-f]{32}$/.test(nodeId)) throw new RangeError(`node id must be 32 hex digits, got "${nodeId}"`);
  return nodeId;
}
