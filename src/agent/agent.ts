/**
 * One running node: log in to the Guardian with a fresh identity, join the Master with the session's credentials,
 * take part in the realm's membership (membership.ts: announcements to the nodes that know it, peers learned on
 * demand), renew the session before it expires, follow taint changes, and run the data plane.
 *
 * Guardian down: the node keeps its session, peers and control channel until the certificate expires, and keeps
 * retrying the login meanwhile.
 * @module
 */

import { certificateRef, type VerifiedCertificate, verifyCertificate } from "../crypto/certificate.ts";
import { signControl } from "../crypto/control_signing.ts";
import { bytesEqual, formatUuid, fromHex, Identity, toHex } from "../crypto/identity.ts";
import type { LoginResponse } from "../guardian/guardian.ts";
import { fromBase64 } from "../guardian/rules.ts";
import type { ControlChannel } from "../control/channel.ts";
import { type RealmSubjects, realmSubjects } from "../control/subjects.ts";
import { formatAddress, parseIPv4, parseIPv6 } from "../tun/ip.ts";
import { contains, formatCidr, type Offer, subnetsOf } from "../portal/subnets.ts";
import { UNDERLAY_READ_MS, type UnderlayAddress } from "../portal/underlay.ts";
import {
  LOGIN_RETRY_MS,
  MAX_REPORT_PEERS,
  NAT_CHECK_MS,
  RENEW_AT_FRACTION,
  REPORT_AFTER_CHANGE_MS,
  REPORT_MS,
  ROUTE_UPKEEP_MS,
} from "../tuning.ts";
import { VERSION } from "../spec.ts";
import { ACCESS_TEAMS } from "../wire/certificate.ts";
import { type AnyControlMessage, BROADCAST, ControlKind } from "../wire/control.ts";
import { Anchor } from "../anchor/anchor.ts";
import { Streams } from "../anchor/streams.ts";
import { Handshaker } from "../crypto/handshake.ts";
import type { SyncAesGcm } from "../crypto/stream.ts";
import { type Signal, Tethers } from "../tether/tethers.ts";
import type { Tun } from "../tun/tun.ts";
import { LinuxTun } from "../tun/linux_tun.ts";
import { Lane } from "../lane/lane.ts";
import { RouteLearner } from "../route/learner.ts";
import { admitPacket, mayCommunicate } from "./access.ts";
import { mayCross, type Placed, whyNoPath } from "./regions.ts";
import { guardianClient, worthRetrying } from "./guardian_client.ts";
import { Membership, type Owner } from "./membership.ts";
import type { PeerTable } from "./peers.ts";
import { confluxIdBytes } from "./revocations.ts";
import { PortalRoutes } from "./portal_routes.ts";
import { identityStatus, type NodeStatus, type PeerStatus, type RouteStatus } from "./status.ts";
import { firstStun, type NatBehaviour, natBehaviour } from "../netcheck/report.ts";
import { probeStun } from "../netcheck/stun_probe.ts";

/**
 * The once-a-second upkeep (peers expired; with a data plane, routes and the host's addresses looked at): one
 * timer, so an idle node wakes once for all of it.
 */
const TICK_MS = 1_000;

/** How long after asking the realm for relays to a destination their answers are taken. */
const ROUTE_ANSWER_WINDOW_MS = 10_000;

/** A logged-in session. */
interface Session {
  login: LoginResponse;
  cert: VerifiedCertificate;
}

/** How an agent starts. */
export interface AgentOptions {
  guardian: string;
  /** The node's conflux token. */
  token: string;
  /** The realm's public key (base64) pinned at registration: a login answer naming another is refused for good. */
  realmKey?: string;
  /** Connects the control channel; asks `credentials` on every (re)connect. */
  connect: (o: {
    urls: string[];
    credentials: () => { jwt: string; seed: string };
    inboxPrefix: string;
    name: string;
  }) => Promise<ControlChannel>;
  log: (line: string) => void;
  clock?: () => number;
  /** Opens the TUN device for the session's addresses; without it the node runs its control plane only. */
  openTun?: (cert: VerifiedCertificate) => Promise<Tun>;
  /** A new tag for this node, sent at login (the Guardian keeps it). */
  tag?: string;
  /** Portal mode and the subnets offered, sent at login (the Guardian checks and keeps them). */
  portal?: boolean;
  subnets?: string[];
  /** Called with the subnets routed to portals (most specific first) whenever they change. */
  onSubnets?: (subnets: string[]) => void;
  /**
   * The addresses no portal subnet may cover: this host's own and its gateways, and the Guardian's and the
   * Master's (from their URLs). Read at start, after each login, when portals' offers change, and every
   * UNDERLAY_READ_MS while there are some. Without it (no TUN device, nothing routed to the kernel) none.
   */
  underlay?: (endpoints: { guardian: string; master: string[] }) => Promise<UnderlayAddress[]>;
  /** Idle time after which a tether dissolves (default TETHER_IDLE_MS). */
  tetherIdleMs?: number;
  /** A faster AES-256-GCM for small batches than node:crypto's, when the host has one (see StreamSecrets.aes). */
  syncAes?: (key: Uint8Array) => SyncAesGcm | undefined;
  /**
   * Called once if the agent stops on its own, after it closed: the Guardian refused to renew its session (401,
   * 403: an administrator revoked or removed the node). `reason` says so.
   */
  onStop?: (reason: Error) => void;
}

/** The data plane's parts, present when the node has a TUN device. */
interface DataPlane {
  streams: Streams;
  tethers: Tethers;
  anchor: Anchor;
  /** The data-plane worker, when it reads the TUN. */
  lane?: Lane;
  /** The TUN device's name (not an underlay interface). */
  tunName: string;
}

/** A running node. */
export class Agent implements AsyncDisposable {
  readonly #o: AgentOptions;
  readonly #clock: () => number;
  readonly #identity: Identity;
  #session: Session;
  readonly #realm: Uint8Array;
  readonly #realmKey: Uint8Array;
  readonly #subjects: RealmSubjects;
  #channel: ControlChannel | undefined;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #renewal: ReturnType<typeof setTimeout> | undefined;
  /** Fires when the session's certificate ends unrenewed: the node says why its traffic stops. */
  #expiry: ReturnType<typeof setTimeout> | undefined;
  /** The report due soon after a tether changed (see #reportSoon). */
  #reportTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** The login under way because a revocation voided this node's certificate. */
  #relogin: Promise<void> | undefined;
  #data: DataPlane | undefined;
  /** Overlay address → peer node id (hex): IPv4 as a number, IPv6 as hex. */
  #routes4 = new Map<number, string>();
  #routes6 = new Map<string, string>();
  /** Portal subnets of permitted peers → the portal chosen for each, screened against this host's underlay. */
  readonly #portals: PortalRoutes;
  /** This host's interface addresses at the last look (see #watchUnderlay). */
  #hostAddresses: string | undefined;
  /** How the NAT in front of this host maps it, as the Guardian's STUN server saw it last (see #checkNat). */
  #nat: { nat: NatBehaviour; publicAddress?: string } | undefined;
  #learner: RouteLearner;
  /** Per destination, the relays that said they reach it, with their round-trip time to it (0 = unknown). */
  #relays = new Map<string, Map<string, number>>();
  /** When we last asked for relays to a destination, and last answered each asker. */
  #lastQuery = new Map<string, number>();
  #lastAnswer = new Map<string, number>();
  readonly #membership: Membership;
  /** Set by whoever serves this node's DNS: its responses by outcome, for status and metrics. */
  dnsCounts: (() => Map<string, number>) | undefined;

  private constructor(o: AgentOptions, identity: Identity, session: Session) {
    this.#o = o;
    this.#clock = o.clock ?? Date.now;
    this.#identity = identity;
    this.#session = session;
    this.#realm = fromHex(session.login.realm.id);
    this.#realmKey = fromBase64(session.login.realm.public_key)!;
    this.#subjects = realmSubjects(session.login.realm.id);
    this.#learner = new RouteLearner({ clock: this.#clock, random: Math.random });
    const read = o.underlay;
    this.#portals = new PortalRoutes({
      read: read && (() => read({ guardian: o.guardian, master: this.#session.login.nats.urls })),
      log: o.log,
      onSubnets: o.onSubnets,
    });
    this.#membership = new Membership({
      identity,
      self: () => this.#session.cert,
      secrets: () => this.#secrets,
      realm: this.#realm,
      realmKey: this.#realmKey,
      subjects: this.#subjects,
      channel: () => this.#channel,
      clock: this.#clock,
      log: o.log,
      onMessage: (m) => this.#dispatch(m),
      busy: (id) => this.#data !== undefined && (this.#data.anchor.busy(id) || !!this.#data.tethers.info(id)),
      onChange: (event, peer) => {
        o.log(`peer ${event}: ${peer.cert.tag} (${formatAddress(peer.cert.ipv4)})`);
        this.#reroute();
        if (event === "changed") return;
        const id = toHex(peer.cert.nodeId);
        if (event === "joined") {
          this.#candidates(id);
        } else {
          this.#learner.forget(id);
          this.#relays.delete(id);
          for (const [dest, relays] of this.#relays) if (relays.delete(id)) this.#candidates(dest);
          this.#data?.tethers.forget(id);
          this.#data?.streams.expire((p) => p === id);
        }
      },
    });
    this.#applyRevocations(session.login);
  }

  /** The peer table (membership's). */
  get peers(): PeerTable {
    return this.#membership.peers;
  }

  /** Logs in (retrying while the Guardian is unreachable), joins the Master and announces. */
  static async start(o: AgentOptions): Promise<Agent> {
    const identity = await Identity.generate();
    const session = await loginWithRetry(o, identity, () => false);
    const agent = new Agent(o, identity, session);
    await agent.#portals.refresh();
    await agent.#join();
    return agent;
  }

  async #join(): Promise<void> {
    const nodeId = this.#identity.id;
    this.#channel = await this.#o.connect({
      urls: this.#session.login.nats.urls,
      credentials: () => this.#session.login.nats,
      inboxPrefix: this.#session.login.nats.inboxPrefix,
      name: `veilnet-${this.#session.cert.tag}`,
    });
    if (this.#o.openTun) await this.#startDataPlane(await this.#o.openTun(this.#session.cert));
    this.#timers.push(setInterval(() => this.#tick(), TICK_MS));
    // The backup pipeline: sealed data messages from peers that cannot form a tether to us. They authenticate
    // end to end like any data message; one not for us is dropped (a "backup" hop may relay nothing).
    this.#channel.subscribe(this.#subjects.data(nodeId), (m) => this.#data?.anchor.receive("backup", m));
    this.#o.log(
      `joined realm ${this.#session.login.realm.name} as ${this.#session.cert.tag} ` +
        `(${formatAddress(this.#session.cert.ipv4)}, node ${nodeId})`,
    );
    this.#sayIgnoredTeams();
    await this.#membership.join();
    this.#findPortals();
    this.#timers.push(
      setInterval(() => this.#portals.offering && void this.#portals.refresh(), UNDERLAY_READ_MS),
    );
    this.#scheduleRenewal();
    this.#timers.push(setInterval(() => void this.#report(), REPORT_MS));
    this.#reportSoon();
    this.#timers.push(setInterval(() => void this.#checkNat(), NAT_CHECK_MS));
    void this.#checkNat();
  }

  /**
   * Asks the Guardian's STUN server (the first handed out), on its two ports from one socket, what public address
   * it sees and whether the NAT keeps one mapping for both: for the Guardians' view of the realm (reports). A
   * change is reported soon.
   */
  async #checkNat(): Promise<void> {
    const stun = firstStun(this.#session.login.ice_servers);
    if (!stun || this.#closed) return;
    let mappings;
    try {
      mappings = await probeStun(stun.host, { ports: [stun.port, stun.port + 1] });
    } catch (error) {
      return this.#o.log(`NAT check with ${stun.host}: ${(error as Error).message}`);
    }
    const local = Deno.networkInterfaces().map((i) => i.address);
    const seen = {
      nat: natBehaviour(mappings, local),
      publicAddress: mappings.find((m) => m.mapped)?.mapped,
    };
    if (JSON.stringify(seen) === JSON.stringify(this.#nat)) return;
    this.#nat = seen;
    this.#o.log(
      `NAT as the Guardian's STUN server sees it: ${seen.nat}${
        seen.publicAddress ? `, public address ${seen.publicAddress}` : ""
      }`,
    );
    this.#reportSoon();
  }

  /** Reports once REPORT_AFTER_CHANGE_MS from now (tethers that change together make one report). */
  #reportSoon(): void {
    if (this.#reportTimer !== undefined || this.#closed) return;
    this.#reportTimer = setTimeout(() => {
      this.#reportTimer = undefined;
      void this.#report();
    }, REPORT_AFTER_CHANGE_MS);
  }

  /**
   * Tells the Guardians what this node sees (its version, and the peers it has traffic with: path, link, bytes,
   * round-trip time), signed, on the realm's report subject, which only they hear. At most MAX_REPORT_PEERS
   * peers, the busiest: the report's size and rate do not grow with the realm.
   */
  async #report(): Promise<void> {
    const channel = this.#channel;
    if (!channel || channel.state !== "connected" || this.#closed) return;
    const peers = this.peerStatus()
      .filter((p) => p.path !== "none")
      .sort((a, b) => (b.txBytes + b.rxBytes) - (a.txBytes + a.rxBytes))
      .slice(0, MAX_REPORT_PEERS)
      .map((p) => ({
        id: p.id,
        path: p.path,
        ...(p.via !== undefined ? { via: p.via } : {}),
        ...(p.link !== undefined ? { link: p.link } : {}),
        ...(p.rttMs !== undefined ? { rttMs: Math.round(p.rttMs * 10) / 10 } : {}),
        txBytes: p.txBytes,
        rxBytes: p.rxBytes,
      }));
    const cert = this.#session.cert;
    try {
      const message = await signControl(this.#identity, {
        kind: ControlKind.Report,
        recipient: BROADCAST,
        certRef: cert.ref,
        body: { certificate: cert.bytes, report: JSON.stringify({ version: VERSION, ...this.#nat, peers }) },
      }, this.#clock());
      channel.publish(this.#subjects.report, message);
    } catch (error) {
      this.#o.log(`report to the Guardians: ${(error as Error).message}`);
    }
  }

  async #startDataPlane(device: Tun): Promise<void> {
    const clock = this.#clock;
    const log = this.#o.log;
    // A real device is read by the data-plane worker, which carries the fast path itself (src/lane/).
    let lane: Lane | undefined;
    let tun = device;
    if (device instanceof LinuxTun && Lane.readsTun) {
      lane = Lane.acquire();
      const attached = await lane.ready && lane.attach(device, this.#identity.nodeId);
      if (attached) tun = attached;
      else {
        lane.release();
        lane = undefined;
      }
    }
    const streams = new Streams({
      self: this.#identity.nodeId,
      handshaker: new Handshaker({ identity: this.#identity, certRef: () => this.#session.cert.ref, clock }),
      send: (peer, message) => this.#channel?.publish(this.#subjects.node(peer), message),
      clock,
      log,
      syncAes: this.#o.syncAes,
    });
    const tethers = new Tethers({
      self: this.#identity.id,
      signal: (peer, signal) => this.#sendSignal(peer, signal),
      iceServers: () => this.#session.login.ice_servers,
      overlay: (address) => this.inOverlay(address),
      onMessage: (peer, data) => this.#data?.anchor.receive(peer, data),
      onChange: (peer, state, reason) => {
        const tag = this.peers.get(peer)?.cert.tag ?? peer.slice(0, 8);
        log(`tether to ${tag} ${state}${reason ? ` (${reason})` : ""}`);
        this.#reportSoon();
        // While a tether is open, this node hears the route queries of nodes looking for a relay to its peer.
        this.#membership.relayFor(peer, state === "open");
        // A tether that died (not one dissolved for idleness) takes its hop out of every route at once.
        if (state === "closed" && reason !== "idle" && reason !== "shutting down") {
          this.#learner.failEverywhere(peer);
        }
      },
      idleMs: this.#o.tetherIdleMs,
      clock,
      debug: Deno.env.get("VEILNET_DEBUG") ? log : undefined,
    });
    const anchor = new Anchor({
      tun,
      self: this.#identity.nodeId,
      streams,
      tethers,
      route: (d) =>
        (d.length === 4 ? this.#routes4.get(ipv4Key(d)) : this.#routes6.get(toHex(d))) ??
          this.#portals.table.lookup(d),
      // Multicast and link-local destinations (the host's own mDNS, router solicitations) belong to no node.
      resolve: (d) => unicast(d) ? this.#membership.resolve(d) : Promise.resolve(),
      admit: (peer, packet) => this.#admit(peer, packet),
      nextHop: (dest) => this.#nextHop(dest),
      paths: (dest) => this.#learner.spread(dest, (hop) => this.#hopAllowed(hop, dest)),
      hopFailed: (dest, hop) => {
        this.#learner.fail(dest, hop);
        if (hop === dest) this.#askForRelays(dest);
      },
      backup: (dest, message) => this.#channel?.publish(this.#subjects.data(dest), message),
      backupFlush: () => this.#channel?.flush() ?? Promise.resolve(),
      mayRelay: (from, dest) => this.#mayRelay(from, dest),
      mayBackup: (from, dest) => this.#thirdMay(this.#masterRegion, from ?? this.#identity.id, dest),
      lane,
      preferredHop: (dest) => this.#preferredHop(dest),
      facts: (peer) => this.peers.get(peer)?.cert,
      selfFacts: () => this.#session.cert,
      clock,
      log,
    });
    this.#data = { streams, tethers, anchor, lane, tunName: tun.name };
    this.#timers.push(setInterval(() => streams.expire((p) => !this.peers.get(p)), 5_000));
    anchor.start();
    log(`data plane up on ${tun.name}`);
  }

  /** True for an address inside this node's overlay prefixes (IPv4 or IPv6). */
  inOverlay(address: string): boolean {
    const cert = this.#session.cert;
    const v4 = parseIPv4(address);
    if (v4) return contains({ version: 4, address: cert.ipv4, prefix: cert.prefix4 }, v4);
    const v6 = parseIPv6(address);
    return v6 !== undefined && contains({ version: 6, address: cert.ipv6, prefix: cert.prefix6 }, v6);
  }

  /**
   * When this host's addresses change (a new network, a NAT's address), tethers that failed to form are tried
   * again at once: what failed on the old underlay may work on the new one. When an address went away, the
   * tethers and the Master connection that sent from it are dead: they are replaced at once, not after their
   * peers fall silent.
   */
  #watchUnderlay(tunName: string): void {
    const now = Deno.networkInterfaces()
      .filter((i) => i.name !== tunName && i.name !== "lo")
      .map((i) => `${i.name}/${i.address}`)
      .sort()
      .join(" ");
    const before = this.#hostAddresses;
    this.#hostAddresses = now;
    if (before === undefined || now === before) return;
    this.#o.log(`this host's addresses changed (${now || "none"}): trying tethers again`);
    this.#data?.anchor.retryTethers();
    void this.#checkNat();
    const present = new Set(now.split(" ").map((a) => a.slice(a.indexOf("/") + 1)));
    const gone = new Set(
      before.split(" ").map((a) => a.slice(a.indexOf("/") + 1)).filter((a) => !present.has(a)),
    );
    if (gone.size === 0) return;
    this.#o.log(`${[...gone].join(", ")} went away: replacing the tethers and the Master connection on it`);
    this.#data?.tethers.addressesGone(gone);
    void this.#channel?.reconnect();
  }

  /**
   * Whether this node may carry traffic between two of its peers: both known, and allowed to talk. By teams, this
   * node cannot tell whether two others share an identity (it lacks their secrets): it carries only between peers
   * it may talk with itself, and the two ends check each other.
   */
  #mayCarry(from: string, dest: string): boolean {
    const a = this.peers.get(from)?.cert;
    const b = this.peers.get(dest)?.cert;
    if (a === undefined || b === undefined) return false;
    if (this.#session.cert.access !== ACCESS_TEAMS) return mayCommunicate(a, b);
    return true; // both are in the table, which holds only peers this node may talk with
  }

  /** Whether this node may carry traffic between two others: they may talk, and its region is one both allow. */
  #mayRelay(from: string, dest: string): boolean {
    return this.#mayCarry(from, dest) && this.#thirdMay(this.#session.cert.region, from, dest);
  }

  /** Where the Master is (the backup pipeline crosses it), as the Guardian said at login; "" when unsaid. */
  get #masterRegion(): string {
    return this.#session.login.master_region ?? "";
  }

  /** The certificate of `id`: this node's own, or a peer's. */
  #placed(id: string): Placed | undefined {
    return id === this.#identity.id ? this.#session.cert : this.peers.get(id)?.cert;
  }

  /** Whether a third party in `region` may carry traffic between nodes `a` and `b` (src/agent/regions.ts). */
  #thirdMay(region: string, a: string, b: string): boolean {
    const [x, y] = [this.#placed(a), this.#placed(b)];
    return x !== undefined && y !== undefined && mayCross(region, x, y);
  }

  /** Whether `hop` may carry this node's traffic to `dest`: the direct path always, a relay in an allowed region. */
  #hopAllowed(hop: string, dest: string): boolean {
    if (hop === dest) return true;
    const relay = this.peers.get(hop)?.cert;
    return relay !== undefined && this.#thirdMay(relay.region, this.#identity.id, dest);
  }

  /** Says which teams this node asks for but does not hold (its owner is not in them), once per change. */
  #sayIgnoredTeams(): void {
    const ignored = (this.#session.login.ignored_teams ?? []).join(", ");
    if (ignored === this.#ignoredSaid) return;
    this.#ignoredSaid = ignored;
    if (ignored) {
      this.#o.log(`teams ignored: ${ignored} (this node's owner neither owns nor is a member of them)`);
    }
  }
  #ignoredSaid = "";

  /** The secrets of this node's identities, from its latest login (a realm whose access is by teams). */
  get #secrets(): Uint8Array[] {
    return (this.#session.login.identity_secrets ?? []).map((s) => fromBase64(s)!);
  }

  /** The learner's candidates for a destination: itself, and the relays that answered. */
  #candidates(dest: string): void {
    // Each relay's answer carries its own round trip to `dest`: the learner's prior for the path through it.
    const relays = this.#relays.get(dest);
    this.#learner.setCandidates(dest, [dest, ...(relays?.keys() ?? [])], relays);
  }

  /**
   * The next hop for traffic to `dest`: among hops with an open tether if any, else the learner's pick. Traffic
   * to a destination also keeps its relay candidates fresh: the realm is asked now and then (every 30 s), so a
   * relay is known before the direct path fails or degrades.
   */
  #nextHop(dest: string): string {
    if (this.#clock() - (this.#lastQuery.get(dest) ?? 0) > 30_000) this.#askForRelays(dest);
    const tethers = this.#data?.tethers;
    const allowed = (hop: string) => this.#hopAllowed(hop, dest);
    const ready = this.#learner.choose(dest, undefined, this.#openHop(dest));
    const wanted = this.#learner.choose(dest, undefined, allowed);
    // The learner may want a hop with no tether yet (to explore it, or because it is now the best): form it in
    // the background, and meanwhile keep the traffic on a hop that is open.
    if (ready && wanted && wanted !== ready && !tethers?.info(wanted)) {
      void tethers?.ensure(wanted).then((ok) => ok || this.#learner.fail(dest, wanted));
    }
    return ready ?? wanted ?? dest;
  }

  /** The hop the learner prefers for `dest` among open, allowed ones, without exploring (the worker's fast path). */
  #preferredHop(dest: string): string {
    return this.#learner.choose(dest, undefined, this.#openHop(dest), false) ?? dest;
  }

  /** Whether a hop has an open tether and may carry traffic to `dest`. */
  #openHop(dest: string): (hop: string) => boolean {
    return (hop) => this.#data?.tethers.info(hop)?.state === "open" && this.#hopAllowed(hop, dest);
  }

  /** Asks the nodes tethered to `dest` whether they would relay to it; at most once every 3 s per destination. */
  #askForRelays(dest: string): void {
    const now = this.#clock();
    if (now - (this.#lastQuery.get(dest) ?? 0) < 3_000) return;
    this.#lastQuery.set(dest, now);
    void this.#membership.askForRelays(fromHex(dest));
  }

  /** Looks up the realm's portals the last login named, so that their subnets are routed before they are used. */
  #findPortals(): void {
    for (const address of this.#session.login.portals ?? []) { // older Guardians name none
      const bytes = parseIPv4(address);
      if (bytes && !this.#routes4.has(ipv4Key(bytes))) void this.#membership.resolve(bytes);
    }
  }

  /** The once-a-second upkeep (TICK_MS). */
  #tick(): void {
    this.peers.expire();
    const data = this.#data;
    if (!data) return;
    this.#watchUnderlay(data.tunName);
    this.#routeTick();
  }

  /**
   * Once a second, for each destination with traffic: feed the learner the round-trip times of its open hops
   * (a relay's own time to the destination added); when the direct path had failed, try it again in the
   * background once its backoff ends, so traffic moves back when it works again; and while traffic to a
   * destination rides the backup pipeline, try its relays too, so a tether replaces the pipeline soon.
   */
  #routeTick(): void {
    const data = this.#data;
    if (!data) return;
    // Only traffic of the last few seconds: an idle tether must be let dissolve, not formed again for traffic
    // that ended (egresses outlive it).
    for (const dest of data.anchor.destinations(ROUTE_UPKEEP_MS)) {
      // Traffic the worker carries never asks for a next hop here: its relays are asked for, and the hop the
      // learner wants is formed, as a batch through this thread would.
      this.#nextHop(dest);
      // Traffic spreading over several paths looks for more of them (the query is sent every 3 s at most).
      if (data.anchor.backlogged(dest)) this.#askForRelays(dest);
      for (const hop of this.#learner.candidates(dest)) {
        const info = data.tethers.info(hop);
        if (info?.state === "open" && info.rttMs !== undefined) {
          const onward = hop === dest ? 0 : this.#relays.get(dest)?.get(hop) || info.rttMs;
          this.#learner.observe(dest, hop, info.rttMs + onward);
        } else if (!info && (hop === dest ? this.#learner.due(dest, hop) : data.anchor.inBackup(dest))) {
          // The direct path after its backoff; and, while traffic rides the backup pipeline, every relay.
          void data.tethers.ensure(hop).then((open) => {
            if (open) return;
            this.#learner.fail(dest, hop);
            if (hop === dest) this.#askForRelays(dest);
          });
        }
      }
    }
  }

  #reroute(): void {
    this.#routes4.clear();
    this.#routes6.clear();
    const offers: Offer[] = [];
    for (const { cert } of this.peers.list()) {
      const id = toHex(cert.nodeId);
      this.#routes4.set(ipv4Key(cert.ipv4), id);
      this.#routes6.set(toHex(cert.ipv6), id);
      if (cert.portal) {
        offers.push({
          node: id,
          tag: cert.tag,
          conflux: toHex(cert.conflux),
          subnets: subnetsOf(cert.subnets),
        });
      }
    }
    this.#portals.update(offers);
  }

  /** Whether a packet opened from `peer` may go to the TUN (see admitPacket). */
  #admit(peer: string, packet: Uint8Array): "spoofed-source" | "foreign-destination" | undefined {
    const from = this.peers.get(peer)?.cert;
    return from ? admitPacket(from, this.#session.cert, packet) : "spoofed-source";
  }

  /** This node's current certificate. */
  get certificate(): VerifiedCertificate {
    return this.#session.cert;
  }

  /** The nodes answering to `<tag>.veilnet` that this node may reach (itself included). */
  lookup(tag: string): Promise<Owner[]> {
    return this.#membership.lookup(tag);
  }

  /** Verified messages other than membership's, from permitted peers and the Guardian. */
  async #dispatch(m: AnyControlMessage): Promise<void> {
    // The peer table has applied it already (peers dropped, certificates refused); what is left is this node's own.
    if (m.kind === ControlKind.Revoke) return this.#renewIfRevoked();
    const data = this.#data;
    if (!data) return;
    switch (m.kind) {
      case ControlKind.StreamRequest:
        return await data.streams.onRequest(m);
      case ControlKind.StreamResponse:
        return await data.streams.onResponse(m);
      case ControlKind.TetherSignal:
        return await data.tethers.onSignal(toHex(m.sender), m.body);
      case ControlKind.RouteQuery: {
        // Answer only for a destination we may carry this asker's traffic to (#mayRelay; looked up first if
        // unknown), once a second per asker, and only once our own tether to it is open: a node that cannot reach
        // the destination itself (a cut path) must not offer to relay to it. (An rttMs of 0 means "not measured yet".)
        const asker = toHex(m.sender);
        const dest = toHex(m.body.destination);
        const now = this.#clock();
        if (dest === this.#identity.id || now - (this.#lastAnswer.get(asker) ?? 0) < 1_000) return;
        this.#lastAnswer.set(asker, now);
        if (!this.peers.get(dest)) await this.#membership.identify(m.body.destination);
        if (!this.#mayRelay(asker, dest)) return;
        if (data.tethers.info(dest)?.state !== "open" && !await data.tethers.ensure(dest)) return;
        const answer = await signControl(this.#identity, {
          kind: ControlKind.RouteAnswer,
          recipient: m.sender,
          certRef: this.#session.cert.ref,
          body: { destination: m.body.destination, rttMs: Math.round(data.tethers.info(dest)?.rttMs ?? 0) },
        }, this.#clock());
        this.#channel?.publish(this.#subjects.node(asker), answer);
        return;
      }
      case ControlKind.RouteAnswer: {
        // Only an answer to a question we asked lately, from a relay that may carry traffic to that destination:
        // a member that may not talk to it must not draw our traffic to itself (it could only drop it).
        const dest = toHex(m.body.destination);
        const relay = toHex(m.sender);
        if (this.#clock() - (this.#lastQuery.get(dest) ?? -Infinity) > ROUTE_ANSWER_WINDOW_MS) {
          return this.peers.count("route:unasked");
        }
        if (!this.#mayCarry(relay, dest)) return this.peers.count("route:forbidden-relay");
        if (!this.#hopAllowed(relay, dest)) return this.peers.count("route:outside-regions");
        let relays = this.#relays.get(dest);
        if (!relays) this.#relays.set(dest, relays = new Map());
        relays.set(relay, m.body.rttMs);
        this.#candidates(dest);
        return;
      }
    }
  }

  async #sendSignal(peer: string, signal: Signal): Promise<void> {
    const message = await signControl(this.#identity, {
      kind: ControlKind.TetherSignal,
      recipient: fromHex(peer),
      certRef: this.#session.cert.ref,
      body: signal,
    }, this.#clock());
    this.#channel?.publish(this.#subjects.node(peer), message);
  }

  #scheduleRenewal(): void {
    clearTimeout(this.#renewal);
    clearTimeout(this.#expiry);
    const cert = this.#session.cert;
    const left = cert.notAfter - this.#clock();
    if (left < 2 ** 31) { // a certificate lives at most a day; a timer cannot wait past 2^31 ms
      const end = new Date(cert.notAfter).toISOString();
      this.#expiry = setTimeout(() => {
        this.#o.log(
          `this node's certificate expired at ${end} and the Guardian could not renew it: peers refuse this node ` +
            "and its traffic stops until a login succeeds (still trying)",
        );
      }, Math.max(0, left));
    }
    const at = cert.notBefore + (cert.notAfter - cert.notBefore) * RENEW_AT_FRACTION;
    // A refusal other than "revoked or removed" (renew stops the agent then) is tried again later.
    const renew = () =>
      void this.renew().catch((error) => {
        if (this.#closed) return;
        const wait = LOGIN_RETRY_MS[LOGIN_RETRY_MS.length - 1]!;
        this.#o.log(`renewal failed (${error.message}); trying again in ${wait / 1000} s`);
        this.#renewal = setTimeout(renew, wait);
      });
    this.#renewal = setTimeout(renew, Math.max(0, at - this.#clock()));
  }

  /**
   * Logs in again now (retrying while the Guardian is unreachable, until it works or the agent closes), then
   * announces the new certificate. A refusal meaning the node is no longer in the realm (401, 403) stops the agent
   * for good (see #stopRefused) and rejects.
   */
  async renew(kind: ControlKind.Announce | ControlKind.TaintUpdate = ControlKind.Announce): Promise<void> {
    let session: Session;
    try {
      session = await loginWithRetry(this.#o, this.#identity, () => this.#closed);
    } catch (error) {
      const status = (error as { status?: number }).status;
      if (status === 401 || status === 403) await this.#stopRefused(error as Error);
      if (error instanceof RealmKeyChanged) await this.#stop(error);
      throw error;
    }
    if (this.#closed) return;
    this.#applyRevocations(session.login);
    // Logins may overlap (a scheduled renewal and one after a revocation): never step back to an older certificate.
    if (session.cert.notBefore < this.#session.cert.notBefore) return;
    // Other ICE servers (or credentials) may let a tether form that could not: try the failed ones again.
    if (session.login.ice_servers.join() !== this.#session.login.ice_servers.join()) {
      this.#data?.anchor.retryTethers();
    }
    this.#session = session;
    this.#sayIgnoredTeams();
    void this.#portals.refresh(); // the login answer may name other Masters
    this.#o.log(`session renewed until ${new Date(session.cert.notAfter).toISOString()}`);
    this.peers.recheck();
    this.#scheduleRenewal();
    await this.#membership.announce({ kind });
    this.#findPortals();
  }

  /** A login answer's revocations, applied before anything else of that login. */
  #applyRevocations(login: LoginResponse): void {
    for (const r of login.revocations ?? []) { // older Guardians send none
      try {
        this.peers.revoke(confluxIdBytes(r.conflux_id), r.before);
      } catch (error) {
        this.#o.log(`login answer: ignored a malformed revocation (${(error as Error).message})`);
      }
    }
  }

  /**
   * After a revocation: if it voided this node's own certificate (an administrator changed its taints, tag or
   * subnets, or revoked or removed it), log in again at once for a fresh certificate and announce it; a refusal
   * stops the node (renew). One such login at a time; the Guardian dates a new certificate after the revocation,
   * so one login should do, and two more are tried if it did not.
   */
  #renewIfRevoked(): void {
    if (this.#relogin || this.#closed || !this.peers.voids(this.#session.cert)) return;
    this.#o.log("the Guardian revoked this node's certificate; logging in again");
    this.#relogin = (async () => {
      for (let n = 0; n < 3 && !this.#closed && this.peers.voids(this.#session.cert); n++) await this.renew();
      if (!this.#closed && this.peers.voids(this.#session.cert)) {
        this.#o.log(
          "the Guardian answered with revoked certificates three times; trying again at the next renewal",
        );
      }
    })().catch((error) => {
      if (!this.#closed) this.#o.log(`login after a revocation failed: ${error.message}`);
    }).finally(() => this.#relogin = undefined);
  }

  /** The Guardian refused this node's login: it was revoked or removed. Says so, closes, and tells `onStop`. */
  #stopRefused(refusal: Error): Promise<void> {
    return this.#stop(
      new Error(
        `the Guardian revoked or removed this node (${refusal.message}); it stopped and will not retry ` +
          "(an administrator can restore it, or register it again)",
        { cause: refusal },
      ),
    );
  }

  /** Stops for good on its own: says why, closes, and tells `onStop`. */
  async #stop(reason: Error): Promise<void> {
    if (this.#closed) return;
    this.#o.log(reason.message);
    await this.close();
    this.#o.onStop?.(reason);
  }

  /** Adds/removes taints at the Guardian, then takes the re-issued certificate and tells the realm. */
  async changeTaints(change: { add?: string[]; remove?: string[] }): Promise<string[]> {
    const { taints } = await guardianClient.taints(this.#o.guardian, this.#o.token, change);
    await this.renew(ControlKind.TaintUpdate);
    return taints;
  }

  status(): NodeStatus {
    const cert = this.#session.cert;
    return {
      id: this.#session.login.conflux_id,
      nodeId: this.#identity.id,
      tag: cert.tag,
      ips: [formatAddress(cert.ipv4), formatAddress(cert.ipv6)],
      realm: this.#session.login.realm.name,
      taints: cert.taints,
      access: {
        model: cert.access === ACCESS_TEAMS ? "teams" : "taints",
        identities: cert.identities.length,
        ignoredTeams: this.#session.login.ignored_teams ?? [],
      },
      ...identityStatus(cert),
      ...(cert.region !== "" ? { region: cert.region } : {}),
      ...(cert.regions.length > 0 ? { regions: cert.regions } : {}),
      ...(this.#masterRegion !== "" ? { masterRegion: this.#masterRegion } : {}),
      connected: { guardian: this.#clock() < cert.notAfter, master: this.#channel?.state === "connected" },
      certificateExpiresAt: cert.notAfter,
      peers: this.peers.list().length,
      tethers: this.#data?.tethers.count ?? 0,
      streams: (this.#data?.streams.counts.sending ?? 0) + (this.#data?.streams.counts.receiving ?? 0),
      routes: this.#routes4.size + this.#portals.table.subnets.length,
      relayed: this.#data?.anchor.relayed ?? { messages: 0, bytes: 0 },
      backup: this.#data?.anchor.backups ?? { messages: 0, bytes: 0 },
      dropped: Object.fromEntries([
        ...this.peers.dropped,
        ...this.#portals.counts,
        ...[...this.#data?.anchor.drops ?? []].map(([reason, n]) => [`data:${reason}`, n] as const),
      ]),
      egresses: this.#data?.anchor.egresses ?? 0,
      ...(this.#data ? { stages: { ...this.#data.anchor.stages } } : {}),
      ...(this.#data?.anchor.worker ? { worker: this.#data.anchor.worker } : {}),
      ingresses: this.#data?.streams.counts.receiving ?? 0,
      relays: [...this.#relays.values()].reduce((n, r) => n + r.size, 0),
      revocations: this.peers.revocations,
      handshakeFailures: this.#data?.streams.failures ?? 0,
      streamsFormed: this.#data?.streams.formed ?? 0,
      ...(this.dnsCounts ? { dns: Object.fromEntries(this.dnsCounts()) } : {}),
      portal: cert.portal ? subnetsOf(cert.subnets).map(formatCidr) : [],
      subnets: this.#portals.table.routes(),
      refusedSubnets: this.#portals.refused,
    };
  }

  peerStatus(): PeerStatus[] {
    return this.peers.list().map(({ cert }) => {
      const id = toHex(cert.nodeId);
      const hop = this.#data?.anchor.lastHop(id) ?? id;
      const tether = this.#data?.tethers.info(hop);
      const traffic = this.#data?.anchor.traffic.get(id);
      const via = hop !== id && tether?.state === "open" ? this.peers.get(hop)?.cert.tag : undefined;
      const blocked = this.#data?.anchor.blocked(id) === true;
      return {
        id: formatUuid(cert.conflux),
        nodeId: id,
        tag: cert.tag,
        ips: [formatAddress(cert.ipv4), formatAddress(cert.ipv6)],
        path: tether?.state === "open"
          ? (hop === id ? "direct" : "relay")
          : this.#data?.anchor.inBackup(id)
          ? "backup"
          : "none",
        ...(via !== undefined ? { via } : {}),
        ...(tether?.state === "open" && tether.link ? { link: tether.link } : {}),
        ...(tether?.rttMs !== undefined ? { rttMs: tether.rttMs } : {}),
        ...(cert.region !== "" ? { region: cert.region } : {}),
        ...(blocked ? { waiting: whyNoPath(this.#session.cert, cert, this.#masterRegion) } : {}),
        ...this.#routesTo(id),
        txBytes: traffic?.txBytes ?? 0,
        rxBytes: traffic?.rxBytes ?? 0,
        taints: cert.taints,
        ...identityStatus(cert),
        pq: true,
      };
    });
  }

  /** The paths to `peer` the learner weighs, with their recent shares: `routes` of `peers --json`, if any. */
  #routesTo(peer: string): { routes?: RouteStatus[] } {
    const shares = this.#data?.anchor.shares(peer) ?? new Map<string, number>();
    const stats = this.#learner.stats(peer);
    if (stats.length === 0 && shares.size === 0) return {};
    const round = (x: number, places: number) => Math.round(x * 10 ** places) / 10 ** places;
    const routes: RouteStatus[] = stats.map((s) => ({
      via: s.hop === peer ? "direct" : this.peers.get(s.hop)?.cert.tag ?? s.hop.slice(0, 8),
      ...(s.hop !== peer ? { nodeId: s.hop } : {}),
      share: round(shares.get(s.hop) ?? 0, 3),
      ...(s.rttMs !== undefined ? { rttMs: round(s.rttMs, 1), loss: round(s.loss, 3) } : {}),
      ...(s.priorMs !== undefined ? { sharedMs: s.priorMs } : {}),
      ...(s.benchedUntil > this.#clock() ? { benchedUntil: s.benchedUntil } : {}),
    }));
    const backup = round(shares.get("backup") ?? 0, 3);
    if (backup > 0) routes.push({ via: "backup", share: backup });
    return { routes };
  }

  /** Says goodbye to the realm and leaves the Master. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#renewal);
    clearTimeout(this.#expiry);
    clearTimeout(this.#reportTimer);
    for (const t of this.#timers) clearTimeout(t);
    this.#portals.close();
    await this.#membership.close();
    if (this.#data) {
      this.#data.tethers.close();
      await this.#data.anchor.close();
      this.#data.streams.close();
      this.#data.lane?.release();
    }
    await this.#channel?.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Whether an address may belong to a node or a portal's network: not multicast, broadcast or link-local. */
function unicast(a: Uint8Array): boolean {
  if (a.length === 4) return a[0]! < 224 && !(a[0] === 169 && a[1] === 254);
  return a[0] !== 0xff && !(a[0] === 0xfe && (a[1]! & 0xc0) === 0x80);
}

function ipv4Key(a: Uint8Array): number {
  return ((a[0]! << 24) | (a[1]! << 16) | (a[2]! << 8) | a[3]!) >>> 0;
}

/** A login answer named another realm key than the one pinned at registration. */
export class RealmKeyChanged extends Error {
  override name = "RealmKeyChanged";
}

/**
 * Logs in, retrying with backoff while the Guardian is unreachable, failing, or rate-limiting this address (429);
 * any other refusal (4xx) is final.
 */
async function loginWithRetry(o: AgentOptions, identity: Identity, stop: () => boolean): Promise<Session> {
  for (let attempt = 0;; attempt++) {
    try {
      const login = await guardianClient.login(o.guardian, o.token, identity, {
        tag: o.tag,
        portal: o.portal,
        subnets: o.subnets,
      });
      if (o.realmKey !== undefined && login.realm.public_key !== o.realmKey) {
        throw new RealmKeyChanged(
          `the Guardian answered with another key for realm ${login.realm.name} than the one saved at ` +
            "registration: refusing its certificate (an impostor, or the realm was replaced: register again " +
            "if an administrator says so)",
        );
      }
      const cert = await verifyCertificate(fromBase64(login.certificate)!, {
        realm: fromHex(login.realm.id),
        realmKey: fromBase64(login.realm.public_key)!,
        now: (o.clock ?? Date.now)(),
      });
      if (
        !bytesEqual(cert.nodeId, identity.nodeId) || !bytesEqual(cert.ref, await certificateRef(cert.bytes))
      ) {
        throw new Error("the Guardian issued a certificate for another key");
      }
      return { login, cert };
    } catch (error) {
      const status = (error as { status?: number }).status;
      if (stop() || error instanceof RealmKeyChanged || !worthRetrying(status)) throw error;
      const wait = LOGIN_RETRY_MS[Math.min(attempt, LOGIN_RETRY_MS.length - 1)]!;
      o.log(`login failed (${(error as Error).message}); retrying in ${wait / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
