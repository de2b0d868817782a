/**
 * NATS subjects of a realm. Everything a realm says lives under `veilnet.<realm id>`. Nothing is broadcast to
 * every node on a timer: a node hears about another only when it asked (a lookup), when it talks to it (its
 * `peer.<conflux>` subject), or when the Guardian speaks (revocations). The Master routes by interest, so the
 * cost of a message is the number of nodes that asked to hear it, not the size of the realm.
 *
 * | subject | who publishes | who subscribes |
 * |---|---|---|
 * | `broadcast` | the Guardian (revocations) | every node |
 * | `portals` | portals (their announcements) | every node |
 * | `peer.<conflux>` | that node (announce, renew, taint change, leave) | nodes that know it |
 * | `node.<node id>`, `data.<node id>` | any node | that node only |
 * | `who.tag.<tag>` | any node (a lookup) | the node with that tag only |
 * | `who.4.<32 bits>`, `who.6.<128 bits>` | any node (a lookup) | the owner of the address, portals of subnets covering it |
 * | `via.<node id>` | any node (a route query) | nodes with an open tether to that node |
 * | `relays` | any node (a route query) | every node, as one queue group: each copy reaches one node at random |
 * | `report` | any node (what it sees, signed) | the Guardians only |
 *
 * The Guardian's user permissions enforce the right-hand column for `node`, `data` and `who`, and the
 * left-hand one for `broadcast`, `portals` and `peer`.
 * @module
 */

/** The subjects of one realm. */
export interface RealmSubjects {
  /** `veilnet.<realm>`: the realm's whole namespace. */
  prefix: string;
  /** The Guardian's messages to everyone (revocations). */
  broadcast: string;
  /** Portals' announcements, to everyone: a portal's subnets must be routed before any packet asks for them. */
  portals: string;
  /** A node's announcements (by conflux id, hex, which outlives its restarts), to the nodes that know it. */
  peer(conflux: string): string;
  /** Messages to one node, by node id (hex). */
  node(nodeId: string): string;
  /** Sealed data messages to one node while no tether can form (the backup pipeline). */
  data(nodeId: string): string;
  /** Lookups of a tag: only its owner hears them. */
  whoTag(tag: string): string;
  /**
   * Lookups of an address (4 or 16 bytes), or with `prefix` the subscription that hears the lookups of every
   * address inside address/prefix (its owner's or its portal's).
   */
  whoAddress(address: Uint8Array, prefix?: number): string;
  /** Route queries for a destination (node id): heard by the nodes with an open tether to it. */
  via(nodeId: string): string;
  /**
   * Route queries to whoever may relay: every node listens in the queue group RELAY_QUEUE, so each copy published
   * reaches one node at random, whatever the size of the realm.
   */
  relays: string;
  /** Nodes' reports (what each sees) to the Guardians: no node may hear them. */
  report: string;
}

/** The queue group of the `relays` subject. */
export const RELAY_QUEUE = "relays";

/** Subjects of the realm with id `realmId` (hex, no dots). */
export function realmSubjects(realmId: string): RealmSubjects {
  if (!/^[0-9a-f]{32}$/.test(realmId)) {
    throw new RangeError(`realm id must be 32 hex digits, got "${realmId}"`);
  }
  const prefix = `veilnet.${realmId}`;
  return {
    prefix,
    broadcast: `${prefix}.broadcast`,
    portals: `${prefix}.portals`,
    peer: (conflux) => `${prefix}.peer.${checkId(conflux, "conflux id")}`,
    node: (nodeId) => `${prefix}.node.${checkId(nodeId, "node id")}`,
    data: (nodeId) => `${prefix}.data.${checkId(nodeId, "node id")}`,
    whoTag: (tag) => {
      if (!/^[a-z0-9-]{1,63}$/.test(tag)) throw new RangeError(`not a tag: "${tag}"`);
      return `${prefix}.who.tag.${tag}`;
    },
    whoAddress: (address, bits = address.length * 8) => `${prefix}.who.${addressTokens(address, bits)}`,
    via: (nodeId) => `${prefix}.via.${checkId(nodeId, "node id")}`,
    relays: `${prefix}.relays`,
    report: `${prefix}.report`,
  };
}

/**
 * `4.<bit>.<bit>…` (or `6.…`): one token per bit, so that a subnet of any prefix length is one subscription
 * (its first `bits` tokens, then `>`), and NATS itself finds the portals covering an address.
 */
function addressTokens(address: Uint8Array, bits: number): string {
  if (address.length !== 4 && address.length !== 16) {
    throw new RangeError(`an address has 4 or 16 bytes, got ${address.length}`);
  }
  const width = address.length * 8;
  if (!Number.isInteger(bits) || bits < 0 || bits > width) {
    throw new RangeError(`prefix length ${bits} outside 0..${width}`);
  }
  const tokens = [address.length === 4 ? "4" : "6"];
  for (let i = 0; i < bits; i++) tokens.push(String((address[i >> 3]! >> (7 - (i & 7))) & 1));
  if (bits < width) tokens.push(">");
  return tokens.join(".");
}

function checkId(id: string, what: string): string {
  if (!/^[0-9a-f]{32}$/.test(id)) throw new RangeError(`${what} must be 32 hex digits, got "${id}"`);
  return id;
}
