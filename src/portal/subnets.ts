/**
 * Portal subnets: the networks a portal node offers its peers, as its certificate lists them, and the table a
 * node routes by. Pure.
 *
 * Several portals may offer overlapping subnets. The most specific subnet wins (as in any routing table); for the
 * same subnet offered twice, the portal with the lowest conflux id wins, so every node picks the same one and the
 * choice survives restarts. The others are kept as `shadowed` (status shows them) and take over when the winner
 * leaves.
 * @module
 */

import { type Cidr, formatAddress } from "../tun/ip.ts";

/** One subnet from a certificate (address bytes, then the prefix byte); undefined if it is not a valid one. */
export function subnetFromBytes(bytes: Uint8Array): Cidr | undefined {
  const size = bytes.length - 1;
  if (size !== 4 && size !== 16) return undefined;
  const prefix = bytes[size]!;
  if (prefix > size * 8) return undefined;
  return { version: size === 4 ? 4 : 6, address: masked(bytes.slice(0, size), prefix), prefix };
}

const parsed = new WeakMap<readonly Uint8Array[], Cidr[]>();

/**
 * The valid subnets of a certificate's list, parsed once per list (a verified certificate never changes, and the
 * data plane asks for every packet from a portal).
 */
export function subnetsOf(list: readonly Uint8Array[]): Cidr[] {
  let subnets = parsed.get(list);
  if (!subnets) parsed.set(list, subnets = list.map(subnetFromBytes).filter((c) => c !== undefined));
  return subnets;
}

/** A subnet as certificate bytes. */
export function subnetToBytes(c: Cidr): Uint8Array {
  return Uint8Array.of(...masked(c.address, c.prefix), c.prefix);
}

/** The address with the bits after `prefix` cleared (a copy). */
export function masked(address: Uint8Array, prefix: number): Uint8Array {
  const out = address.slice();
  for (let bit = prefix; bit < out.length * 8; bit++) out[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return out;
}

/** True when `address` (4 or 16 bytes) lies in `c`. */
export function contains(c: Cidr, address: Uint8Array): boolean {
  if (address.length !== c.address.length) return false;
  const whole = c.prefix >> 3;
  for (let i = 0; i < whole; i++) if (address[i] !== c.address[i]) return false;
  const rest = c.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (address[whole]! & mask) === (c.address[whole]! & mask);
}

/** True when the two subnets share an address. */
export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.prefix <= b.prefix ? contains(a, b.address) : contains(b, a.address);
}

/** "10.50.0.0/24" (host bits cleared). */
export function formatCidr(c: Cidr): string {
  return `${formatAddress(masked(c.address, c.prefix))}/${c.prefix}`;
}

/** A portal's offer: its node id, tag, conflux id and subnets. */
export interface Offer {
  node: string;
  tag: string;
  conflux: string;
  subnets: Cidr[];
}

/** One routed subnet, as status shows it. */
export interface SubnetRoute {
  subnet: string;
  /** The portal chosen: its node id and tag. */
  node: string;
  tag: string;
  /** Tags of other portals offering the same subnet, not used while this one is there. */
  shadowed: string[];
}

/** Subnets to portals: the longest prefix wins; the same subnet twice goes to the lowest conflux id. */
export class SubnetTable {
  /** Most specific first. */
  readonly #routes: (SubnetRoute & { cidr: Cidr })[];

  constructor(offers: Offer[]) {
    const bySubnet = new Map<string, { cidr: Cidr; offers: Offer[] }>();
    for (const offer of offers) {
      for (const cidr of offer.subnets) {
        const key = formatCidr(cidr);
        const entry = bySubnet.get(key) ??
          { cidr: { ...cidr, address: masked(cidr.address, cidr.prefix) }, offers: [] };
        if (!entry.offers.includes(offer)) entry.offers.push(offer);
        bySubnet.set(key, entry);
      }
    }
    this.#routes = [...bySubnet].map(([subnet, { cidr, offers }]) => {
      const [chosen, ...others] = offers.sort((a, b) =>
        a.conflux < b.conflux ? -1 : a.conflux > b.conflux ? 1 : 0
      );
      return { subnet, cidr, node: chosen!.node, tag: chosen!.tag, shadowed: others.map((o) => o.tag) };
    }).sort((a, b) => b.cidr.prefix - a.cidr.prefix || (a.subnet < b.subnet ? -1 : 1));
  }

  /** The portal (node id) for `address`, if a subnet holds it. */
  lookup(address: Uint8Array): string | undefined {
    for (const r of this.#routes) if (contains(r.cidr, address)) return r.node;
    return undefined;
  }

  /** Every routed subnet, most specific first. */
  routes(): SubnetRoute[] {
    return this.#routes.map(({ subnet, node, tag, shadowed }) => ({
      subnet,
      node,
      tag,
      shadowed: [...shadowed],
    }));
  }

  /** The subnets, for the kernel's routing table. */
  get subnets(): string[] {
    return this.#routes.map((r) => r.subnet);
  }
}
