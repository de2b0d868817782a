/**
 * The data plane of one node. One packet, in order:
 *
 * ```
 * TUN.readBatch ─▶ route (destination address → permitted peer) ─▶ Egress[peer]: batch up to 25 packets
 *   ─▶ Streams: the peer's sending stream (handshake over the control channel when there is none)
 *   ─▶ StreamSealer.seal (AES-256-GCM; several in flight at once: the egress widens under load)
 *   ─▶ Tethers.send (the link to the next hop: WebRTC, or its direct TCP connection), or, until that is open,
 *      the backup pipeline (the Master)
 * ... next hop: Tethers ─▶ Anchor.receive ─┬▶ for this node: Streams.opener(stream id) ─▶ open + replay check
 *                                         │     ─▶ unpack ─▶ TUN.writeBatch
 *                                         └▶ for another: relay unchanged on the direct tether (TTL - 1)
 * ```
 * The next hop is the destination itself or a relay, chosen by the route learner.
 * Backpressure, not drops: the TUN is read again only when every egress has room (in-flight seals below the
 * window, its tether below the high-water mark, the backup pipeline's unflushed bytes below their window). A
 * destination whose stream is still forming (one handshake) holds a bounded number of batches; beyond that its
 * packets are dropped (counted), so one unreachable peer cannot stall traffic to the others. Nothing waits for a
 * tether: the backup pipeline carries a batch until the tether to its next hop is open.
 * @module
 */

import type { Streams } from "./streams.ts";
import type { AddressFacts } from "../agent/access.ts";
import type { Lane } from "../lane/lane.ts";
import type { LaneStats } from "../lane/protocol.ts";
import type { Tethers } from "../tether/tethers.ts";
import { bytesEqual, toHex } from "../crypto/identity.ts";
import { StreamError, type StreamOpener, type StreamSealer } from "../crypto/stream.ts";
import { destinationOf } from "../tun/ip.ts";
import {
  BACKUP_SHOWN_MS,
  BACKUP_WINDOW_BYTES,
  EGRESS_IDLE_MS,
  MAX_INFLIGHT_SEALS,
  MAX_PENDING_BATCHES,
  MAX_UNROUTED_ADDRESSES,
  MAX_UNROUTED_PACKETS,
  REORDER_HOLD_MS,
  REORDER_MAX_HELD,
  SPILL_BYTES,
  SPREAD_BATCH_BYTES,
  SPREAD_HOLD_MS,
  SPREAD_MAX_BYTES_PER_S,
  TETHER_RETRY_MAX_MS,
  TETHER_RETRY_MIN_MS,
} from "../tuning.ts";
import { WireError } from "../wire/bytes.ts";
import {
  BatchBuilder,
  type BatchEntry,
  decrementTtl,
  readDataHeader,
  unpackEntries,
} from "../wire/envelope.ts";
import { NO_OFFLOAD, OFFLOAD_HEADER_BYTES, plainPackets } from "../tun/offload.ts";
import { readBytes, type Tun } from "../tun/tun.ts";
import { Reorder } from "./reorder.ts";

/** Why a packet or message was dropped (a metrics dimension). */
export type DataDrop =
  | "no-peer"
  | "not-ready"
  | "send-failed"
  | "malformed"
  | "unknown-stream"
  | "refused"
  | "relay-forbidden"
  | "relay-reflection"
  | "ttl-expired"
  | "spoofed-source"
  | "foreign-destination"
  | "region";

/**
 * Where the data plane's thread spends its time, cumulative milliseconds by stage (for `status --json` and the
 * tunnel benchmark's breakdown): reading the TUN, routing and batching, sealing (the call: AES-GCM of a large batch
 * runs on WebCrypto's threads, of a small one here), handing to the link, taking a message from a link (and its
 * opening, when small), unpacking and checking an opened batch, writing the TUN.
 */
export interface DataStages {
  tunRead: number;
  batch: number;
  seal: number;
  linkSend: number;
  receive: number;
  open: number;
  tunWrite: number;
}

/** Traffic with one peer, in IP bytes and packets. */
export interface Traffic {
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
}

/** What the data plane needs around it. */
export interface AnchorOptions {
  tun: Tun;
  self: Uint8Array;
  streams: Streams;
  tethers: Tethers;
  /** The permitted peer (node id hex) holding an overlay address, if any. */
  route: (destination: Uint8Array) => string | undefined;
  /**
   * Looks up who holds an address no peer is known for; its packets wait (a few, briefly) and are routed again
   * once it resolves. Without it they are dropped ("no-peer").
   */
  resolve?: (destination: Uint8Array) => Promise<void>;
  /**
   * Whether a packet opened from `peer`'s stream may be written to the TUN; a drop reason if not. Without it
   * every packet is written.
   */
  admit?: (peer: string, packet: Uint8Array) => DataDrop | undefined;
  /** The next hop towards a peer (itself, or a relay), from the route learner. */
  nextHop: (destination: string) => string;
  /**
   * The hops traffic to `destination` may spread over when its next hop is backlogged (concurrent multi-link,
   * from the route learner), open or not; without it, every batch takes its next hop.
   */
  paths?: (destination: string) => string[];
  /** A next hop could not carry traffic (its tether would not form). */
  hopFailed: (destination: string, hop: string) => void;
  /** Whether this node may carry a message from `from` to `destination` (access control with both). */
  mayRelay: (from: string, destination: string) => boolean;
  /** Sends a sealed message over the control channel (the backup pipeline), when no tether can carry it. */
  backup: (destination: string, message: Uint8Array) => void;
  /**
   * Whether the backup pipeline (the Master, a third party) may carry traffic from `from` (undefined: this node)
   * to `destination` (geo-location control); without it, always. When it may not, a message with no open tether
   * is dropped ("region") and the tether forms: the traffic waits for a path it may take.
   */
  mayBackup?: (from: string | undefined, destination: string) => boolean;
  /**
   * The process's data-plane worker, when it reads the TUN (src/lane/): this data plane hands it the fast path,
   * traffic to a peer whose preferred hop is its direct connection, with that peer's streams.
   */
  lane?: Lane;
  /** The hop traffic to `destination` should take now, without exploring (needed with `lane`). */
  preferredHop?: (destination: string) => string;
  /** A peer's certificate (what it may send us), undefined once it is gone; and this node's (needed with `lane`). */
  facts?: (peer: string) => AddressFacts | undefined;
  selfFacts?: () => AddressFacts;
  /** Resolves once the control channel has handed what was published to the Master (backpressure). */
  backupFlush: () => Promise<void>;
  clock: () => number;
  log: (line: string) => void;
}

/** Sending to one destination: a batch being filled and the seals in flight. */
class Egress {
  readonly builder = new BatchBuilder();
  readonly inflight = new Set<Promise<void>>();
  /** Settles once the latest batch sealed has been handed on: batches leave in the order they were read. */
  sent: Promise<void> = Promise.resolve();
  pending = 0;
  lastUsed: number;
  /** The next hop of the last batch sent (what status reports as the path, with `backupUntil`). */
  hop: string;
  /** Until when status shows this destination's traffic on the backup pipeline (ms). */
  backupUntil = 0;
  /** When a batch last found no path it may take (geo-location control), ms; 0 if never. */
  blockedAt = 0;
  /** When the path of a batch last had a backlog (SPILL_BYTES waiting), ms. */
  backloggedAt = -Infinity;

  /** Whether this destination spreads over several paths at `now` (a backlog lately). */
  spreading(now: number): boolean {
    return now - this.backloggedAt < SPREAD_HOLD_MS;
  }

  /** Bytes this thread sent in the current second, from when, and the rate of the last whole second (B/s). */
  #sent = 0;
  #since = 0;
  rate = 0;

  /** Counts `bytes` sent at `now` towards the rate. */
  count(bytes: number, now: number): void {
    if (now - this.#since >= 1_000) {
      this.rate = now - this.#since < 2_000 ? this.#sent * 1_000 / (now - this.#since) : 0;
      this.#sent = 0;
      this.#since = now;
    }
    this.#sent += bytes;
  }
  /** Batches sent per next hop ("backup" for the pipeline), halved every 5 s: the recent shares of each path. */
  readonly perHop = new Map<string, number>();

  /** One batch left through `hop`. */
  took(hop: string, batches = 1): void {
    this.perHop.set(hop, (this.perHop.get(hop) ?? 0) + batches);
  }

  /** `batches` left on the tether to `hop` (not the backup pipeline): what status shows as the path. */
  tethered(hop: string, batches = 1): void {
    this.hop = hop;
    this.backupUntil = 0;
    this.took(hop, batches);
  }

  constructor(readonly peer: string, now: number) {
    this.lastUsed = now;
    this.hop = peer;
  }
}

/** Packets one read of the TUN takes at most (see #readLoop). */
const READ_SLOTS = 64;

/**
 * How often the data plane tells the worker what changed while a tether is open (a revoked peer's traffic stops
 * within this). With none, the worker has no direct connection and receives nothing, even with receiving streams
 * it still holds for a tether formed again (streams outlive tethers), and a direct connection handed to it is
 * synced at once (`onAdopted`): the check is only upkeep then, and this seldom costs an idle node less.
 */
const LANE_SYNC_MS = 200;
const LANE_IDLE_SYNC_MS = 5_000;

/** What the data plane handed to the worker. */
interface LaneState {
  lane: Lane;
  /** Peers whose traffic the worker carries: the stream it seals with, and the connection. */
  handed: Map<string, { sealer: StreamSealer; link: number }>;
  /** Receiving streams the worker opens, by id (hex). */
  owned: Map<string, StreamOpener>;
  /** The certificate last described to the worker, per peer, and this node's. */
  facts: Map<string, AddressFacts>;
  self?: AddressFacts;
  timer?: ReturnType<typeof setTimeout>;
}

/** A receiving stream's messages waiting for those sealed before them, and the timer that lets them go. */
interface Reordering {
  reorder: Reorder<Uint8Array>;
  timer?: ReturnType<typeof setTimeout>;
}

/** The part of a certificate the worker's packet check reads (a certificate holds much more). */
function addressFacts(f: AddressFacts): AddressFacts {
  return { ipv4: f.ipv4, ipv6: f.ipv6, portal: f.portal, subnets: f.subnets };
}

/** One node's data plane. */
export class Anchor {
  readonly #o: AnchorOptions;
  readonly #egress = new Map<string, Egress>();
  /** Per receiving stream, settles once its latest message is written to the TUN (or refused). */
  readonly #written = new WeakMap<object, Promise<void>>();
  /** Per receiving stream opened here, what waits for messages sealed before it. */
  readonly #reorders = new WeakMap<StreamOpener, Reordering>();
  readonly #reorderTimers = new Set<ReturnType<typeof setTimeout>>();
  readonly traffic = new Map<string, Traffic>();
  /** Packets to addresses being looked up, by address (hex). */
  readonly #unrouted = new Map<string, { packet: Uint8Array; header: Uint8Array }[]>();
  readonly drops = new Map<DataDrop, number>();
  /** Messages and bytes carried for other nodes. */
  readonly relayed = { messages: 0, bytes: 0 };
  /** Messages and bytes this node sent over the backup pipeline. */
  readonly backups = { messages: 0, bytes: 0 };
  /** Time spent per stage on this thread (the TUN's reads and writes come from its own counters). */
  readonly #stages = { batch: 0, seal: 0, linkSend: 0, receive: 0, open: 0, tunWrite: 0 };
  /** Hops whose tether failed to form: when to try again, and the backoff that gave that time. */
  readonly #failed = new Map<string, { until: number; backoff: number }>();
  /** Bytes published on the backup pipeline since its last flush started (the backpressure window). */
  #backupUnflushed = 0;
  #backupFlush: Promise<void> | undefined;
  #reading: Promise<void> | undefined;
  readonly #retire: ReturnType<typeof setInterval>;
  /** What the worker was handed, when there is one. */
  readonly #lane: LaneState | undefined;
  /** Time per stage on the worker's thread (its totals). */
  #workerStages: Partial<DataStages> = {};

  constructor(options: AnchorOptions) {
    this.#o = options;
    this.#retire = setInterval(() => this.#retireIdle(), 5_000);
    const { lane } = options;
    if (lane) {
      const state: LaneState = { lane, handed: new Map(), owned: new Map(), facts: new Map() };
      const sync = () => {
        clearTimeout(state.timer);
        let busy = true;
        try {
          busy = this.#syncLane();
        } finally {
          state.timer = setTimeout(sync, busy ? LANE_SYNC_MS : LANE_IDLE_SYNC_MS);
        }
      };
      state.timer = setTimeout(sync, LANE_SYNC_MS);
      // A new direct connection carries the traffic at once, not at the next sync.
      lane.onAdopted = sync;
      this.#lane = state;
      // The worker gave a route up by itself (its connection closed, its stream expired): only that route.
      lane.onUnrouted = (peer, stream) => {
        const handed = this.#lane?.handed;
        const h = handed?.get(peer);
        if (h && toHex(h.sealer.secrets.id) === stream) handed!.delete(peer);
      };
      lane.onStats = (stats) => this.#laneStats(stats);
    }
  }

  /**
   * Tells the worker what changed: what each peer may send; which peers' traffic it carries (an open direct
   * connection that is the preferred hop, to the peer's own addresses), each with a sending stream of its own
   * that this thread never seals with again; and which receiving streams it opens (with no open in flight here,
   * so no counter is accepted on both threads). What no longer holds is taken back. Returns whether a tether is
   * open (see LANE_SYNC_MS).
   */
  #syncLane(): boolean {
    const state = this.#lane!;
    const { lane, handed, owned, facts: sent } = state;
    const { tethers, streams, route } = this.#o;
    const factsOf = this.#o.facts!;
    const direct = tethers.directLinks();
    const changes: [string, AddressFacts | undefined][] = [];
    for (const peer of new Set([...direct.keys(), ...sent.keys()])) {
      const f = factsOf(peer);
      if (f === undefined ? !sent.has(peer) : sent.get(peer) === f) continue; // unchanged
      changes.push([peer, f && addressFacts(f)]);
      if (f) sent.set(peer, f);
      else sent.delete(peer);
    }
    const self = this.#o.selfFacts!();
    if (changes.length > 0 || self !== state.self) {
      lane.facts(addressFacts(self), changes);
      state.self = self;
    }
    for (const [peer, link] of direct) {
      const f = factsOf(peer);
      const h = handed.get(peer);
      const fast = f !== undefined && route(f.ipv4) === peer && route(f.ipv6) === peer &&
        this.#o.preferredHop!(peer) === peer && !this.backlogged(peer);
      if (h && (!fast || h.link !== link)) {
        lane.unroute(peer);
        handed.delete(peer);
      }
      if (!fast || (h && h.link === link && !h.sealer.needsRekey())) continue;
      // Only a stream this node already sends with: a peer it never sent to gets none from here. One due for
      // renewal asks for a fresh one, handed over on a later turn.
      const sealer = h ? streams.ready(peer) : streams.current(peer);
      if (!sealer || sealer.handedOver || !sealer.secrets.raw) continue;
      lane.route(peer, [f.ipv4, f.ipv6], link, sealer.handOver());
      handed.set(peer, { sealer, link });
    }
    for (const peer of handed.keys()) {
      if (!direct.has(peer)) {
        lane.unroute(peer);
        handed.delete(peer);
      }
    }
    for (const peer of direct.keys()) {
      for (const opener of streams.openersOf(peer)) {
        if (opener.handedOver || opener.expired() || this.#written.has(opener) || !opener.secrets.raw) {
          continue;
        }
        this.#letGo(opener);
        lane.own(opener.handOver());
        owned.set(toHex(opener.secrets.id), opener);
      }
    }
    for (const [id, opener] of owned) {
      if (streams.openerById(id) !== opener) {
        lane.disown(id);
        owned.delete(id);
      }
    }
    return tethers.count > 0; // every direct connection, and so every handed route, is an open tether's
  }

  /** The worker's counters for the last second: traffic, the path it took, tether activity, drops, stages. */
  #laneStats(stats: LaneStats): void {
    const now = this.#o.clock();
    for (const [peer, t] of stats.traffic) {
      const total = this.#traffic(peer);
      total.txBytes += t.txBytes;
      total.txPackets += t.txPackets;
      total.rxBytes += t.rxBytes;
      total.rxPackets += t.rxPackets;
      this.#o.tethers.carried(peer, t.txBytes, t.rxBytes);
      if (t.batches === 0) continue;
      const e = this.#egressTo(peer, now);
      e.tethered(peer, t.batches);
      // The connection was the bottleneck (a backlog now and then: a TCP above that paces itself, as BBR does,
      // queues only when it probes), other paths could share the load, and this thread could carry it: it takes
      // the traffic back and spreads it.
      if (
        t.backlogged > t.batches / 50 &&
        t.txBytes / Math.max(stats.periodMs, 1) <= SPREAD_MAX_BYTES_PER_S / 1000 &&
        this.#otherPaths(peer, peer).length > 0
      ) e.backloggedAt = now;
    }
    for (const [reason, n] of stats.drops) this.#drop(reason as DataDrop, n);
    this.#workerStages = stats.stages;
  }

  #drop(reason: DataDrop, n = 1): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + n);
  }

  #traffic(peer: string): Traffic {
    let t = this.traffic.get(peer);
    if (!t) this.traffic.set(peer, t = { txBytes: 0, rxBytes: 0, txPackets: 0, rxPackets: 0 });
    return t;
  }

  /** Starts reading the TUN; runs until the TUN closes. */
  start(): void {
    this.#reading ??= this.#readLoop().catch((error) => this.#o.log(`data plane stopped: ${error}`));
  }

  async #readLoop(): Promise<void> {
    const { tun } = this.#o;
    const offload = tun.offload === true;
    // Slots are made as batches fill them, up to READ_SLOTS: with the data-plane worker this loop sees only the
    // packets the worker has no route for, and 64 slots of 64 KiB each would hold 4 MiB for a handful of packets.
    const slots = [new Uint8Array(readBytes(tun))];
    const sizes = [0];
    const touched = new Set<Egress>();
    for (;;) {
      const n = await tun.readBatch(slots, sizes, 0);
      if (n === 0) return;
      const started = performance.now();
      const sealing = this.#stages.seal; // a batch filled on the way is sealed in this loop: counted as sealing
      const now = this.#o.clock();
      for (let i = 0; i < n; i++) {
        const data = slots[i]!.subarray(0, sizes[i]);
        // With offload the packet comes after its header, and may be a TCP super-packet: it travels whole.
        const header = offload ? data.subarray(0, OFFLOAD_HEADER_BYTES) : NO_OFFLOAD;
        const packet = offload ? data.subarray(OFFLOAD_HEADER_BYTES) : data;
        const destination = destinationOf(packet);
        const peer = destination && this.#o.route(destination);
        if (peer) touched.add(this.#enqueue(peer, packet, header, now));
        else if (destination) this.#hold(destination, packet, header);
        else this.#drop("no-peer");
      }
      this.#stages.batch += performance.now() - started - (this.#stages.seal - sealing);
      // Whatever was read goes out now: batching never waits for more packets.
      for (const e of touched) this.#flush(e);
      for (const e of touched) await this.#room(e);
      touched.clear();
      if (n === slots.length) { // a full batch: the next read may take twice as many
        const grown = Math.min(2 * slots.length, READ_SLOTS);
        while (slots.length < grown) {
          slots.push(new Uint8Array(readBytes(tun)));
          sizes.push(0);
        }
      }
    }
  }

  /** The egress to `peer`, made if there is none, used at `now`. */
  #egressTo(peer: string, now: number): Egress {
    let e = this.#egress.get(peer);
    if (!e) this.#egress.set(peer, e = new Egress(peer, now));
    e.lastUsed = now;
    return e;
  }

  #enqueue(peer: string, packet: Uint8Array, header: Uint8Array, now: number): Egress {
    const e = this.#egressTo(peer, now);
    if (e.spreading(now)) return this.#enqueueSpread(e, packet, header);
    if (e.builder.full(packet.length)) this.#flush(e);
    e.builder.push(packet, header);
    return e;
  }

  /** Batches of at most SPREAD_BATCH_BYTES, for traffic spread over several paths; super-packets cut. */
  #enqueueSpread(e: Egress, packet: Uint8Array, header: Uint8Array): Egress {
    const cut = packet.length > SPREAD_BATCH_BYTES;
    const parts = cut ? plainPackets(header, packet) : [packet];
    if (!parts) {
      this.#drop("malformed");
      return e;
    }
    for (const part of parts) {
      if (e.builder.full(part.length) || e.builder.size + part.length > SPREAD_BATCH_BYTES) this.#flush(e);
      e.builder.push(part, cut ? NO_OFFLOAD : header); // cut: checksums complete, nothing left to offload
    }
    return e;
  }

  /**
   * Keeps a packet to an address no peer holds yet while it is looked up: at most MAX_UNROUTED_PACKETS per
   * address and MAX_UNROUTED_ADDRESSES addresses; the rest, and whatever still has no peer after the lookup, is
   * dropped ("no-peer").
   */
  #hold(destination: Uint8Array, packet: Uint8Array, header: Uint8Array): void {
    const key = toHex(destination);
    const waiting = this.#unrouted.get(key);
    const held = { packet: packet.slice(), header: header.slice() };
    if (waiting) {
      if (waiting.length < MAX_UNROUTED_PACKETS) waiting.push(held);
      else this.#drop("no-peer");
      return;
    }
    if (!this.#o.resolve || this.#unrouted.size >= MAX_UNROUTED_ADDRESSES) return this.#drop("no-peer");
    const address = destination.slice();
    this.#unrouted.set(key, [held]);
    void this.#o.resolve(address).catch(() => {}).then(() => {
      const packets = this.#unrouted.get(key) ?? [];
      this.#unrouted.delete(key);
      const peer = this.#o.route(address);
      if (!peer) return this.#drop("no-peer", packets.length);
      const now = this.#o.clock();
      let e: Egress | undefined;
      for (const p of packets) e = this.#enqueue(peer, p.packet, p.header, now);
      if (e) this.#flush(e);
    });
  }

  /**
   * Waits until `e` may take more: seals in flight below the window, its tether below the high-water mark, and
   * the backup pipeline's unflushed bytes below BACKUP_WINDOW_BYTES (a flush waits for the Master to take them).
   */
  async #room(e: Egress): Promise<void> {
    while (e.inflight.size >= MAX_INFLIGHT_SEALS) await Promise.race(e.inflight);
    await this.#o.tethers.drained(e.hop);
    if (this.#backupUnflushed >= BACKUP_WINDOW_BYTES) {
      this.#backupUnflushed = 0;
      this.#backupFlush ??= this.#o.backupFlush().catch(() => {}).finally(() =>
        this.#backupFlush = undefined
      );
    }
    await this.#backupFlush;
  }

  #flush(e: Egress): void {
    const count = e.builder.count;
    if (count === 0) return;
    const started = performance.now();
    const plaintext = e.builder.plaintext();
    const bytes = plaintext.length - 2 * count;
    const { streams } = this.#o;
    const sealer = streams.ready(e.peer);
    const hop = this.#o.nextHop(e.peer);
    // The tether forms alongside a stream that is ready; else once the first batch has left (#deliver): making a
    // peer connection holds this thread for milliseconds (tens on a busy host), and the handshake would wait.
    if (sealer) this.#form(e.peer, hop);
    if (sealer?.sealsNow(plaintext.length) && e.inflight.size === 0) {
      // A small batch with nothing before it still on its way (a ping, an acknowledgement) is sealed and handed
      // on at once: no promise between the TUN and the link.
      let message: Uint8Array | undefined;
      try {
        message = sealer.sealNow(plaintext);
      } catch (error) {
        this.#sendFailed(e, count, error);
      }
      e.builder.reset();
      this.#stages.seal += performance.now() - started;
      if (message) this.#deliver(e, hop, message, bytes, count);
      return;
    }
    const batch = plaintext.slice();
    e.builder.reset();
    // Seals run in parallel (WebCrypto's threads) and finish in any order; batches still leave in the order
    // they were read, as TCP above takes reordering for loss.
    const previous = e.sent;
    let work: Promise<void>;
    if (sealer) {
      work = sealer.seal(batch).then(async (message) => {
        await previous;
        this.#deliver(e, hop, message, bytes, count);
      });
    } else {
      // The stream is forming (one handshake over the control channel): the batch waits for it, bounded.
      if (e.pending >= MAX_PENDING_BATCHES) return this.#drop("not-ready", count);
      e.pending++;
      work = (async () => {
        const ready = await streams.sealer(e.peer);
        if (!ready) return this.#drop("not-ready", count);
        const message = await ready.seal(batch);
        await previous;
        this.#deliver(e, hop, message, bytes, count);
      })().finally(() => e.pending--);
    }
    e.sent = work.then(() => {}, () => {});
    this.#stages.seal += performance.now() - started;
    const tracked: Promise<void> = work.catch((error) => this.#sendFailed(e, count, error))
      .finally(() => e.inflight.delete(tracked));
    e.inflight.add(tracked);
  }

  #sendFailed(e: Egress, count: number, error: unknown): void {
    this.#drop("send-failed", count);
    if (!(error instanceof StreamError)) this.#o.log(`egress to ${e.peer.slice(0, 8)}: ${error}`);
  }

  /**
   * A sealed batch leaves at once: on the tether to its next hop when that is open, else over the backup
   * pipeline (always there) while the tether forms in the background. No batch waits for a tether.
   */
  #deliver(e: Egress, hop: string, message: Uint8Array, bytes: number, count: number): void {
    const { tethers } = this.#o;
    const started = performance.now();
    const open = tethers.info(hop)?.state === "open";
    if (open) hop = this.#spill(e, hop); // another open path, or the same
    const sent = open && tethers.send(hop, message);
    this.#stages.linkSend += performance.now() - started;
    if (sent) {
      e.tethered(hop);
      e.count(message.length, this.#o.clock());
      return this.#countTx(e.peer, bytes, count);
    }
    e.hop = hop;
    if (this.#o.mayBackup?.(undefined, e.peer) === false) {
      e.blockedAt = this.#o.clock();
      this.#drop("region", count);
    } else {
      e.backupUntil = this.#o.clock() + BACKUP_SHOWN_MS;
      e.took("backup");
      this.#backup(e.peer, message, bytes, count);
    }
    this.#form(e.peer, hop); // after the batch left: see #flush
  }

  /**
   * Concurrent multi-link: a batch whose hop is backlogged takes instead the open path of its destination's
   * spread with the fewest bytes waiting, if that has fewer; the spread's paths with no tether yet are formed.
   * Each path so carries what it drains, and one that stops draining (cut) soon carries nothing.
   */
  #spill(e: Egress, hop: string): string {
    const { tethers, paths } = this.#o;
    // Traffic faster than this thread could spread is left to the worker's one connection.
    if (!paths || e.rate > SPREAD_MAX_BYTES_PER_S) return hop;
    let least = tethers.queued(hop);
    if (least < SPILL_BYTES) return hop;
    const others = this.#otherPaths(e.peer, hop);
    if (others.length === 0) return hop; // nowhere to spread: not a backlog to act on
    e.backloggedAt = this.#o.clock();
    let best = hop;
    for (const path of others) {
      if (tethers.info(path)?.state !== "open") {
        this.#form(e.peer, path);
        continue;
      }
      const queued = tethers.queued(path);
      if (queued < least) [best, least] = [path, queued];
    }
    return best;
  }

  /** The paths traffic to `peer` may spread over besides `hop` (none without `paths`). */
  #otherPaths(peer: string, hop: string): string[] {
    return this.#o.paths?.(peer).filter((path) => path !== hop) ?? [];
  }

  /** Whether traffic to `peer` had a backlog lately (it spreads over several paths, on this thread). */
  backlogged(peer: string): boolean {
    return this.#egress.get(peer)?.spreading(this.#o.clock()) ?? false;
  }

  /**
   * Forms the tether to `hop` in the background, unless it is forming or failed lately: failures back off
   * (doubling up to TETHER_RETRY_MAX_MS), so traffic on the backup pipeline never causes a storm of attempts.
   */
  #form(destination: string, hop: string): void {
    const { tethers } = this.#o;
    if (tethers.info(hop)) return; // forming (or open)
    const failed = this.#failed.get(hop);
    if (failed && failed.until > this.#o.clock()) return;
    void tethers.ensure(hop).then((open) => {
      if (open) {
        this.#failed.delete(hop);
        return;
      }
      const backoff = Math.min(TETHER_RETRY_MAX_MS, failed ? failed.backoff * 2 : TETHER_RETRY_MIN_MS);
      this.#failed.set(hop, { until: this.#o.clock() + backoff, backoff });
      this.#o.hopFailed(destination, hop);
    });
  }

  /** Something changed (the underlay, or a peer's offer): tethers that failed may be tried again at once. */
  retryTethers(): void {
    this.#failed.clear();
  }

  #backup(peer: string, message: Uint8Array, bytes: number, count: number): void {
    this.#o.backup(peer, message);
    this.#backupUnflushed += message.length;
    this.backups.messages++;
    this.backups.bytes += message.length;
    this.#countTx(peer, bytes, count);
  }

  #countTx(peer: string, bytes: number, count: number): void {
    const t = this.#traffic(peer);
    t.txBytes += bytes;
    t.txPackets += count;
  }

  /** A data message from a tether. */
  receive(from: string, message: Uint8Array): void {
    const started = performance.now();
    try {
      this.#receive(from, message);
    } finally {
      this.#stages.receive += performance.now() - started;
    }
  }

  #receive(from: string, message: Uint8Array): void {
    let header;
    try {
      header = readDataHeader(message);
    } catch (error) {
      if (error instanceof WireError) return this.#drop("malformed");
      throw error;
    }
    if (!bytesEqual(header.destination, this.#o.self)) {
      return this.#relay(from, toHex(header.destination), message);
    }
    const opener = this.#o.streams.opener(header.stream);
    if (!opener) return this.#drop("unknown-stream");
    // The worker opens this stream's messages now, whichever way they came (one replay window).
    if (opener.handedOver) return this.#lane?.lane.open(message);
    const previous = this.#written.get(opener);
    if (!previous && opener.opensNow(message)) {
      // A small message with nothing before it still being opened is opened and written at once.
      try {
        this.#inOrder(opener, header.counter, opener.openNow(message));
      } catch (error) {
        this.#refused(from, error);
      }
      return;
    }
    // Opened in parallel, written in the order received (see #flush).
    const done = opener.open(message).then(async (plain) => {
      await previous;
      this.#inOrder(opener, header.counter, plain);
    });
    const written = done.then(() => {}, () => {});
    this.#written.set(opener, written);
    // Once the latest is written, the next small message of this stream may go at once again.
    void written.then(() => this.#written.get(opener) === written && this.#written.delete(opener));
    done.catch((error) => this.#refused(from, error));
  }

  /**
   * Writes an opened batch once those sealed before it are written (see reorder.ts: a sender spreading over
   * several paths has them come out of order); what waits too long goes on its own.
   */
  #inOrder(opener: StreamOpener, counter: number, plain: Uint8Array): void {
    let r = this.#reorders.get(opener);
    if (!r) this.#reorders.set(opener, r = { reorder: new Reorder(REORDER_HOLD_MS, REORDER_MAX_HELD) });
    for (const p of r.reorder.take(counter, plain, performance.now())) this.#toTun(opener, p);
    if (r.reorder.held > 0 && r.timer === undefined) this.#expireLater(opener, r);
  }

  #expireLater(opener: StreamOpener, r: Reordering): void {
    const timer = setTimeout(() => {
      this.#reorderTimers.delete(timer);
      r.timer = undefined;
      for (const p of r.reorder.expire(performance.now())) this.#toTun(opener, p);
      if (r.reorder.held > 0) this.#expireLater(opener, r);
    }, r.reorder.deadline! - performance.now());
    r.timer = timer;
    this.#reorderTimers.add(timer);
  }

  /** What a stream still holds back goes now, in order (it moves to the worker). */
  #letGo(opener: StreamOpener): void {
    const r = this.#reorders.get(opener);
    if (!r) return;
    clearTimeout(r.timer);
    this.#reorderTimers.delete(r.timer!);
    this.#reorders.delete(opener);
    for (const p of r.reorder.flush()) this.#toTun(opener, p);
  }

  /** Writes an opened batch to the TUN: the packets its sender may send us. */
  #toTun(opener: StreamOpener, plain: Uint8Array): void {
    const started = performance.now();
    const peer = toHex(opener.secrets.peer);
    let entries = unpackEntries(plain);
    const { admit, tun } = this.#o;
    if (admit) {
      entries = entries.filter((e) => {
        const refused = admit(peer, e.packet);
        if (refused) this.#drop(refused);
        return !refused;
      });
    }
    const packets = this.#forTun(entries);
    const writing = performance.now();
    const written = tun.writeBatch(packets, 0);
    this.#stages.open += writing - started;
    this.#stages.tunWrite += performance.now() - writing;
    const t = this.#traffic(peer);
    t.rxPackets += written;
    for (const e of entries) t.rxBytes += e.packet.length;
  }

  #refused(from: string, error: unknown): void {
    if (error instanceof StreamError || error instanceof WireError) this.#drop("refused");
    else this.#o.log(`ingress from ${from.slice(0, 8)}: ${error}`);
  }

  /**
   * What the TUN takes: with offload, each packet with its header in front (they are adjacent in the batch);
   * without, plain packets, super-packets split and partial checksums completed here.
   */
  #forTun(entries: BatchEntry[]): Uint8Array[] {
    if (this.#o.tun.offload) {
      return entries.map((e) =>
        new Uint8Array(e.offload.buffer, e.offload.byteOffset, OFFLOAD_HEADER_BYTES + e.packet.length)
      );
    }
    const out: Uint8Array[] = [];
    for (const e of entries) {
      const plain = plainPackets(e.offload, e.packet);
      if (plain) out.push(...plain);
      else this.#drop("malformed");
    }
    return out;
  }

  /**
   * A message for another node: forwarded unchanged (this node has no key for it) on this node's own direct
   * tether to the destination, never back where it came from, and only if both ends may talk to each other.
   */
  #relay(from: string, destination: string, message: Uint8Array): void {
    if (destination === from) return this.#drop("relay-reflection");
    if (!this.#o.mayRelay(from, destination)) return this.#drop("relay-forbidden");
    if (decrementTtl(message) === 0) return this.#drop("ttl-expired");
    const count = () => {
      this.relayed.messages++;
      this.relayed.bytes += message.length;
    };
    const { tethers } = this.#o;
    if (tethers.send(destination, message)) return count();
    // No tether to the destination (yet): the backup pipeline carries it while one forms, if it may.
    this.#form(destination, destination);
    if (this.#o.mayBackup?.(from, destination) === false) return this.#drop("region");
    this.#o.backup(destination, message);
    this.#backupUnflushed += message.length;
    count();
  }

  #retireIdle(): void {
    const now = this.#o.clock();
    for (const [peer, e] of this.#egress) {
      if (now - e.lastUsed > EGRESS_IDLE_MS && e.inflight.size === 0 && e.builder.count === 0) {
        this.#egress.delete(peer);
      }
      for (const [hop, n] of e.perHop) {
        if (n < 0.5) e.perHop.delete(hop);
        else e.perHop.set(hop, n / 2);
      }
    }
  }

  /** Cumulative time per stage (ms); the TUN's own when it counts it (a real one does). */
  get stages(): DataStages {
    const { readMs, writeMs } = this.#o.tun.stats;
    const w = this.#workerStages;
    return {
      tunRead: readMs ?? 0,
      batch: this.#stages.batch + (w.batch ?? 0),
      seal: this.#stages.seal + (w.seal ?? 0),
      linkSend: this.#stages.linkSend + (w.linkSend ?? 0),
      receive: this.#stages.receive + (w.receive ?? 0),
      open: this.#stages.open + (w.open ?? 0),
      tunWrite: writeMs ?? this.#stages.tunWrite,
    };
  }

  /** What the data-plane worker carries now, if there is one: peers it sends to itself, streams it opens. */
  get worker(): { fastPeers: number; streams: number } | undefined {
    return this.#lane && { fastPeers: this.#lane.handed.size, streams: this.#lane.owned.size };
  }

  /** The next hop traffic to `peer` last took, if there is recent traffic to it. */
  lastHop(peer: string): string | undefined {
    return this.#egress.get(peer)?.hop;
  }

  /**
   * The share of recent batches to `peer` (about the last 10 s) that each next hop carried, "backup" for the
   * pipeline; empty without recent traffic.
   */
  shares(peer: string): Map<string, number> {
    const perHop = this.#egress.get(peer)?.perHop ?? new Map<string, number>();
    let total = 0;
    for (const n of perHop.values()) total += n;
    return new Map([...perHop].map(([hop, n]) => [hop, n / total]));
  }

  /** Whether traffic to `peer` found no path it may take lately (geo-location control). */
  blocked(peer: string): boolean {
    const e = this.#egress.get(peer);
    return e !== undefined && e.blockedAt > this.#o.clock() - 5_000 &&
      this.#o.tethers.info(e.hop)?.state !== "open";
  }

  /** Whether traffic to `peer` goes over the backup pipeline now. */
  inBackup(peer: string): boolean {
    return (this.#egress.get(peer)?.backupUntil ?? 0) > this.#o.clock();
  }

  /** Whether there is recent traffic to `peer`. */
  busy(peer: string): boolean {
    return this.#egress.has(peer);
  }

  /** Destinations with traffic in the last `withinMs`. */
  destinations(withinMs: number): string[] {
    const now = this.#o.clock();
    return [...this.#egress.values()].filter((e) => now - e.lastUsed <= withinMs).map((e) => e.peer);
  }

  /** Egresses alive (one per destination with recent traffic). */
  get egresses(): number {
    return this.#egress.size;
  }

  /** Closes the TUN (ending the read loop) and waits for what is in flight. */
  async close(): Promise<void> {
    clearInterval(this.#retire);
    for (const timer of this.#reorderTimers) clearTimeout(timer);
    if (this.#lane) {
      clearTimeout(this.#lane.timer);
      this.#lane.lane.onStats = this.#lane.lane.onUnrouted = this.#lane.lane.onAdopted = undefined;
    }
    await this.#o.tun.close();
    await this.#reading;
    await Promise.allSettled([...this.#egress.values()].flatMap((e) => [...e.inflight]));
  }
}
