/**
 * Geo-location control (issue 22): where a node's traffic may travel. Each certificate carries the region the
 * administrator placed the node in (`region`, empty when unplaced) and the regions its traffic may cross on its
 * way through a third party, a relay or the Master (`regions`, empty for anywhere). Both are granted and signed;
 * nothing here takes a node's word.
 *
 * Traffic between two nodes is both nodes' traffic: a third party may carry it only if it is in a region both
 * allow. A third party with no region is allowed only where nothing is restricted. The direct path has no third
 * party and is always allowed.
 * @module
 */

/** What this module reads of a certificate. */
export interface Placed {
  region: string;
  regions: string[];
}

/** Whether a third party in `region` (empty: unplaced) may carry traffic between `a` and `b`. */
export function mayCross(region: string, a: Placed, b: Placed): boolean {
  return allows(a, region) && allows(b, region);
}

function allows(end: Placed, region: string): boolean {
  return end.regions.length === 0 || (region !== "" && end.regions.includes(region));
}

/** The regions allowed for traffic between `a` and `b`: undefined when anywhere, else (maybe empty) a list. */
export function allowedBetween(a: Placed, b: Placed): string[] | undefined {
  if (a.regions.length === 0 && b.regions.length === 0) return undefined;
  if (a.regions.length === 0) return [...b.regions];
  if (b.regions.length === 0) return [...a.regions];
  return a.regions.filter((r) => b.regions.includes(r));
}

/**
 * Why traffic between `self` and `peer` has no path now, for `peers`: the direct tether is not open, and no third
 * party it may cross is available.
 */
export function whyNoPath(self: Placed, peer: Placed, masterRegion: string): string {
  const allowed = allowedBetween(self, peer) ?? [];
  const where = allowed.length === 0 ? "no region (the two nodes' lists do not meet)" : allowed.join(", ");
  const master = masterRegion === "" ? "has no region" : `is in ${masterRegion}`;
  return `waiting for the direct tether: relays and the backup pipeline may only be in ${where}, ` +
    `and no relay there offered; the Master ${master}`;
}
