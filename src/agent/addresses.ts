/**
 * Whether a packet from a peer may reach this node's TUN: from the peer's own address to this node's (or, for
 * portals, their subnets). Pure, and light enough for the data-plane worker (src/lane/worker.ts) to load.
 * @module
 */

import { bytesEqual } from "../wire/bytes.ts";
import { contains, subnetsOf } from "../portal/subnets.ts";
import { destinationOf, sourceOf } from "../tun/ip.ts";

/** The part of a certificate the packet check reads. */
export interface AddressFacts {
  ipv4: Uint8Array;
  ipv6: Uint8Array;
  portal: number;
  subnets: Uint8Array[];
}

/** Whether `address` is one of the node's overlay addresses or, for a portal, in one of its subnets. */
export function ownsAddress(node: AddressFacts, address: Uint8Array): boolean {
  if (bytesEqual(address, address.length === 4 ? node.ipv4 : node.ipv6)) return true;
  if (node.portal !== 1) return false;
  return subnetsOf(node.subnets).some((c) => contains(c, address));
}

/**
 * Whether a packet opened from peer `from`'s stream may be written to this node's (`self`) TUN: its source must
 * be the peer's (a portal's replies come from its subnets), its destination this node's (or, on a portal, its
 * subnets'). So nobody can spoof another node, and a portal is never an exit to anywhere it does not offer.
 */
export function admitPacket(
  from: AddressFacts,
  self: AddressFacts,
  packet: Uint8Array,
): "spoofed-source" | "foreign-destination" | undefined {
  const source = sourceOf(packet);
  const destination = destinationOf(packet);
  if (!source || !destination || !ownsAddress(from, source)) return "spoofed-source";
  return ownsAddress(self, destination) ? undefined : "foreign-destination";
}
