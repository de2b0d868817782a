/**
 * One node, started and stopped as a unit: the agent (session, control channel, peers), its TUN device and data
 * plane, its DNS server, portal mode and the routes to other portals' subnets. `veilnet-conflux run` and programs
 * embedding a node (mod.ts) both start here.
 * @module
 */

import { Agent } from "./agent/agent.ts";
import type { Owner } from "./agent/membership.ts";
import type { NodeStatus, PeerStatus } from "./agent/status.ts";
import { connectNats } from "./control/nats.ts";
import { trustGuardianCa } from "./agent/guardian_client.ts";
import { serveNodeDns } from "./dns/serve.ts";
import { KernelRoutes, openPortal, portalHost, UnderlayReader } from "./portal/host.ts";
import { formatCidr, subnetsOf } from "./portal/subnets.ts";
import { formatAddress, parseCidr, parseIPv4 } from "./tun/ip.ts";
import { checkInterfaceName, LinuxTun } from "./tun/linux_tun.ts";
import { Lane } from "./lane/lane.ts";
import { hostAesGcm } from "../ffi/aes_gcm.ts";
import { isTag } from "./wire/certificate.ts";

/** How to start a node. Only `token` and `guardian` are required. */
export interface ConfluxOptions {
  /** The node's conflux token (from `register`, or issued for integration mode). */
  token: string;
  /** The Guardian's URL, e.g. "https://guardian.example:8080". */
  guardian: string;
  /** The realm's public key (base64) pinned at registration: a login answer with another is refused. */
  realmKey?: string;
  /**
   * The Guardian's realm CA (PEM) pinned at registration: its API and Master certificates are verified by it
   * (besides the public CAs). Undefined for a Guardian with a publicly trusted certificate.
   */
  guardianCa?: string;
  /** Rename the node: it answers to `<tag>.veilnet` from now on. */
  tag?: string;
  /** The overlay IPv4 address this node must have (it is fixed at registration): start fails if it differs. */
  ip?: string;
  /** The taints the node should hold; the difference is asked of the Guardian at start. */
  taints?: string[];
  /** Portal mode: offer `subnets` (default: the networks in the host's routing table) to permitted peers. */
  portal?: boolean;
  /** The subnets a portal offers, e.g. ["10.50.0.0/24"]. */
  subnets?: string[];
  /** TUN device name (default "veilnet"). */
  ifname?: string;
  /** false: control plane only, no TUN device, no DNS, no portal (default true). */
  tun?: boolean;
  /** Where the DNS server listens (default: the overlay IPv4 address, port 53); false for none. */
  dns?: { hostname: string; port: number } | false;
  /** Forward names outside .veilnet to the host's resolvers (default true). */
  dnsForward?: boolean;
  /** Idle time after which a tether dissolves (ms). */
  tetherIdleMs?: number;
  /** Aborting it closes the node. */
  signal?: AbortSignal;
  /** Where the node's log lines go (default: nowhere). */
  log?: (line: string) => void;
}

/** A running node. */
export interface Conflux extends AsyncDisposable {
  /** The node's state, as `veilnet-conflux status --json` prints it. */
  status(): NodeStatus;
  /** Its peers, as `veilnet-conflux peers --json` prints them. */
  peers(): PeerStatus[];
  /** The nodes answering to `<tag>.veilnet` that this node may reach. */
  lookup(tag: string): Promise<Owner[]>;
  /** Adds and removes taints at the Guardian; resolves to the taints held now. */
  changeTaints(change: { add?: string[]; remove?: string[] }): Promise<string[]>;
  /** Says goodbye to the realm and undoes every change to the host. Idempotent. */
  close(): Promise<void>;
  /**
   * Resolves once the node is closed (by close(), the signal, or dispose). Rejects, once closed, when the node
   * stopped on its own: the Guardian revoked or removed it (the error says so).
   */
  readonly closed: Promise<void>;
}

/**
 * Starts a node: logs in to the Guardian, joins the Master, opens the TUN device, serves DNS, and in portal mode
 * forwards to its subnets. Rejects with an Error saying what is wrong (having undone what it did).
 */
export async function startConflux(o: ConfluxOptions): Promise<Conflux> {
  const log = o.log ?? (() => {});
  const ifname = o.ifname ?? "veilnet";
  checkInterfaceName(ifname);
  if (o.tag !== undefined && !isTag(o.tag)) {
    throw new TypeError(`bad tag "${o.tag}": one DNS label of a-z, 0-9 and inner hyphens`);
  }
  if (o.ip !== undefined && !parseIPv4(o.ip)) {
    throw new TypeError(`ip must be an IPv4 address, got "${o.ip}"`);
  }
  for (const s of o.subnets ?? []) parseCidr(s);
  o.signal?.throwIfAborted();
  const useTun = o.tun ?? true;
  const host = portalHost(log);
  const undo: (() => PromiseLike<void> | void)[] = [];
  const routes = useTun ? new KernelRoutes(host, ifname) : undefined;
  // What portal subnets must not cover; without a TUN device nothing is routed, so nothing to read.
  const underlay = useTun ? new UnderlayReader(host, ifname) : undefined;
  if (routes) undo.push(() => routes[Symbol.asyncDispose]());

  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  let rejectClosed!: (reason: Error) => void;
  const closed = new Promise<void>((resolve, reject) => [resolveClosed, rejectClosed] = [resolve, reject]);
  // Handled here, so a program that never awaits `closed` is not brought down by it; one that does sees the error.
  closed.catch(() => {});
  /** Why the node stopped on its own (the Guardian revoked or removed it), if it did. */
  let stopped: Error | undefined;
  const close = () =>
    closing ??= (async () => {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch (error) {
          log(`while closing: ${(error as Error).message}`);
        }
      }
      if (stopped) rejectClosed(stopped);
      else resolveClosed();
    })();

  try {
    // The subnets go to the Guardian at login, which keeps them within what the administrator granted; without
    // them a portal offers everything it was granted.
    const subnets = o.subnets;
    if (o.guardianCa !== undefined) trustGuardianCa(o.guardianCa);
    // The data-plane worker starts now: its warm-up (src/lane/worker.ts) runs while the node logs in and joins,
    // not while the first packets wait. The agent takes its own hold when it gives the worker the device.
    const early = useTun && Lane.readsTun ? Lane.acquire() : undefined;
    const agent = await Agent.start({
      guardian: o.guardian,
      token: o.token,
      realmKey: o.realmKey,
      connect: (c) =>
        connectNats({ ...c, ca: o.guardianCa, log: Deno.env.get("VEILNET_DEBUG") ? log : undefined }),
      log,
      tag: o.tag,
      portal: o.portal,
      subnets,
      tetherIdleMs: o.tetherIdleMs,
      syncAes: hostAesGcm,
      onSubnets: (s) => void routes?.sync(s),
      onStop: (reason) => {
        stopped = reason;
        void close();
      },
      underlay: underlay && ((endpoints) => underlay.read(endpoints)),
      openTun: useTun
        ? async (cert) => {
          const tun = await LinuxTun.open({
            name: ifname,
            offload: true,
            addresses: [
              `${formatAddress(cert.ipv4)}/${cert.prefix4}`,
              `${formatAddress(cert.ipv6)}/${cert.prefix6}`,
            ],
          });
          if (tun.offloadError) log(`TUN offload is off (${tun.offloadError}): TCP goes packet by packet`);
          return tun;
        }
        : undefined,
    }).finally(() => early?.release());
    undo.push(() => agent.close());
    const cert = agent.certificate;
    if (o.ip !== undefined && formatAddress(cert.ipv4) !== o.ip) {
      throw new Error(
        `this node's overlay address is ${
          formatAddress(cert.ipv4)
        }, not ${o.ip} (addresses are fixed at registration)`,
      );
    }
    if (o.taints !== undefined) {
      const add = o.taints.filter((t) => !cert.taints.includes(t));
      const remove = cert.taints.filter((t) => !o.taints!.includes(t));
      if (add.length + remove.length > 0) await agent.changeTaints({ add, remove });
    }
    if (useTun && agent.certificate.portal) {
      const offered = subnetsOf(agent.certificate.subnets).map(formatCidr);
      if (offered.length === 0) log("portal: no subnets to offer (the administrator grants them)");
      else {
        const portal = await openPortal(host, ifname, offered);
        undo.push(() => portal[Symbol.asyncDispose]());
      }
    }
    const dnsAt = o.dns === false || (!useTun && !o.dns)
      ? undefined
      : o.dns || { hostname: formatAddress(cert.ipv4), port: 53 };
    if (dnsAt) {
      const dns = await serveNodeDns({
        agent,
        ...dnsAt,
        forward: o.dnsForward ?? true,
        ifname: useTun ? ifname : undefined,
        log,
      }).catch((error) => {
        if (o.dns) throw error; // asked for explicitly: do not run without it
        log(`${(error as Error).message}; *.veilnet will not resolve (choose another with --dns-listen)`);
        return undefined;
      });
      if (dns) {
        agent.dnsCounts = () => dns.counts;
        undo.push(() => dns[Symbol.asyncDispose]());
      }
    }
    const onAbort = () => void close();
    o.signal?.addEventListener("abort", onAbort, { once: true });
    undo.push(() => o.signal?.removeEventListener("abort", onAbort));
    if (o.signal?.aborted) void close();
    return {
      status: () => agent.status(),
      peers: () => agent.peerStatus(),
      lookup: (tag) => agent.lookup(tag),
      changeTaints: (change) => agent.changeTaints(change),
      close,
      closed,
      [Symbol.asyncDispose]: close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
