/**
 * A node's DNS, put together: the host's resolvers read before anything changes, the server on the overlay
 * address, and the `~veilnet` route on the host. Disposing undoes the route and stops the server.
 * @module
 */

import type { Owner } from "../agent/membership.ts";
import { hostTools, routeZone, upstreamsFrom } from "./host.ts";
import { DnsServer } from "./server.ts";

/** How a node serves DNS. */
export interface NodeDnsOptions {
  /** Name resolution and the overlay test (the agent). */
  agent: { lookup(tag: string): Promise<Owner[]>; inOverlay(address: string): boolean };
  hostname: string;
  port: number;
  /** Forward names outside `.veilnet` to the host's resolvers (else they are refused). */
  forward: boolean;
  /** The overlay link, for systemd-resolved; absent when the node has no TUN device. */
  ifname?: string;
  log: (line: string) => void;
  /** The host's resolver configuration (read before this node changes anything). */
  resolvConf?: string;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/** A node's running DNS. */
export interface NodeDns extends AsyncDisposable {
  /**
   * Responses by outcome, and `upstream_rejected`: datagrams to a forwarding socket not taken as the answer (from
   * another address or port than the upstream asked, or with another id or question).
   */
  readonly counts: Map<string, number>;
}

/** Starts the node's DNS server; throws when it cannot listen. */
export async function serveNodeDns(o: NodeDnsOptions): Promise<NodeDns> {
  let conf = o.resolvConf;
  if (conf === undefined && o.forward) {
    try {
      conf = await Deno.readTextFile("/etc/resolv.conf");
    } catch (error) {
      o.log(
        `DNS: cannot read /etc/resolv.conf (${(error as Error).message}); names outside .veilnet are refused`,
      );
    }
  }
  const upstreams = o.forward && conf !== undefined
    ? upstreamsFrom(conf, (a) => a === o.hostname || o.agent.inOverlay(a))
    : [];
  const server = await DnsServer.listen({
    hostname: o.hostname,
    port: o.port,
    lookup: (tag) => o.agent.lookup(tag),
    upstreams,
    allowed: (address) => LOOPBACK.test(address) || o.agent.inOverlay(address.replace(/^::ffff:/, "")),
    log: o.log,
  });
  const where = o.hostname.includes(":") ? `[${o.hostname}]:${server.port}` : `${o.hostname}:${server.port}`;
  o.log(
    `DNS on ${where}: *.veilnet` +
      (upstreams.length > 0 ? `, other names via ${upstreams.map((u) => u.hostname).join(", ")}` : " only"),
  );
  const undo = o.ifname
    ? await routeZone(o.ifname, { hostname: o.hostname, port: server.port }, hostTools(o.log))
    : () => Promise.resolve();
  return {
    get counts() {
      return new Map<string, number>([...server.responder.counts, [
        "upstream_rejected",
        server.rejectedAnswers,
      ]]);
    },
    async [Symbol.asyncDispose]() {
      await undo();
      await server.close();
    },
  };
}
