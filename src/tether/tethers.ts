/**
 * Tethers: the WebRTC links this node holds to its next hops, formed on demand, dissolved when idle.
 *
 * Forming: the side with traffic first sends an Offer (signed, over the control channel) and the other Answers;
 * one exchange, candidates inside. If both offer at once, the lower node id's offer wins and the other side
 * answers it. An Offer for a peer that already has a tether replaces it (the peer restarted or dissolved its
 * side). A tether with no traffic either way for the idle period closes, and says so with a Close signal.
 *
 * A handshake that fails while the tether forms is tried again (up to `TETHER_FORM_TRIES` in all) by each
 * side that waits for the tether: on a busy machine libdatachannel 0.24.5 loses a race of its own (see
 * `#linkClosed`), and an unlucky first packet must not cost the route.
 * @module
 */

import { fromHex, toHex } from "../crypto/identity.ts";
import {
  LINK_DEAD_MS,
  OFFER_RESEND_MS,
  TETHER_CHANNELS,
  TETHER_FORM_TIMEOUT_MS,
  TETHER_IDLE_MS,
  TETHER_MTU,
} from "../tuning.ts";
import { TetherSignalType } from "../wire/control.ts";
import { WebRtcLink } from "./webrtc.ts";

/**
 * Handshakes a side that waits for a tether tries before it gives up (see `#linkClosed`). On a busy machine
 * the race comes in bursts (two or three lost in a row were seen under load), and a try costs only an offer
 * and an answer. (A tuning constant; it lives here, beside the only code that uses it, not in tuning.ts.)
 */
export const TETHER_FORM_TRIES = 5;

/** A signal to or from a peer (the body of a TetherSignal control message). */
export interface Signal {
  session: Uint8Array;
  signal: TetherSignalType;
  payload: string;
}

/** What the tethers need from the node around them. */
export interface TethersOptions {
  /** This node's id (hex): decides who wins when both sides offer. */
  self: string;
  /** Signs and sends a signal to a peer over the control channel. */
  signal: (peer: string, signal: Signal) => Promise<void>;
  iceServers: () => string[];
  /** Addresses of the overlay itself, never used for a tether's candidates. */
  overlay?: (address: string) => boolean;
  /** A data message arrived from `peer`. */
  onMessage: (peer: string, data: Uint8Array) => void;
  /** A tether opened or went away (for status and logs). */
  onChange?: (peer: string, state: "open" | "closed", reason?: string) => void;
  idleMs?: number;
  clock?: () => number;
  /** Detailed logging of signalling, for debugging. */
  debug?: (line: string) => void;
}

interface Tether {
  peer: string;
  session: string;
  offerer: boolean;
  link?: WebRtcLink;
  state: "connecting" | "open" | "closed";
  opened: Promise<boolean>;
  settle: (open: boolean) => void;
  lastActivity: number;
  /** When the peer last showed it is alive (a message or a probe answer). */
  lastHeard: number;
  txBytes: number;
  rxBytes: number;
  formTimer?: ReturnType<typeof setTimeout>;
  /** Resends the offer while no answer came (control messages may be lost, e.g. before the peer knows us). */
  offerTimer?: ReturnType<typeof setInterval>;
  /** The answer we sent, for a resent offer whose first answer was lost. */
  answer?: Signal;
  /** Someone here waits for it to open (ensure() was called): a failed handshake is then tried again. */
  wanted?: boolean;
  /** Handshakes tried for its waiters so far, this one included. */
  tries: number;
  /** Smoothed round-trip time from probes (ms). */
  rttMs?: number;
}

/** Counters of one peer's tether. */
export interface TetherInfo {
  state: "connecting" | "open";
  txBytes: number;
  rxBytes: number;
  rttMs?: number;
  /** What carries its data: a direct TCP connection, or the WebRTC data channel. */
  link?: "tcp" | "webrtc";
}

/** All tethers of this node. */
export class Tethers {
  readonly #o: TethersOptions;
  readonly #clock: () => number;
  readonly #tethers = new Map<string, Tether>();
  /** Looks at the tethers once a second while there are any: with none, an idle node does not wake for it. */
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(options: TethersOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
  }

  #new(peer: string, session: string, offerer: boolean): Tether {
    let settle!: (open: boolean) => void;
    const opened = new Promise<boolean>((resolve) => settle = resolve);
    const t: Tether = {
      peer,
      session,
      offerer,
      state: "connecting",
      opened,
      settle,
      lastActivity: this.#clock(),
      lastHeard: this.#clock(),
      tries: 1,
      txBytes: 0,
      rxBytes: 0,
    };
    this.#tethers.set(peer, t);
    if (!this.#closed) this.#sweep ??= setInterval(() => this.#dissolveIdle(), 1_000);
    t.formTimer = setTimeout(() => this.#drop(t, "did not open in time"), TETHER_FORM_TIMEOUT_MS);
    return t;
  }

  #events(t: Tether) {
    return {
      onOpen: () => {
        if (this.#tethers.get(t.peer) !== t) return;
        clearTimeout(t.formTimer);
        clearInterval(t.offerTimer);
        t.state = "open";
        t.lastActivity = t.lastHeard = this.#clock();
        t.settle(true);
        this.#o.onChange?.(t.peer, "open");
      },
      onAlive: (token?: string) => {
        const now = this.#clock();
        t.lastHeard = now;
        const sent = Number(token);
        if (token && Number.isFinite(sent) && sent <= now) {
          const rtt = now - sent;
          t.rttMs = t.rttMs === undefined ? rtt : 0.7 * t.rttMs + 0.3 * rtt;
        }
      },
      onMessage: (data: Uint8Array) => {
        t.lastActivity = t.lastHeard = this.#clock();
        t.rxBytes += data.length;
        this.#o.onMessage(t.peer, data);
      },
      onClose: (reason: string) => this.#linkClosed(t, reason),
    };
  }

  /**
   * The link of `t` went away. A tether still forming usually lost a race inside libdatachannel 0.24.5 rather
   * than its peer: setRemoteDescription hands the ICE agent the answer before it keeps it for the DTLS
   * fingerprint check, so when the peer's certificate arrives in between (a busy machine) the handshake fails
   * on both sides ("certificate verify failed" here, "unknown CA" there, and the answer throws "Got a remote
   * candidate without ICE transport"). A side that waits for the tether offers again, up to TETHER_FORM_TRIES
   * handshakes in all, and its waiters wait for that; if both sides do, the glare rule keeps one.
   */
  #linkClosed(t: Tether, reason: string): void {
    if (
      t.state !== "connecting" || !t.wanted || t.tries >= TETHER_FORM_TRIES || this.#tethers.get(t.peer) !== t
    ) {
      return this.#drop(t, reason);
    }
    this.#drop(t, `${reason}; forming again`, this.#offer(t.peer, { tries: t.tries + 1 }));
  }

  /** Closes a tether. Its waiters learn it failed, unless `successor` takes over (they wait for that one). */
  #drop(t: Tether, reason: string, successor?: Tether): void {
    if (t.state === "closed") return;
    this.#o.debug?.(`tether ${t.peer.slice(0, 8)} session ${t.session.slice(0, 8)} dropped: ${reason}`);
    const wasOpen = t.state === "open";
    clearTimeout(t.formTimer);
    clearInterval(t.offerTimer);
    t.state = "closed";
    if (successor) successor.opened.then(t.settle);
    else t.settle(false);
    t.link?.close(reason);
    if (this.#tethers.get(t.peer) === t) this.#tethers.delete(t.peer);
    if (wasOpen) this.#o.onChange?.(t.peer, "closed", reason);
  }

  #config() {
    return {
      iceServers: this.#o.iceServers(),
      channels: TETHER_CHANNELS,
      mtu: TETHER_MTU,
      excluded: this.#o.overlay,
    };
  }

  /**
   * The tether to `peer`, formed if there is none. Resolves true once it is open, false if it cannot form (in
   * TETHER_FORM_TRIES handshakes, or in time).
   */
  ensure(peer: string): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    const t = this.#tethers.get(peer) ?? this.#offer(peer);
    t.wanted = true;
    return t.opened;
  }

  /** Starts offering a tether to `peer` (for someone who waits); it is the peer's tether at once. */
  #offer(peer: string, options: { tries?: number } = {}): Tether {
    const session = crypto.getRandomValues(new Uint8Array(16));
    const t = this.#new(peer, toHex(session), true);
    t.wanted = true;
    t.tries = options.tries ?? 1;
    void (async () => {
      try {
        const { link, sdp } = await WebRtcLink.offer(
          `to-${peer.slice(0, 8)}`,
          this.#config(),
          this.#events(t),
        );
        if (t.state === "closed") return link.close("abandoned");
        t.link = link;
        const offer = { session, signal: TetherSignalType.Offer, payload: sdp };
        t.offerTimer = setInterval(() => void this.#o.signal(peer, offer).catch(() => {}), OFFER_RESEND_MS);
        await this.#o.signal(peer, offer);
      } catch (error) {
        this.#drop(t, `offer failed: ${(error as Error).message}`);
      }
    })();
    return t;
  }

  /** Sends a data message over an open tether; false if there is none (the caller forms one and waits). */
  send(peer: string, message: Uint8Array): boolean {
    const t = this.#tethers.get(peer);
    if (!t || t.state !== "open" || !t.link?.send(message)) return false;
    t.txBytes += message.length;
    t.lastActivity = this.#clock();
    return true;
  }

  /** Bytes behind on the tether to `peer` (see WebRtcLink.queued; 0 without one). */
  queued(peer: string): number {
    return this.#tethers.get(peer)?.link?.queued ?? 0;
  }

  /** Resolves when the tether to `peer` can take more (immediately if it can, or if there is none). */
  drained(peer: string): Promise<void> {
    return this.#tethers.get(peer)?.link?.drained() ?? Promise.resolve();
  }

  /** Handles a verified signal from `peer`. */
  async onSignal(peer: string, s: Signal): Promise<void> {
    if (this.#closed) return;
    const session = toHex(s.session);
    const t = this.#tethers.get(peer);
    this.#o.debug?.(
      `signal ${TetherSignalType[s.signal]} from ${peer.slice(0, 8)} session ${session.slice(0, 8)}; ` +
        `have ${t ? `${t.state} ${t.offerer ? "offerer" : "answerer"} ${t.session.slice(0, 8)}` : "none"}`,
    );
    if (s.signal === TetherSignalType.Answer) {
      if (t && t.session === session && t.offerer && t.state === "connecting" && t.offerTimer !== undefined) {
        clearInterval(t.offerTimer);
        t.offerTimer = undefined;
        t.link?.acceptAnswer(s.payload);
      }
      return;
    }
    if (s.signal === TetherSignalType.Close) {
      if (t && t.session === session) this.#drop(t, "closed by peer");
      return;
    }
    if (s.signal !== TetherSignalType.Offer) return;
    if (t && t.offerer && t.state === "connecting" && this.#o.self < peer) return; // both offered: ours wins
    if (t && !t.offerer && t.session === session) {
      // A resent offer we are already answering: our answer may have been lost.
      if (t.answer) await this.#o.signal(peer, t.answer);
      return;
    }
    const answering = this.#new(peer, session, false);
    if (t?.state === "connecting") {
      // Its waiters wait for this one now: the same try of theirs, answered the peer's way.
      answering.wanted = t.wanted;
      answering.tries = t.tries;
    }
    if (t) this.#drop(t, "replaced by the peer's new offer", answering);
    try {
      const { link, sdp } = await WebRtcLink.answer(
        `from-${peer.slice(0, 8)}`,
        s.payload,
        this.#config(),
        this.#events(answering),
      );
      if (answering.state === "closed") return link.close("abandoned");
      answering.link = link;
      answering.answer = { session: s.session, signal: TetherSignalType.Answer, payload: sdp };
      await this.#o.signal(peer, answering.answer);
    } catch (error) {
      this.#drop(answering, `answer failed: ${(error as Error).message}`);
    }
  }

  /**
   * Once a second: probes every open tether (round-trip time, liveness), drops one whose peer has been silent
   * too long (killed, or its network cut) so the next packet forms a new one, and dissolves idle ones.
   */
  #dissolveIdle(): void {
    const idle = this.#o.idleMs ?? TETHER_IDLE_MS;
    const now = this.#clock();
    for (const t of [...this.#tethers.values()]) {
      if (t.state !== "open") continue;
      if (now - t.lastHeard > LINK_DEAD_MS) {
        this.#drop(t, "peer not answering");
        continue;
      }
      t.link?.probe(String(now));
      if (t.state === "open" && now - t.lastActivity > idle) {
        void this.#o.signal(t.peer, {
          session: fromHex(t.session),
          signal: TetherSignalType.Close,
          payload: "",
        })
          .catch(() => {});
        this.#drop(t, "idle");
      }
    }
    if (this.#tethers.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  /**
   * Drops every tether that sends from one of `addresses`, which this host no longer has: it is dead, and waiting
   * for its peer to fall silent would cost LINK_DEAD_MS of traffic. The next packet forms a new one.
   */
  addressesGone(addresses: Set<string>): void {
    for (const t of [...this.#tethers.values()]) {
      const lost = t.link?.localAddresses().find((a) => addresses.has(a));
      if (lost) this.#drop(t, `this host's address ${lost} went away`);
    }
  }

  /** Drops the tether to a peer that left (or may no longer be talked to). */
  forget(peer: string): void {
    const t = this.#tethers.get(peer);
    if (t) this.#drop(t, "peer left");
  }

  info(peer: string): TetherInfo | undefined {
    const t = this.#tethers.get(peer);
    if (!t || t.state === "closed") return undefined;
    return {
      state: t.state,
      txBytes: t.txBytes,
      rxBytes: t.rxBytes,
      rttMs: t.rttMs ?? t.link?.rttMs(),
      ...(t.link ? { link: t.link.direct ? "tcp" as const : "webrtc" as const } : {}),
    };
  }

  /** The open tethers with a direct connection: peer, and the data-plane worker's id for the connection. */
  directLinks(): Map<string, number> {
    const links = new Map<string, number>();
    for (const t of this.#tethers.values()) {
      const link = t.state === "open" ? t.link?.directLink : undefined;
      if (link !== undefined) links.set(t.peer, link);
    }
    return links;
  }

  /** Counts traffic the data-plane worker carried on the tether's direct connection (it bypasses `send`). */
  carried(peer: string, txBytes: number, rxBytes: number): void {
    const t = this.#tethers.get(peer);
    if (!t || t.state !== "open") return;
    const now = this.#clock();
    t.txBytes += txBytes;
    t.rxBytes += rxBytes;
    if (txBytes + rxBytes > 0) t.lastActivity = now;
    if (rxBytes > 0) t.lastHeard = now;
  }

  /** Open tethers. */
  get count(): number {
    return [...this.#tethers.values()].filter((t) => t.state === "open").length;
  }

  /** Closes every tether. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const t of [...this.#tethers.values()]) this.#drop(t, "shutting down");
  }
}
