/**
 * The peer table: which nodes of the realm this node may talk to, learned from the certificates their signed
 * messages carry (announcements, lookups and their answers). Peers are learned on demand, not from realm-wide
 * broadcasts: a certificate travels once, and later messages name it by reference (certRef).
 *
 * A certificate is believed only when: the message decodes; the certificate verifies against the realm key and is
 * valid now; its key hashes to the sender id and the message names that certificate; the message's own signature
 * verifies under that key (ControlVerifier: time, replay, recipient); and access control passes. Anything else is
 * dropped and counted by reason.
 *
 * A message from a sender this node knows no certificate for (it learned us, we have not learned it: a relay
 * asked by a stranger, a node that restarted with a new key) is held for a moment and the sender is asked who it
 * is (`ask`: a Lookup with our certificate); its answer releases the held messages (`release`), which are then
 * checked like any other.
 *
 * A peer leaves the table when it says so (leaving), when its certificate expires (a renewed one replaces it
 * first), when access control no longer allows it, when it is revoked, and when this node has had nothing to do
 * with it for PEER_IDLE_MS (and `busy` says no traffic holds it).
 *
 * Revocation: the Guardian's Revoke (realm-signed, verified like any message) and the list in each login answer
 * void every certificate of a conflux issued at or before a time. The table then drops, synchronously, every peer
 * holding such a certificate and every cached certificate of it (so messages naming one by certRef find no key),
 * and from then on refuses such a certificate however it arrives (reason "revoked"). This is the one place
 * revocations are checked.
 * @module
 */

import {
  certificateRef,
  CertificateRejected,
  type VerifiedCertificate,
  verifyCertificate,
} from "../crypto/certificate.ts";
import { ControlRejected, ControlVerifier } from "../crypto/control_signing.ts";
import { bytesEqual, toHex } from "../crypto/identity.ts";
import type { PqBackend } from "../crypto/pq.ts";
import { HELD_MESSAGE_MS, MAX_HELD_PER_SENDER, MAX_HELD_SENDERS, PEER_IDLE_MS } from "../tuning.ts";
import { WireError } from "../wire/bytes.ts";
import { type AnyControlMessage, ControlKind, decodeControl } from "../wire/control.ts";
import { mayCommunicate } from "./access.ts";
import { Revocations } from "./revocations.ts";

/** A node this node may talk to. */
export interface Peer {
  cert: VerifiedCertificate;
  /** When this node last heard from it or had traffic with it (this node's clock). */
  lastSeen: number;
}

/** Why an incoming control message was dropped (a metrics dimension). */
export type DropReason =
  | "malformed"
  | "bad-certificate"
  | "forbidden"
  /** A certificate the realm revoked (its conflux's certificates issued at or before a time are void). */
  | "revoked"
  /** A route answer nobody asked for, from a relay that may not carry traffic to that destination, or from one in
   * a region that traffic may not cross. */
  | "route:unasked"
  | "route:forbidden-relay"
  | "route:outside-regions"
  /** More messages of a kind from one sender than it may send (see SenderLimits). */
  | "rate-limited"
  /** A certificate older than one this node holds for the same node (or another session of its conflux). */
  | "superseded"
  | ControlRejected["reason"]
  | CertificateRejected["reason"];

/** What the table needs to know about this node and its realm. */
export interface PeerTableOptions {
  /** This node's current certificate (it changes on renewal and taint changes). */
  self: () => VerifiedCertificate;
  /** The secrets of this node's identities (realms whose access is by teams). */
  secrets?: () => readonly Uint8Array[];
  realm: Uint8Array;
  realmKey: Uint8Array;
  clock: () => number;
  /** The post-quantum implementation (default: the fastest the runtime has). */
  backend?: PqBackend;
  /** A peer joined or left, or changed what it routes (its addresses or portal subnets). */
  onChange?: (event: "joined" | "left" | "changed", peer: Peer) => void;
  /** Asks a sender this node has no certificate for who it is (at most once a second per sender). */
  ask?: (sender: Uint8Array) => void;
  /** Hands back a held message once its sender's certificate came (to be received again). */
  release?: (bytes: Uint8Array) => void;
  /** Whether traffic still holds a peer (an open tether, a stream in use): an idle table entry is kept then. */
  busy?: (nodeId: string) => boolean;
}

/** Messages waiting for their sender's certificate. */
interface Held {
  since: number;
  asked: number;
  messages: Uint8Array[];
}

/** Peers keyed by node id (hex), plus the certificates seen (by reference) for verifying other messages. */
export class PeerTable {
  readonly #o: PeerTableOptions;
  readonly #peers = new Map<string, Peer>();
  readonly #certs = new Map<string, VerifiedCertificate>();
  readonly #verifier: ControlVerifier;
  readonly #revocations = new Revocations();
  readonly #held = new Map<string, Held>();
  /** Certificates whose realm signature verified, by reference (a bounded cache; not a source of keys). */
  readonly #verified = new Map<string, VerifiedCertificate>();
  readonly #limits: SenderLimits;
  /** Messages dropped, by reason. */
  readonly dropped = new Map<DropReason, number>();

  constructor(options: PeerTableOptions) {
    this.#o = options;
    this.#limits = new SenderLimits(options.clock);
    this.#verifier = new ControlVerifier({
      self: options.self().nodeId,
      clock: options.clock,
      realmKey: options.realmKey,
      backend: options.backend,
      keys: (sender, ref) => {
        const cert = this.#certs.get(toHex(ref));
        return cert && bytesEqual(cert.nodeId, sender) && options.clock() < cert.notAfter
          ? cert.nodeKey
          : undefined;
      },
    });
  }

  /** Counts a message refused after the table let it through (by the handler of its kind). */
  count(reason: DropReason): undefined {
    return this.#drop(reason);
  }

  #drop(reason: DropReason): undefined {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
    return undefined;
  }

  /** Peers currently in the table. */
  list(): Peer[] {
    return [...this.#peers.values()];
  }

  get(nodeId: string): Peer | undefined {
    return this.#peers.get(nodeId);
  }

  /** Revocations held now. */
  get revocations(): number {
    return this.#revocations.size;
  }

  /** Whether the realm revoked `cert` (this node's own included). */
  voids(cert: { conflux: Uint8Array; notBefore: number }): boolean {
    return this.#revocations.voids(cert);
  }

  /**
   * Voids every certificate of `conflux` issued at or before `before` (ms): drops at once each peer holding one
   * (its tethers, streams and routes go with the "left" event) and each cached one, and refuses them from now on.
   * For a Revoke, the table calls this itself; the agent calls it with the list of each login answer.
   */
  revoke(conflux: Uint8Array, before: number): void {
    if (!this.#revocations.add(conflux, before, this.#o.clock())) return;
    for (const [ref, c] of this.#certs) if (this.#revocations.voids(c)) this.#certs.delete(ref);
    for (const [id, p] of this.#peers) if (this.#revocations.voids(p.cert)) this.#remove(id);
  }

  /**
   * Handles raw bytes from the control channel. Messages that carry the sender's certificate (announcements,
   * taint updates, DNS questions and answers) also update the table: each is a signed "I am here". Every
   * verified message from a peer this node may talk to is returned for its handler. Never throws for bad input:
   * it is dropped and counted.
   */
  async receive(bytes: Uint8Array): Promise<AnyControlMessage | undefined> {
    let m: AnyControlMessage;
    try {
      m = decodeControl(bytes);
    } catch (error) {
      if (error instanceof WireError) return this.#drop("malformed");
      throw error;
    }
    const self = this.#o.self();
    if (bytesEqual(m.sender, self.nodeId)) return undefined; // our own broadcast, echoed back
    // What costs no signature work comes first: recipient, date, replay, and the sender's budget for this kind.
    try {
      this.#verifier.check(m);
    } catch (error) {
      if (error instanceof ControlRejected) return this.#drop(error.reason);
      throw error;
    }
    const budget = m.kind === ControlKind.Revoke ? undefined : this.#limits.budget(m.sender, m.kind);
    if (budget && !budget.left()) return this.#drop("rate-limited");
    const carried = carriedCertificate(m);
    let cert: VerifiedCertificate | undefined;
    if (carried) {
      const checked = await this.#certificate(carried);
      if (typeof checked === "string") return this.#drop(checked);
      cert = checked;
      if (!bytesEqual(cert.nodeId, m.sender) || !bytesEqual(cert.ref, m.certRef)) {
        return this.#drop("bad-certificate");
      }
      // Before any work on the message's signature.
      if (this.#revocations.voids(cert)) return this.#drop("revoked");
    }
    try {
      m = await this.#verifier.verify(bytes, cert?.nodeKey);
    } catch (error) {
      if (error instanceof ControlRejected && error.reason === "unknown-sender" && !cert) {
        return this.#hold(m.sender, bytes);
      }
      if (error instanceof ControlRejected) return this.#drop(error.reason);
      throw error;
    }
    budget?.spend(); // only what verified counts against a sender: a forger cannot spend another's budget
    if (m.kind === ControlKind.Revoke) {
      // From the Guardian, signed by the realm key (the verifier accepts a Revoke from nothing else).
      this.revoke(m.body.conflux, m.body.before);
      return m;
    }
    const id = toHex(m.sender);
    if (!cert) {
      // Other messages count only from peers we may talk to.
      return this.#peers.has(id) ? m : this.#drop("forbidden");
    }
    // A revocation may have come while the signature was checked: it holds all the same.
    if (this.#revocations.voids(cert)) return this.#drop("revoked");
    // Only now, its message signed by its key, does the certificate vouch for that key in other messages.
    this.#certs.set(toHex(cert.ref), cert);
    this.#releaseHeld(id);
    const known = this.#peers.get(id);
    const leaving = m.kind === ControlKind.Announce && m.body.leaving === 1;
    if (leaving || !mayCommunicate(self, cert, this.#o.secrets?.())) {
      if (known) this.#remove(id);
      return leaving ? undefined : this.#drop("forbidden");
    }
    // Never back to an older certificate of the node, nor to an older session of it (a node alternating two
    // sessions would make its peers flap, and reroute at each flap).
    const newer = (p: Peer | undefined) => p !== undefined && p.cert.notBefore > cert.notBefore;
    const sessions = [...this.#peers.values()].filter((p) => bytesEqual(p.cert.conflux, cert.conflux));
    if (newer(known) || sessions.some(newer)) return this.#drop("superseded");
    if (!known) {
      // The same conflux under a new key: it restarted. Its old self is gone.
      for (const p of sessions) this.#remove(toHex(p.cert.nodeId));
    }
    const peer = { cert, lastSeen: this.#o.clock() };
    this.#peers.set(id, peer);
    if (!known) this.#o.onChange?.("joined", peer);
    else if (!sameRoutes(known.cert, cert)) this.#o.onChange?.("changed", peer);
    return m;
  }

  /**
   * A carried certificate, verified against the realm key once per distinct certificate (a copy of one seen before
   * costs a hash, not a signature check), and valid now; else why not.
   */
  async #certificate(bytes: Uint8Array): Promise<VerifiedCertificate | DropReason> {
    const ref = toHex(await certificateRef(bytes));
    const now = this.#o.clock();
    let cert = this.#verified.get(ref);
    if (!cert) {
      try {
        cert = await verifyCertificate(bytes, {
          realm: this.#o.realm,
          realmKey: this.#o.realmKey,
          now,
          backend: this.#o.backend,
        });
      } catch (error) {
        if (error instanceof CertificateRejected) return error.reason;
        throw error;
      }
      if (this.#verified.size >= VERIFIED_CERTIFICATES) {
        this.#verified.delete(this.#verified.keys().next().value!);
      }
      this.#verified.set(ref, cert);
    }
    if (now >= cert.notAfter) return "expired";
    return cert;
  }

  /**
   * Keeps a message whose sender is unknown until its certificate comes (bounded per sender, in senders, and in
   * time: HELD_MESSAGE_MS), asking the sender who it is. Counted as "unknown-sender" if it is never released.
   */
  #hold(sender: Uint8Array, bytes: Uint8Array): undefined {
    const id = toHex(sender);
    const now = this.#o.clock();
    let held = this.#held.get(id);
    if (!held) {
      if (this.#held.size >= MAX_HELD_SENDERS || !this.#o.ask) return this.#drop("unknown-sender");
      this.#held.set(id, held = { since: now, asked: -Infinity, messages: [] });
    }
    if (held.messages.length >= MAX_HELD_PER_SENDER) return this.#drop("unknown-sender");
    held.messages.push(bytes.slice());
    if (now - held.asked >= 1_000) {
      held.asked = now;
      this.#o.ask?.(sender);
    }
    return undefined;
  }

  /** Hands back what was held for a sender whose certificate just came. */
  #releaseHeld(id: string): void {
    const held = this.#held.get(id);
    if (!held) return;
    this.#held.delete(id);
    for (const bytes of held.messages) queueMicrotask(() => this.#o.release?.(bytes));
  }

  #remove(id: string): void {
    const peer = this.#peers.get(id);
    if (!peer) return;
    this.#peers.delete(id);
    this.#o.onChange?.("left", peer);
  }

  /**
   * Drops peers whose certificate expired, peers idle for PEER_IDLE_MS that no traffic holds, stale certificates,
   * held messages whose sender never answered, and revocations no valid certificate can fall under any more.
   */
  expire(): void {
    const now = this.#o.clock();
    for (const [id, p] of this.#peers) {
      if (now >= p.cert.notAfter) this.#remove(id);
      else if (this.#o.busy?.(id)) {
        p.lastSeen = now;
        // A peer in use renews before its certificate ends and tells the nodes that know it; if that news was
        // lost (the Master was away), ask it for its current certificate before this one runs out.
        if (p.cert.notAfter - now < REFRESH_BEFORE_EXPIRY_MS) this.#o.ask?.(p.cert.nodeId);
      } else if (now - p.lastSeen > PEER_IDLE_MS) this.#remove(id);
    }
    for (const [id, held] of this.#held) {
      if (now - held.since < HELD_MESSAGE_MS) continue;
      this.#held.delete(id);
      for (const _ of held.messages) this.#drop("unknown-sender");
    }
    for (const [ref, c] of this.#certs) if (now >= c.notAfter) this.#certs.delete(ref);
    for (const [ref, c] of this.#verified) if (now >= c.notAfter) this.#verified.delete(ref);
    this.#limits.expire(now);
    this.#revocations.expire(now);
  }

  /** Re-applies access control after this node's own taints changed. */
  recheck(): void {
    const self = this.#o.self();
    for (const [id, p] of this.#peers) {
      if (!mayCommunicate(self, p.cert, this.#o.secrets?.())) this.#remove(id);
    }
  }
}

/** The sender's certificate, for the kinds that carry one. */
function carriedCertificate(m: AnyControlMessage): Uint8Array | undefined {
  switch (m.kind) {
    case ControlKind.Announce:
    case ControlKind.TaintUpdate:
    case ControlKind.Lookup:
    case ControlKind.Found:
      return m.body.certificate;
    default:
      return undefined;
  }
}

/** Whether two certificates route the same addresses (overlay addresses, portal flag and subnets). */
function sameRoutes(a: VerifiedCertificate, b: VerifiedCertificate): boolean {
  return bytesEqual(a.ipv4, b.ipv4) && bytesEqual(a.ipv6, b.ipv6) && a.portal === b.portal &&
    a.subnets.length === b.subnets.length && a.subnets.every((s, i) => bytesEqual(s, b.subnets[i]!));
}

/** A peer in use whose certificate ends within this is asked for its current one (once a second at most). */
const REFRESH_BEFORE_EXPIRY_MS = 60_000;
/** Verified certificates remembered by reference. */
const VERIFIED_CERTIFICATES = 4096;
/** Senders whose budgets are tracked at once (the oldest forgotten first). */
const MAX_BUDGETS = 8192;

/**
 * Messages per second and burst one sender may send of each kind. Generous for what a node does (a burst of ICE
 * candidates, lookups of a few dozen addresses at once), small against a flood.
 */
const KIND_RATES: Record<Exclude<ControlKind, ControlKind.Revoke>, [perSecond: number, burst: number]> = {
  [ControlKind.Announce]: [2, 10],
  [ControlKind.TaintUpdate]: [2, 10],
  [ControlKind.StreamRequest]: [10, 20],
  [ControlKind.StreamResponse]: [10, 20],
  [ControlKind.TetherSignal]: [50, 100],
  [ControlKind.Found]: [50, 100],
  [ControlKind.RouteQuery]: [10, 20],
  [ControlKind.RouteAnswer]: [20, 40],
  [ControlKind.Lookup]: [50, 100],
  // Reports are for the Guardians: a node takes none (one sent to it is a sender's mistake or a probe).
  [ControlKind.Report]: [0, 0],
};

/** A token bucket: `left()` says whether a message may be checked, `spend()` takes one once it verified. */
interface Budget {
  left(): boolean;
  spend(): void;
}

/** Per sender and kind, token buckets; bounded in senders. */
class SenderLimits {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(readonly clock: () => number) {}

  budget(sender: Uint8Array, kind: Exclude<ControlKind, ControlKind.Revoke>): Budget {
    const key = `${toHex(sender)}/${kind}`;
    const [rate, burst] = KIND_RATES[kind];
    const refill = () => {
      const now = this.clock();
      let b = this.#buckets.get(key);
      if (!b) {
        if (this.#buckets.size >= MAX_BUDGETS) this.#buckets.delete(this.#buckets.keys().next().value!);
        this.#buckets.set(key, b = { tokens: burst, at: now });
      }
      b.tokens = Math.min(burst, b.tokens + (now - b.at) / 1000 * rate);
      b.at = now;
      return b;
    };
    return { left: () => refill().tokens >= 1, spend: () => void (refill().tokens -= 1) };
  }

  /** Forgets buckets that are full again (their sender has been quiet). */
  expire(now: number): void {
    for (const [key, b] of this.#buckets) {
      const [rate, burst] = KIND_RATES[Number(key.slice(key.indexOf("/") + 1)) as keyof typeof KIND_RATES];
      if (b.tokens + (now - b.at) / 1000 * rate >= burst) this.#buckets.delete(key);
    }
  }
}
