/**
 * Membership: how a node knows the rest of its realm without hearing from all of it. Its cost does not grow with
 * the realm: nothing is sent on a timer, and every message reaches only the nodes that asked for it.
 *
 * - **Joining, renewing, leaving**: the node announces its certificate on its own `peer.<conflux>` subject, which
 *   only the nodes that know it listen to (a portal announces to everyone instead: its subnets must be routed
 *   before a packet can ask for them).
 * - **Learning a peer on demand**: by address (the first packet to it), by tag (DNS), or by node id (a message
 *   from a stranger, see PeerTable): a Lookup with this node's certificate goes where only the owner hears it
 *   (a `who` subject; the Master routes by interest), and the owner answers Found with its own certificate. After
 *   that exchange each knows the other, and their messages name certificates by reference.
 * - **Relays**: a route query for a destination goes to its `via` subject, heard by the nodes that have an open
 *   tether to it (they subscribe while it is open), and RELAY_FANOUT copies go to the `relays` queue group, each
 *   to one node at random, which answers if it can reach the destination.
 * - **Leaving the table**: see PeerTable (expiry, idleness, leaving, revocation).
 *
 * Names resolve from the same state: this node, the peer table, and else a Lookup of the tag. An address only
 * ever comes from a certificate the realm signed, for a node this one may reach.
 * @module
 */

import type { VerifiedCertificate } from "../crypto/certificate.ts";
import { signControl } from "../crypto/control_signing.ts";
import { bytesEqual, type Identity, toHex } from "../crypto/identity.ts";
import type { PqBackend } from "../crypto/pq.ts";
import type { ControlChannel } from "../control/channel.ts";
import { type RealmSubjects, RELAY_QUEUE } from "../control/subjects.ts";
import { contains } from "../portal/subnets.ts";
import { LOOKUP_WAIT_MS } from "../tuning.ts";
import {
  type AnyControlMessage,
  BROADCAST,
  ControlKind,
  type ControlMessage,
  decodeControl,
  LookupKind,
} from "../wire/control.ts";
import { type Peer, PeerTable } from "./peers.ts";

/** One node answering to a name: its overlay addresses, from its certificate. */
export interface Owner {
  tag: string;
  ipv4: Uint8Array;
  ipv6: Uint8Array;
}

/** What membership needs from the node. */
export interface MembershipOptions {
  identity: Identity;
  /** This node's current certificate (it changes on renewal and taint changes). */
  self: () => VerifiedCertificate;
  /** The secrets of this node's identities (realms whose access is by teams). */
  secrets?: () => readonly Uint8Array[];
  realm: Uint8Array;
  realmKey: Uint8Array;
  subjects: RealmSubjects;
  /** The control channel, once joined. */
  channel: () => ControlChannel | undefined;
  clock: () => number;
  backend?: PqBackend;
  /** A peer joined, left, or changed what it routes (after membership followed it). */
  onChange?: (event: "joined" | "left" | "changed", peer: Peer) => void;
  /** Every other verified message from a permitted peer (streams, tethers, routes) and the Guardian's. */
  onMessage: (m: AnyControlMessage) => void | Promise<void>;
  /** Whether traffic holds a peer (see PeerTable). */
  busy?: (nodeId: string) => boolean;
  log: (line: string) => void;
}

interface Asking {
  id: Uint8Array | undefined;
  /** An address lookup, which portals of subnets covering it may answer too; undefined for one-owner keys. */
  address: Uint8Array | undefined;
  done: Promise<void>;
  wake: () => void;
  timer: ReturnType<typeof setTimeout>;
}

/** After the first Found, other answerers (portals covering one address) have this long to answer too. */
const FOUND_GRACE_MS = 50;
/** One key is looked up at most this often (a name or address no one owns costs one lookup a second). */
const LOOKUP_INTERVAL_MS = 1_000;
/** Most lookups in flight at once; more answer from what is known. */
const MAX_LOOKUPS = 256;
/** One asker gets one answer to the same question at most this often. */
const ANSWER_INTERVAL_MS = 250;
/** How long a node still follows a peer's announcements after it left the table. */
const FOLLOW_AFTER_LEFT_MS = 30_000;
/** Copies of a route query sent to the `relays` queue group: nodes picked at random to ask. */
const RELAY_FANOUT = 6;

/** A node's membership of its realm. */
export class Membership {
  readonly #o: MembershipOptions;
  readonly peers: PeerTable;
  /** Lookups in flight, by what and key. */
  readonly #asking = new Map<string, Asking>();
  /** When each key's last lookup ended. */
  readonly #asked = new Map<string, number>();
  /** When each asker was last answered, per question. */
  readonly #answered = new Map<string, number>();
  /** Unsubscribers: the subjects of this node's own names, each known peer's, and each `via` it listens to. */
  #own: (() => void)[] = [];
  #ownKey = "";
  /** Subscriptions to known peers' announcements, by conflux; one whose peer left ends a while after. */
  readonly #peerSubs = new Map<string, { off: () => void; ending?: ReturnType<typeof setTimeout> }>();
  readonly #viaSubs = new Map<string, () => void>();
  #deliver: (bytes: Uint8Array) => void = () => {};

  constructor(o: MembershipOptions) {
    this.#o = o;
    this.peers = new PeerTable({
      self: o.self,
      secrets: o.secrets,
      realm: o.realm,
      realmKey: o.realmKey,
      clock: o.clock,
      backend: o.backend,
      busy: o.busy,
      ask: (sender) => void this.identify(sender),
      release: (bytes) => this.#deliver(bytes),
      onChange: (event, peer) => {
        this.#follow(event, peer);
        o.onChange?.(event, peer);
      },
    });
  }

  /** Listens on this node's subjects, and announces it to the nodes that knew it (it may have restarted). */
  async join(): Promise<void> {
    const channel = this.#o.channel()!;
    this.#deliver = (bytes) =>
      void this.peers.receive(bytes).then((m) => m && this.#dispatch(m)).catch((e) =>
        this.#o.log(`control: ${e}`)
      );
    const s = this.#o.subjects;
    channel.subscribe(s.broadcast, this.#deliver);
    channel.subscribe(s.portals, this.#deliver);
    channel.subscribe(s.relays, this.#deliver, RELAY_QUEUE);
    channel.subscribe(s.node(toHex(this.#o.identity.nodeId)), this.#deliver);
    await this.#listenAsSelf();
    await this.announce();
  }

  /**
   * Follows this node's certificate: listens to the lookups of its current tag, addresses and subnets (call after
   * every renewal; nothing changes if they did not).
   */
  async #listenAsSelf(): Promise<void> {
    const channel = this.#o.channel();
    if (!channel) return;
    const self = this.#o.self();
    const s = this.#o.subjects;
    const subjects = [
      s.whoTag(self.tag),
      s.whoAddress(self.ipv4),
      s.whoAddress(self.ipv6),
      ...(self.portal ? self.subnets.map((b) => s.whoAddress(b.subarray(0, -1), b.at(-1)!)) : []),
    ];
    const key = subjects.join(" ");
    if (key === this.#ownKey) return;
    for (const off of this.#own) off();
    this.#own = [];
    const renewed = this.#ownKey !== "";
    this.#ownKey = key; // before waiting: a call meanwhile has nothing to do
    // Other subjects than the connection's credentials allow: reconnect with the session's new ones first.
    if (renewed) await channel.reconnect();
    if (this.#ownKey === key) {
      this.#own = subjects.map((subject) => channel.subscribe(subject, this.#deliver));
    }
  }

  /**
   * Subscribes to a peer's announcements while it is in the table, and FOLLOW_AFTER_LEFT_MS after it left: a node
   * that was revoked because an administrator changed it (its taints, its tag) logs in again and announces its
   * new certificate, and one that restarted announces its new key.
   */
  #follow(event: "joined" | "left" | "changed", peer: Peer): void {
    const conflux = toHex(peer.cert.conflux);
    const sub = this.#peerSubs.get(conflux);
    if (event === "left") {
      if (sub && !sub.ending) {
        sub.ending = setTimeout(() => {
          sub.off();
          this.#peerSubs.delete(conflux);
        }, FOLLOW_AFTER_LEFT_MS);
      }
    } else if (sub) {
      clearTimeout(sub.ending);
      sub.ending = undefined;
    } else if (!peer.cert.portal) {
      // Portals announce on `portals`, which every node hears already.
      const off = this.#o.channel()?.subscribe(this.#o.subjects.peer(conflux), this.#deliver);
      if (off) this.#peerSubs.set(conflux, { off });
    }
  }

  /**
   * Announces this node's certificate to the nodes that know it (a portal: to everyone), as `kind` (an Announce,
   * or a TaintUpdate after its taints changed), or that it is leaving.
   */
  async announce(
    options: { leaving?: boolean; kind?: ControlKind.Announce | ControlKind.TaintUpdate } = {},
  ): Promise<void> {
    const channel = this.#o.channel();
    if (!channel) return;
    if (!options.leaving) await this.#listenAsSelf();
    const self = this.#o.self();
    const kind = options.kind ?? ControlKind.Announce;
    const message = await signControl(
      this.#o.identity,
      {
        kind,
        recipient: BROADCAST,
        certRef: self.ref,
        body: kind === ControlKind.Announce
          ? { certificate: self.bytes, leaving: options.leaving ? 1 : 0 }
          : { certificate: self.bytes },
      } as Parameters<typeof signControl>[1],
      this.#o.clock(),
    );
    const s = this.#o.subjects;
    channel.publish(self.portal ? s.portals : s.peer(toHex(self.conflux)), message);
  }

  /** Listens (or stops) to route queries for `dest`: while this node has an open tether to it. */
  relayFor(dest: string, open: boolean): void {
    const off = this.#viaSubs.get(dest);
    if (open && !off) {
      const sub = this.#o.channel()?.subscribe(this.#o.subjects.via(dest), this.#deliver);
      if (sub) this.#viaSubs.set(dest, sub);
    } else if (!open && off) {
      off();
      this.#viaSubs.delete(dest);
    }
  }

  /** Asks the nodes with a tether to `dest`, and a few at random, whether they would relay to it. */
  async askForRelays(dest: Uint8Array): Promise<void> {
    const message = await signControl(this.#o.identity, {
      kind: ControlKind.RouteQuery,
      recipient: BROADCAST,
      certRef: this.#o.self().ref,
      body: { destination: dest },
    }, this.#o.clock());
    const channel = this.#o.channel();
    channel?.publish(this.#o.subjects.via(toHex(dest)), message);
    for (let i = 0; i < RELAY_FANOUT; i++) channel?.publish(this.#o.subjects.relays, message);
  }

  /** Asks node `nodeId` who it is (its certificate lands in the peer table if this node may talk to it). */
  identify(nodeId: Uint8Array): Promise<void> {
    return this.#lookup(LookupKind.Node, nodeId, toHex(nodeId));
  }

  /** The nodes with this tag that this node may reach, itself included; looks the tag up when none is known. */
  async lookup(tag: string): Promise<Owner[]> {
    const known = this.#owners(tag);
    if (known.length > 0 || !/^[a-z0-9-]{1,63}$/.test(tag)) return known;
    await this.#lookup(LookupKind.Tag, new TextEncoder().encode(tag), tag);
    return this.#owners(tag);
  }

  #owners(tag: string): Owner[] {
    const certs = [this.#o.self(), ...this.peers.list().map((p) => p.cert)].filter((c) => c.tag === tag);
    return certs.map((c) => ({ tag: c.tag, ipv4: c.ipv4, ipv6: c.ipv6 }));
  }

  /** Looks up who owns `address` (4 or 16 bytes): its overlay owner, or the portals covering it. */
  resolve(address: Uint8Array): Promise<void> {
    return this.#lookup(LookupKind.Address, address, toHex(address));
  }

  /**
   * Publishes a Lookup where only its owner hears it; resolves at the first Found (and FOUND_GRACE_MS after, for
   * other answerers) or after LOOKUP_WAIT_MS. The answer itself lands in the peer table.
   */
  #lookup(what: LookupKind, key: Uint8Array, name: string): Promise<void> {
    const slot = `${what}:${name}`;
    const inFlight = this.#asking.get(slot);
    if (inFlight) return inFlight.done;
    const now = this.#o.clock();
    const channel = this.#o.channel();
    if (
      !channel || now - (this.#asked.get(slot) ?? -Infinity) < LOOKUP_INTERVAL_MS ||
      this.#asking.size >= MAX_LOOKUPS
    ) {
      return Promise.resolve();
    }
    let wake!: () => void;
    const done = new Promise<void>((resolve) => wake = resolve);
    const asking: Asking = {
      id: undefined,
      address: what === LookupKind.Address ? key : undefined,
      done,
      wake,
      timer: setTimeout(wake, LOOKUP_WAIT_MS),
    };
    this.#asking.set(slot, asking);
    void done.then(() => {
      clearTimeout(asking.timer);
      this.#asking.delete(slot);
      const end = this.#o.clock();
      prune(this.#asked, end - LOOKUP_INTERVAL_MS);
      this.#asked.set(slot, end);
    });
    const self = this.#o.self();
    const s = this.#o.subjects;
    const direct = what === LookupKind.Node;
    void signControl(this.#o.identity, {
      kind: ControlKind.Lookup,
      recipient: direct ? key : BROADCAST,
      certRef: self.ref,
      body: { certificate: self.bytes, what, key },
    }, now).then((message) => {
      asking.id = decodeControl(message).id;
      channel.publish(
        direct ? s.node(name) : what === LookupKind.Tag ? s.whoTag(name) : s.whoAddress(key),
        message,
      );
    }, wake);
    return done;
  }

  /** Verified messages: lookups and their answers are membership's; the rest goes on. */
  async #dispatch(m: AnyControlMessage): Promise<void> {
    if (m.kind === ControlKind.Lookup) return await this.#answer(m);
    if (m.kind === ControlKind.Found) return this.#found(m);
    if (m.kind === ControlKind.Announce || m.kind === ControlKind.TaintUpdate) return;
    await this.#o.onMessage(m);
  }

  /** A verified Lookup from a permitted peer (the table has its certificate now): answers when it names us. */
  async #answer(m: ControlMessage<ControlKind.Lookup>): Promise<void> {
    const self = this.#o.self();
    if (!names(self, m.body.what, m.body.key)) return;
    const asker = toHex(m.sender);
    const question = `${asker}/${m.body.what}/${toHex(m.body.key)}`;
    const now = this.#o.clock();
    if (now - (this.#answered.get(question) ?? -Infinity) < ANSWER_INTERVAL_MS) return;
    prune(this.#answered, now - ANSWER_INTERVAL_MS);
    this.#answered.set(question, now);
    const answer = await signControl(this.#o.identity, {
      kind: ControlKind.Found,
      recipient: m.sender,
      certRef: self.ref,
      body: { query: m.id, certificate: self.bytes },
    }, now);
    this.#o.channel()?.publish(this.#o.subjects.node(asker), answer);
  }

  /**
   * A verified Found (its certificate is in the table already): wakes the lookup it answers, at once when only one
   * node can answer it (a tag, a node id, an overlay address answered by its owner), else a moment later so that
   * every portal covering the address can answer.
   */
  #found(m: ControlMessage<ControlKind.Found>): void {
    const cert = this.peers.get(toHex(m.sender))?.cert;
    for (const asking of this.#asking.values()) {
      if (!asking.id || !bytesEqual(asking.id, m.body.query)) continue;
      clearTimeout(asking.timer);
      const a = asking.address;
      const owner = !a || (cert !== undefined && (bytesEqual(a, cert.ipv4) || bytesEqual(a, cert.ipv6)));
      if (owner) asking.wake();
      else asking.timer = setTimeout(asking.wake, FOUND_GRACE_MS);
    }
  }

  /** Ends lookups in flight and says goodbye to the nodes that know this one. */
  async close(): Promise<void> {
    for (const asking of this.#asking.values()) asking.wake();
    for (const sub of this.#peerSubs.values()) clearTimeout(sub.ending);
    await this.announce({ leaving: true }).catch(() => {});
  }
}

/** Whether a Lookup of (what, key) names this node: its tag, its node id, an address of its or of its subnets. */
function names(self: VerifiedCertificate, what: LookupKind, key: Uint8Array): boolean {
  switch (what) {
    case LookupKind.Tag:
      return new TextDecoder().decode(key) === self.tag;
    case LookupKind.Node:
      return bytesEqual(key, self.nodeId);
    case LookupKind.Address:
      if (bytesEqual(key, self.ipv4) || bytesEqual(key, self.ipv6)) return true;
      return !!self.portal && self.subnets.some((b) =>
        b.length - 1 === key.length &&
        contains({ version: key.length === 4 ? 4 : 6, address: b.subarray(0, -1), prefix: b.at(-1)! }, key)
      );
  }
}

/** Drops entries older than `before`, so maps keyed by remote input stay small. */
function prune(map: Map<string, number>, before: number): void {
  if (map.size < 1024) return;
  for (const [key, at] of map) if (at < before) map.delete(key);
}
