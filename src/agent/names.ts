/**
 * Names: which nodes answer to `<tag>.veilnet` for this node. Resolution is a view of verified control-plane
 * state, never a registry: this node itself, then the peer table (nodes whose signed announcements passed
 * access control), and for a tag no peer carries, a signed question to the realm whose owners answer with their
 * certificates. Those answers pass the same checks as announcements (the peer table verifies them before they
 * reach here), so an address only ever comes from a certificate the realm signed, for a node this one may reach.
 * @module
 */

import type { VerifiedCertificate } from "../crypto/certificate.ts";
import { signControl } from "../crypto/control_signing.ts";
import { bytesEqual, type Identity, toHex } from "../crypto/identity.ts";
import {
  DNS_ANSWER_GRACE_MS,
  DNS_ANSWER_INTERVAL_MS,
  DNS_ASK_INTERVAL_MS,
  DNS_ASK_WAIT_MS,
  MAX_DNS_ASKS,
} from "../tuning.ts";
import { BROADCAST, ControlKind, type ControlMessage, decodeControl } from "../wire/control.ts";

/** One node answering to a name: its overlay addresses, from its certificate. */
export interface Owner {
  tag: string;
  ipv4: Uint8Array;
  ipv6: Uint8Array;
}

/** What name resolution needs from the agent. */
export interface NamesOptions {
  identity: Identity;
  /** This node's current certificate. */
  self: () => VerifiedCertificate;
  /** Certificates of the peers this node may reach now. */
  peers: () => Iterable<VerifiedCertificate>;
  /** Publishes a signed control message to one node (hex id), or to the realm when `to` is undefined. */
  send: (to: string | undefined, message: Uint8Array) => void;
  clock: () => number;
}

interface Asking {
  id: Uint8Array;
  done: Promise<void>;
  wake: () => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Name resolution over the peer table and the control plane. */
export class Names {
  readonly #o: NamesOptions;
  /** Questions in flight, by tag. */
  readonly #asking = new Map<string, Asking>();
  /** When each tag's last question ended (a tag no one owns is asked once per DNS_ASK_INTERVAL_MS at most). */
  readonly #asked = new Map<string, number>();
  /** When each asker was last answered. */
  readonly #answered = new Map<string, number>();

  constructor(options: NamesOptions) {
    this.#o = options;
  }

  /** The nodes with this tag that this node may reach, itself included; asks the realm when none is known. */
  async lookup(tag: string): Promise<Owner[]> {
    const known = this.#owners(tag);
    if (known.length > 0) return known;
    await this.#ask(tag);
    return this.#owners(tag);
  }

  #owners(tag: string): Owner[] {
    const self = this.#o.self();
    const certs = [self, ...this.#o.peers()].filter((c) => c.tag === tag);
    return certs.map((c) => ({ tag: c.tag, ipv4: c.ipv4, ipv6: c.ipv6 }));
  }

  /** Asks the realm who owns `tag`; resolves at the first answer or after DNS_ASK_WAIT_MS. */
  #ask(tag: string): Promise<void> {
    const inFlight = this.#asking.get(tag);
    if (inFlight) return inFlight.done;
    const now = this.#o.clock();
    if (
      now - (this.#asked.get(tag) ?? -Infinity) < DNS_ASK_INTERVAL_MS || this.#asking.size >= MAX_DNS_ASKS
    ) {
      return Promise.resolve();
    }
    let wake!: () => void;
    const done = new Promise<void>((resolve) => wake = resolve);
    const asking: Asking = { id: new Uint8Array(16), done, wake, timer: setTimeout(wake, DNS_ASK_WAIT_MS) };
    this.#asking.set(tag, asking);
    void done.then(() => {
      clearTimeout(asking.timer);
      this.#asking.delete(tag);
      const end = this.#o.clock();
      prune(this.#asked, end - DNS_ASK_INTERVAL_MS);
      this.#asked.set(tag, end);
    });
    const self = this.#o.self();
    void signControl(this.#o.identity, {
      kind: ControlKind.DnsQuery,
      recipient: BROADCAST,
      certRef: self.ref,
      body: { certificate: self.bytes, tag },
    }, now).then((message) => {
      asking.id = decodeControl(message).id;
      this.#o.send(undefined, message);
    }, wake);
    return done;
  }

  /** A verified question from a permitted peer: answer it when this node owns the tag (rate-limited per asker). */
  async onQuery(m: ControlMessage<ControlKind.DnsQuery>): Promise<void> {
    const self = this.#o.self();
    const asker = toHex(m.sender);
    const now = this.#o.clock();
    if (m.body.tag !== self.tag || now - (this.#answered.get(asker) ?? -Infinity) < DNS_ANSWER_INTERVAL_MS) {
      return;
    }
    prune(this.#answered, now - DNS_ANSWER_INTERVAL_MS);
    this.#answered.set(asker, now);
    const answer = await signControl(this.#o.identity, {
      kind: ControlKind.DnsAnswer,
      recipient: m.sender,
      certRef: self.ref,
      body: { query: m.id, certificate: self.bytes },
    }, now);
    this.#o.send(asker, answer);
  }

  /**
   * A verified answer from a permitted peer (the peer table has already taken its certificate): wakes the
   * question it answers, a moment later so that other owners of the tag can answer too.
   */
  onAnswer(m: ControlMessage<ControlKind.DnsAnswer>): void {
    for (const asking of this.#asking.values()) {
      if (!bytesEqual(asking.id, m.body.query)) continue;
      clearTimeout(asking.timer);
      asking.timer = setTimeout(asking.wake, DNS_ANSWER_GRACE_MS);
    }
  }

  /** Ends every question in flight (their lookups return what is known). */
  close(): void {
    for (const asking of this.#asking.values()) asking.wake();
  }
}

/** Drops entries older than `before`, so maps keyed by remote input stay small. */
function prune(map: Map<string, number>, before: number): void {
  if (map.size < 1024) return;
  for (const [key, at] of map) if (at < before) map.delete(key);
}
