/**
 * The underlay a node keeps out of the overlay: the addresses its own traffic depends on (its own addresses, its
 * gateways, the Guardian's, the Master's), and which portal subnets it may route without capturing them. Pure:
 * host.ts reads the host.
 *
 * A portal subnet that covers one of these addresses would pull this node's tethers, its session with the
 * Guardian or its control channel into the TUN device, towards a portal that may be hostile. Such a subnet is
 * refused whoever signed it; the portal's other subnets still work.
 * @module
 */

import { type Cidr, formatAddress, parseAddress } from "../tun/ip.ts";
import { contains, formatCidr, type Offer } from "./subnets.ts";

/** How often a node routing portal subnets reads its underlay again (its addresses and gateways may change). */
export const UNDERLAY_READ_MS = 30_000;

/** What an address kept out of the overlay is. */
export type UnderlayKind = "own-address" | "gateway" | "guardian" | "master";

/** An address no portal subnet may cover. */
export interface UnderlayAddress {
  kind: UnderlayKind;
  /** 4 or 16 bytes. */
  address: Uint8Array;
}

/** Each kind as log lines name it. */
export const UNDERLAY_NAMES: Record<UnderlayKind, string> = {
  "own-address": "this node's own address",
  gateway: "this node's gateway",
  guardian: "the Guardian's address",
  master: "the Master's address",
};

/** A portal subnet refused, and the first underlay address it covers. */
export interface RefusedSubnet {
  subnet: string;
  /** The portal: node id, tag and conflux id. */
  node: string;
  tag: string;
  conflux: string;
  kind: UnderlayKind;
  covers: string;
}

/**
 * The offers cut down to the subnets that cover no underlay address, and the subnets refused. An offer left with
 * no subnet is dropped. When a subnet covers several addresses, the first in `underlay` is named.
 */
export function screenOffers(
  offers: Offer[],
  underlay: UnderlayAddress[],
): { allowed: Offer[]; refused: RefusedSubnet[] } {
  const allowed: Offer[] = [];
  const refused: RefusedSubnet[] = [];
  for (const offer of offers) {
    const kept: Cidr[] = [];
    for (const cidr of offer.subnets) {
      const hit = underlay.find((u) => contains(cidr, u.address));
      if (!hit) kept.push(cidr);
      else {
        refused.push({
          subnet: formatCidr(cidr),
          node: offer.node,
          tag: offer.tag,
          conflux: offer.conflux,
          kind: hit.kind,
          covers: formatAddress(hit.address),
        });
      }
    }
    if (kept.length === offer.subnets.length) allowed.push(offer);
    else if (kept.length > 0) allowed.push({ ...offer, subnets: kept });
  }
  return { allowed, refused };
}

/** The log line for a refused subnet: what, from whom, and why. */
export function describeRefusal(r: RefusedSubnet): string {
  return `portal ${r.tag} offers ${r.subnet}, which covers ${UNDERLAY_NAMES[r.kind]} ${r.covers}: refused`;
}

/** The list as one line ("guardian 10.0.0.1, gateway 192.168.1.1"), to log it or see whether it changed. */
export function formatUnderlay(list: UnderlayAddress[]): string {
  return list.map((u) => `${u.kind} ${formatAddress(u.address)}`).join(", ");
}

function isLoopback(a: Uint8Array): boolean {
  return a.length === 4 ? a[0] === 127 : a.every((b, i) => b === (i === 15 ? 1 : 0));
}

function parseJsonArray(json: string, what: string): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(json || "[]");
  } catch {
    throw new Error(`could not read ${what}: \`ip -j\` did not print JSON`);
  }
  if (!Array.isArray(value)) throw new Error(`could not read ${what}: expected a JSON array`);
  return value;
}

/**
 * This host's own addresses from `ip -j addr`: every interface's but the TUN device's (`ifname`, the overlay) and
 * loopback's. Throws an Error when the text is not that JSON.
 */
export function addressesFromLinks(json: string, ifname: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const link of parseJsonArray(json, "this host's addresses")) {
    if (typeof link !== "object" || link === null) continue;
    const { ifname: name, flags, addr_info } = link as Record<string, unknown>;
    if (
      name === ifname || (Array.isArray(flags) && flags.includes("LOOPBACK")) || !Array.isArray(addr_info)
    ) {
      continue;
    }
    for (const info of addr_info) {
      const local = (info as Record<string, unknown> | null)?.local;
      const address = typeof local === "string" ? parseAddress(local) : undefined;
      if (address && !isLoopback(address)) out.push(address);
    }
  }
  return out;
}

/**
 * The next hops of a routing table from `ip -j route`: each route's `gateway`, `via` (another family's next hop)
 * and those of its multipath `nexthops`. Throws an Error when the text is not that JSON.
 */
export function gatewaysFromRoutes(json: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const add = (hop: Record<string, unknown>) => {
    const via = hop.via as Record<string, unknown> | undefined;
    for (const text of [hop.gateway, via?.host]) {
      const address = typeof text === "string" ? parseAddress(text) : undefined;
      if (address) out.push(address);
    }
  };
  for (const route of parseJsonArray(json, "the routing table")) {
    if (typeof route !== "object" || route === null) continue;
    add(route as Record<string, unknown>);
    const { nexthops } = route as Record<string, unknown>;
    if (Array.isArray(nexthops)) {
      for (const hop of nexthops) {
        if (typeof hop === "object" && hop !== null) add(hop as Record<string, unknown>);
      }
    }
  }
  return out;
}

/** The list without repeats (same kind and address), in order. */
export function uniqueUnderlay(list: UnderlayAddress[]): UnderlayAddress[] {
  const seen = new Set<string>();
  return list.filter((u) => {
    const key = `${u.kind} ${u.address.join(".")}`;
    return !seen.has(key) && !!seen.add(key);
  });
}

/** The host part of a Guardian or NATS URL ("nats://m.example:4222" → "m.example"; a bare "host:port" too). */
export function hostOfUrl(url: string): string | undefined {
  try {
    const host = new URL(url.includes("://") ? url : `nats://${url}`).hostname;
    return host.startsWith("[") ? host.slice(1, -1) : host || undefined;
  } catch {
    return undefined;
  }
}
