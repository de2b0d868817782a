/**
 * One WebRTC link to a next hop (libdatachannel through `node-datachannel`; the only importer): a peer
 * connection with an ordered, reliable data channel. Messages are batches of up to 64 KiB (TCP super-packets
 * from a TUN with offload), which SCTP sends in ~45 chunks: unreliable, one lost chunk lost the whole batch,
 * and unordered, TCP above took reordering for loss. Reliable and ordered, a lost chunk is sent again at once
 * and TCP above sees a short delay instead (measured: no retransmission by TCP at 1% loss on the underlay).
 *
 * Invariants:
 * - Every PeerConnection and DataChannel stays referenced from this object until close(): a collected one is
 *   destroyed and silently drops messages.
 * - Descriptions are exchanged once each way, after ICE gathering completes, with their candidates inside. When
 *   server-reflexive or relay candidates exist, host candidates are removed, so the tunnel forms at the
 *   gateway rather than on the host; host candidates are kept only when nothing else exists.
 * - `sendMessageBinary` returning false means "queued", not "failed"; libdatachannel's queue is unbounded, so
 *   senders wait for `writable()` above a high-water mark.
 * - Every data channel stays referenced from this module until its `onClosed` came (node-datachannel keeps a raw
 *   pointer to each channel object until then, and a collected one made its cleanup crash), and every channel is
 *   closed explicitly, which makes that callback come.
 * - libdatachannel's threads (its SCTP timer ticks every 10 ms) are released RTC_RELEASE_MS after the last
 *   connection closed, and start again with the next one.
 * @module
 */

import ndc from "node-datachannel";
import {
  DIRECT_TCP_OFFERS,
  DIRECT_TCP_RENEWALS,
  DIRECT_TCP_RETRY_MS,
  DIRECT_TCP_TIMEOUT_MS,
  GATHER_MAX_MS,
  LINK_BUFFER_HIGH_BYTES,
  LINK_BUFFER_LOW_BYTES,
  RTC_RELEASE_MS,
} from "../tuning.ts";
import { type DirectEvents, DirectTcp, SECRET_BYTES } from "./direct_tcp.ts";
import { fromHex, toHex } from "../crypto/identity.ts";
import { libc } from "../../ffi/loader.ts";

/** What a link reports to its owner. */
export interface LinkEvents {
  onOpen(): void;
  onMessage(data: Uint8Array): void;
  /** The peer answered our probe carrying `token` (or probed us: token undefined): the link is alive. */
  onAlive(token?: string): void;
  /** The link is gone (closed by either side, or failed). Called once. */
  onClose(reason: string): void;
}

/** How links are made. */
export interface LinkConfig {
  /** STUN/TURN URLs ("stun:host:port", "turn:user:pass@host:port"). */
  iceServers: string[];
  channels: number;
  /** SCTP MTU: 1500 measured +20% over the default 1172 here; 9000 breaks. */
  mtu: number;
  /** Local addresses never to offer as candidates. */
  excluded?: (address: string) => boolean;
  /** Carry data over a direct TCP connection when the peer can reach this host over TCP (default true). */
  directTcp?: boolean;
}

/**
 * The candidates a link offers: never one on an `excluded` address (the overlay's own addresses: a tether must
 * not run through the tunnel it carries), and only server-reflexive and relay ones when there are any.
 */
export function filterCandidates(sdp: string, excluded: (address: string) => boolean = () => false): string {
  const lines = sdp.split("\r\n");
  const isCandidate = (l: string) => l.startsWith("a=candidate:");
  const kept = lines.filter((l) => !isCandidate(l) || !excluded(l.split(" ")[4] ?? ""));
  const gateway = kept.some((l) => isCandidate(l) && / typ (srflx|relay)( |$)/.test(l));
  return gateway
    ? kept.filter((l) => !(isCandidate(l) && / typ host( |$)/.test(l))).join("\r\n")
    : kept.join("\r\n");
}

type Channel = ReturnType<ndc.PeerConnection["createDataChannel"]>;

/**
 * Runs a libdatachannel call that may throw (a channel that closed a moment ago refuses to send). Such an error
 * escaping a native callback terminates the whole process ("terminate called after throwing Napi::Error"), so
 * every call from a callback path goes through here. Returns false if it threw.
 */
function attempt(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}

/** Data channels whose `onClosed` has not come yet (see the invariants above). */
const unclosed = new Set<Channel>();
/** Peer connections not yet closed. */
let connections = 0;
let releaseTimer: ReturnType<typeof setTimeout> | undefined;

/** A channel to keep until libdatachannel said it closed. */
function track(dc: Channel, onClosed: () => void = () => {}): void {
  unclosed.add(dc);
  dc.onClosed(() => {
    unclosed.delete(dc);
    onClosed();
  });
}

/** A peer connection is made: libdatachannel's threads are needed. */
function connectionOpened(): void {
  connections++;
  clearTimeout(releaseTimer);
  releaseTimer = undefined;
}

/** A peer connection closed: with none left, libdatachannel's threads are released a while later. */
function connectionClosed(): void {
  if (--connections > 0) return;
  clearTimeout(releaseTimer);
  releaseTimer = setTimeout(() => {
    releaseTimer = undefined;
    if (connections > 0) return;
    try {
      shutdownWebRtc();
    } catch { /* libdatachannel did not finish within 10 s: something still holds it, and it stays */ }
    libc().malloc_trim?.(0n); // what libdatachannel's threads freed stays in their arenas otherwise
  }, RTC_RELEASE_MS);
  Deno.unrefTimer(releaseTimer);
}

/** A WebRTC peer connection and its data channels. */
export class WebRtcLink {
  readonly #pc: ndc.PeerConnection;
  readonly #channels: Channel[] = [];
  readonly #events: LinkEvents;
  #open = false;
  #closed = false;
  #waiters: (() => void)[] = [];
  readonly #excluded: LinkConfig["excluded"];
  /** Whether this side answered (it offers the direct TCP connection; the offering side connects). */
  #answering = false;
  readonly #directTcp: boolean;
  /** The direct TCP connection, while it carries the data messages. */
  #direct: DirectTcp | undefined;
  /** Offers of a direct connection made (the answering side), and the timer of the next one. */
  #directOffers = 0;
  /** Connections offered again after one in use was lost (see DIRECT_TCP_RENEWALS). */
  #directRenewals = 0;
  #directRetry: ReturnType<typeof setTimeout> | undefined;

  private constructor(name: string, config: LinkConfig, events: LinkEvents) {
    this.#events = events;
    this.#excluded = config.excluded;
    this.#directTcp = config.directTcp ?? true;
    this.#pc = new ndc.PeerConnection(name, { iceServers: config.iceServers, mtu: config.mtu });
    connectionOpened();
    this.#pc.onStateChange((state) => {
      if (state === "failed" || state === "closed" || state === "disconnected") {
        this.#finish(`connection ${state}`);
      }
    });
  }

  /** Starts a link as the offering side; resolves with the offer to send once gathering is done. */
  static async offer(
    name: string,
    config: LinkConfig,
    events: LinkEvents,
  ): Promise<{ link: WebRtcLink; sdp: string }> {
    const link = new WebRtcLink(name, config, events);
    const gathered = link.#gathered();
    for (let i = 0; i < config.channels; i++) {
      link.#adopt(link.#pc.createDataChannel(`vc${i}`));
    }
    return { link, sdp: await gathered };
  }

  /** Starts a link answering `offer`; resolves with the answer to send back. A malformed offer throws. */
  static async answer(
    name: string,
    offer: string,
    config: LinkConfig,
    events: LinkEvents,
  ): Promise<{ link: WebRtcLink; sdp: string }> {
    const link = new WebRtcLink(name, config, events);
    link.#answering = true;
    link.#pc.onDataChannel((dc) => link.#adopt(dc));
    const gathered = link.#gathered();
    try {
      link.#pc.setRemoteDescription(offer, "offer");
    } catch (error) {
      link.#finish("bad offer"); // not left open: each malformed offer would keep a peer connection
      throw error;
    }
    return { link, sdp: await gathered };
  }

  /** The offering side takes the answer (a malformed one fails the link). */
  acceptAnswer(sdp: string): void {
    if (!this.#closed && !attempt(() => this.#pc.setRemoteDescription(sdp, "answer"))) {
      this.#finish("bad answer");
    }
  }

  #gathered(): Promise<string> {
    return new Promise((resolve) => {
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(filterCandidates(this.#pc.localDescription()?.sdp ?? "", this.#excluded));
      };
      // A STUN server that never answers must not hold the link forever: use what was gathered by then.
      const timer = setTimeout(finish, GATHER_MAX_MS);
      this.#pc.onGatheringStateChange((state) => state === "complete" && finish());
    });
  }

  #adopt(dc: Channel): void {
    this.#channels.push(dc);
    dc.setBufferedAmountLowThreshold(LINK_BUFFER_LOW_BYTES);
    dc.onBufferedAmountLow(() => this.#wake());
    dc.onOpen(() => {
      if (this.#open || this.#closed) return;
      this.#open = true;
      this.#events.onOpen();
      if (this.#answering && this.#directTcp) this.#offerDirect(dc);
    });
    dc.onMessage((msg) => {
      if (typeof msg === "string") {
        // Text messages are link-local: probes ("?token" asks, "!token" answers) and the direct TCP connection's
        // address ("T" + JSON). Data is always binary.
        if (msg.startsWith("?")) {
          attempt(() => dc.sendMessage(`!${msg.slice(1, 32)}`));
          this.#events.onAlive();
        } else if (msg.startsWith("!")) this.#events.onAlive(msg.slice(1));
        else if (msg.startsWith("T") && !this.#answering && this.#directTcp) {
          void this.#connectDirect(msg.slice(1));
        }
        return;
      }
      this.#events.onMessage(msg instanceof ArrayBuffer ? new Uint8Array(msg) : msg);
    });
    track(dc, () => {
      if (!this.#channels.some((c) => c.isOpen())) this.#finish("data channels closed");
    });
  }

  /**
   * The answering side listens for a direct TCP connection on the address the peer reaches it at over the tether
   * (the selected candidate's), and tells the peer where, with a secret, inside the link (DTLS).
   */
  #offerDirect(dc: Channel): void {
    if (this.#closed || this.#direct || this.#directOffers++ >= DIRECT_TCP_OFFERS) return;
    // An offer not taken (no candidate pair selected yet, or no connection within the timeout) is made again.
    const again = () => this.#directRetry = setTimeout(() => this.#offerDirect(dc), DIRECT_TCP_RETRY_MS);
    let host: string | undefined;
    try {
      const pair = this.#pc.getSelectedCandidatePair();
      // Only a host candidate is this host's own address: behind a NAT or a relay, the peer cannot reach us.
      if (pair?.local.type === "host") host = pair.local.address;
    } catch { /* no pair yet */ }
    if (!host) return void again();
    const secret = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
    let offer;
    try {
      offer = DirectTcp.listen(host, secret, this.#directEvents(dc), DIRECT_TCP_TIMEOUT_MS);
    } catch {
      return; // the address is gone, or listening is not allowed: WebRTC carries everything
    }
    void offer.accepted.then((direct) => direct ? this.#useDirect(direct) : again());
    attempt(() => dc.sendMessage(`T${JSON.stringify({ host, port: offer.port, secret: toHex(secret) })}`));
  }

  /**
   * The offering side connects to the address the answering side gave, and presents the secret: only to the
   * address the tether already reaches the peer at, so a hostile peer cannot make this node connect elsewhere.
   */
  async #connectDirect(json: string): Promise<void> {
    let offer: { host?: unknown; port?: unknown; secret?: unknown };
    try {
      offer = JSON.parse(json);
    } catch {
      return;
    }
    const { host, port, secret } = offer;
    if (
      typeof host !== "string" || !Number.isInteger(port) || (port as number) < 1 ||
      (port as number) > 65535 ||
      typeof secret !== "string" || !/^[0-9a-f]{64}$/.test(secret) || this.#excluded?.(host)
    ) return;
    let remote;
    try {
      remote = this.#pc.getSelectedCandidatePair()?.remote;
    } catch { /* no pair: no direct connection */ }
    // The peer's own address (a host or peer-reflexive candidate), never a TURN server's.
    if (!remote || remote.type === "relay" || remote.address !== host) return;
    const direct = await DirectTcp.connect(
      host,
      port as number,
      fromHex(secret),
      this.#directEvents(),
      DIRECT_TCP_TIMEOUT_MS,
    );
    this.#useDirect(direct);
  }

  /**
   * A direct connection's events. When the one in use closes, the data channel carries on, and the answering side
   * (`offeredOn`, the channel its offers go over) offers a new one (DIRECT_TCP_RENEWALS times at most): a connection
   * reset or dropped on the way (a middlebox's idle timeout, a rebooted router) would otherwise leave the tether on
   * WebRTC while it lives.
   */
  #directEvents(offeredOn?: Channel): DirectEvents {
    return {
      onMessage: (message: Uint8Array) => this.#events.onMessage(message),
      onClose: () => {
        if (!this.#direct?.closed) return; // one never used, or turned away (see #useDirect)
        this.#direct = undefined;
        this.#wake();
        if (!offeredOn || this.#closed || this.#directRenewals++ >= DIRECT_TCP_RENEWALS) return;
        this.#directOffers = 0;
        clearTimeout(this.#directRetry);
        this.#directRetry = setTimeout(() => this.#offerDirect(offeredOn), DIRECT_TCP_RETRY_MS);
      },
    };
  }

  #useDirect(direct: DirectTcp | undefined): void {
    if (!direct || direct.closed) return;
    if (this.#closed || this.#direct) return direct.close();
    this.#direct = direct;
  }

  /** Whether data goes over a direct TCP connection now. */
  get direct(): boolean {
    return this.#direct !== undefined;
  }

  /** The data-plane worker's id for the direct connection, if there is one. */
  get directLink(): number | undefined {
    return this.#direct?.link;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  get isOpen(): boolean {
    return this.#open && !this.#closed;
  }

  /** The open channel with the fewest bytes queued: the one the next send uses. */
  #best(): Channel | undefined {
    let best: Channel | undefined;
    for (const c of this.#channels) {
      if (c.isOpen() && (!best || c.bufferedAmount() < best.bufferedAmount())) best = c;
    }
    return best;
  }

  /**
   * Bytes behind on what the next send uses: on the direct connection, those not acknowledged yet; on the
   * emptiest channel, those waiting to leave.
   */
  get queued(): number {
    if (this.#direct) return this.#direct.behind;
    return this.#best()?.bufferedAmount() ?? 0;
  }

  /** True while some channel (or the direct connection) is below the high-water mark. */
  get writable(): boolean {
    if (this.#direct) return this.#direct.queued < LINK_BUFFER_HIGH_BYTES;
    const best = this.#best();
    return best !== undefined && best.bufferedAmount() < LINK_BUFFER_HIGH_BYTES;
  }

  /**
   * Resolves when the link can take more: at once unless it is open and every channel is above the high-water
   * mark, else when one drains below the low-water mark (or the link closes). A link still forming is not
   * congested: its senders hold their batches elsewhere.
   */
  drained(): Promise<void> {
    if (!this.isOpen || this.writable) return Promise.resolve();
    if (this.#direct) return this.#direct.drained(LINK_BUFFER_LOW_BYTES);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Queues one message on the direct connection, else the least-loaded channel; false if none is open. */
  send(message: Uint8Array): boolean {
    if (this.#direct?.send(message)) return true;
    const best = this.#best();
    return best !== undefined && attempt(() => best.sendMessageBinary(message));
  }

  /** Asks the peer to show it is alive; its answer comes back through `onAlive(token)`. */
  probe(token: string): void {
    const best = this.#best();
    if (best) attempt(() => best.sendMessage(`?${token}`));
  }

  /** The addresses of this host the link sends from: its selected candidate's, and the direct connection's. */
  localAddresses(): string[] {
    const addresses = this.#direct ? [this.#direct.localAddress] : [];
    try {
      const local = this.#pc.getSelectedCandidatePair()?.local;
      if (local) addresses.push(local.address);
    } catch { /* no pair (yet) */ }
    return addresses;
  }

  /** Round-trip time of the selected candidate pair (ms), if known. */
  rttMs(): number | undefined {
    try {
      const rtt = this.#pc.rtt();
      return rtt > 0 ? rtt : undefined;
    } catch {
      return undefined;
    }
  }

  #finish(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#directRetry);
    this.#direct?.close();
    this.#wake();
    for (const c of this.#channels) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    try {
      this.#pc.close();
    } catch { /* already closed */ }
    connectionClosed();
    this.#events.onClose(reason);
  }

  /** Closes every channel and the connection. Idempotent. */
  close(reason = "closed"): void {
    this.#finish(reason);
  }
}

/**
 * Releases libdatachannel's threads; the next peer connection starts them again. Call it with every link closed
 * (it closes any still open): at exit, or when the last one closed (done here, RTC_RELEASE_MS later).
 */
export function shutdownWebRtc(): void {
  ndc.cleanup();
  unclosed.clear();
}

/**
 * The candidates this host would offer with `iceServers`, gathered by a peer connection that never connects (for
 * `netcheck`): one `a=candidate:` line each. Resolves when gathering completes or after `timeoutMs`, with what was
 * gathered by then; the connection is closed either way. A malformed server URL throws (libdatachannel's message).
 */
export async function gatherCandidates(iceServers: string[], timeoutMs = 5_000): Promise<string[]> {
  const pc = new ndc.PeerConnection("netcheck", { iceServers });
  connectionOpened();
  const candidates: string[] = [];
  try {
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      pc.onGatheringStateChange((state) => {
        if (state !== "complete") return;
        clearTimeout(timer);
        resolve();
      });
    });
    pc.onLocalCandidate((candidate) => candidates.push(candidate.replace(/^a=/, "")));
    // A data channel makes libdatachannel write its offer and start gathering.
    const dc = pc.createDataChannel("netcheck");
    track(dc);
    await done;
    attempt(() => dc.close());
  } finally {
    attempt(() => pc.close());
    connectionClosed();
  }
  return candidates;
}
