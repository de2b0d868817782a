/**
 * Routes to portals' subnets: the offers of permitted peers, screened against this host's underlay (a subnet
 * covering its own addresses, gateways, the Guardian or the Master is refused: portal/underlay.ts), then one
 * portal chosen per subnet (SubnetTable). Refusals are logged once per (portal, subnet) and counted.
 * @module
 */

import { formatCidr, type Offer, SubnetTable } from "../portal/subnets.ts";
import {
  describeRefusal,
  formatUnderlay,
  type RefusedSubnet,
  screenOffers,
  type UnderlayAddress,
} from "../portal/underlay.ts";

/** Where the underlay is read from, and what to tell when the routed subnets change. */
export interface PortalRoutesOptions {
  /** Reads what no portal subnet may cover; without it (no TUN device, nothing routed) nothing is protected. */
  read?: () => Promise<UnderlayAddress[]>;
  log: (line: string) => void;
  /** Called with the subnets routed to portals (most specific first) whenever they change. */
  onSubnets?: (subnets: string[]) => void;
}

/** The portal subnets this node routes, and those it refused. */
export class PortalRoutes {
  readonly #o: PortalRoutesOptions;
  #table = new SubnetTable([]);
  #offers: Offer[] = [];
  /** What portal subnets must not cover; the subnets refused now; the (portal, subnet) pairs logged and counted. */
  #underlay: UnderlayAddress[] = [];
  #refused: RefusedSubnet[] = [];
  readonly #seen = new Set<string>();
  /** Refusals by reason (`portal:covers-*`), as `dropped` shows them. */
  readonly counts = new Map<string, number>();
  /** The offers at the last update ("" when none), and the underlay read under way. */
  #offered = "";
  #reading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(options: PortalRoutesOptions) {
    this.#o = options;
  }

  /** The routing table of portal subnets. */
  get table(): SubnetTable {
    return this.#table;
  }

  /** The subnets refused now, with why. */
  get refused(): RefusedSubnet[] {
    return this.#refused.map((r) => ({ ...r }));
  }

  /** Whether any portal offers subnets (then the underlay is read again now and then). */
  get offering(): boolean {
    return this.#offered !== "";
  }

  /** Takes the permitted peers' offers: screens them, rebuilds the table, and reads the underlay for new ones. */
  update(offers: Offer[]): void {
    this.#offers = offers;
    this.#screen();
    const offered = offers.map((o) => `${o.conflux}:${o.subnets.map(formatCidr)}`).join(" ");
    if (offered !== this.#offered) {
      this.#offered = offered;
      if (offered) void this.refresh();
    }
  }

  #screen(): void {
    const { allowed, refused } = screenOffers(this.#offers, this.#underlay);
    for (const r of refused) {
      const key = `${r.conflux} ${r.subnet}`;
      if (this.#seen.has(key)) continue;
      this.#seen.add(key);
      this.#o.log(describeRefusal(r));
      const reason = `portal:covers-${r.kind}`;
      this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
    }
    this.#refused = refused;
    const before = this.#table.subnets.join(",");
    this.#table = new SubnetTable(allowed);
    if (this.#table.subnets.join(",") !== before) this.#o.onSubnets?.(this.#table.subnets);
  }

  /**
   * Reads the underlay again (one read at a time; a request meanwhile reads once more after it) and screens the
   * offers again if it changed. A failed read keeps what was known.
   */
  refresh(): Promise<void> {
    const read = this.#o.read;
    if (!read) return Promise.resolve();
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    return this.#reading = (async () => {
      do {
        this.#again = false;
        try {
          const list = await read();
          if (formatUnderlay(list) !== formatUnderlay(this.#underlay) && !this.#closed) {
            this.#underlay = list;
            this.#screen();
          }
        } catch (error) {
          const why = (error as Error).message;
          this.#o.log(`portal: could not read what portal subnets must not cover (${why}); kept the last`);
        }
      } while (this.#again && !this.#closed);
      this.#reading = undefined;
    })();
  }

  /** Stops reading the underlay. */
  close(): void {
    this.#closed = true;
  }
}
