/**
 * The stream table: one sending stream per destination (shared by everything that sends there), formed by a
 * handshake over the control channel and replaced before it ages out; and the receiving streams, found by id.
 * @module
 */

import { HandshakeError, type Handshaker } from "../crypto/handshake.ts";
import { nodeAesGcm } from "../crypto/node_aes.ts";
import { fromHex, toHex } from "../crypto/identity.ts";
import { StreamOpener, StreamSealer, type StreamSecrets, type SyncAesGcm } from "../crypto/stream.ts";
import {
  HANDSHAKE_TIMEOUT_MS,
  MAX_STREAMS_PER_PEER,
  STREAM_REQUEST_FIRST_RESEND_MS,
  STREAM_REQUEST_RESEND_MS,
} from "../tuning.ts";
import type { ControlKind, ControlMessage } from "../wire/control.ts";

interface Outbound {
  sealer?: StreamSealer;
  /** A handshake in progress, if any. */
  pending?: Promise<StreamSealer | undefined>;
  resolve?: (sealer: StreamSealer | undefined) => void;
  timer?: ReturnType<typeof setTimeout>;
  /** Sends a fresh request while none was answered (the control channel delivers at most once). */
  resend?: ReturnType<typeof setTimeout>;
}

/** What the stream table needs around it. */
export interface StreamsOptions {
  self: Uint8Array;
  handshaker: Handshaker;
  /** Sends a signed control message to a peer's own subject. */
  send: (peer: string, message: Uint8Array) => void;
  clock: () => number;
  log: (line: string) => void;
  /** A faster AES-256-GCM for a stream key than node:crypto's, when the host has one (see StreamSecrets.aes). */
  syncAes?: (key: Uint8Array) => SyncAesGcm | undefined;
}

/** Sending and receiving streams of one node. */
export class Streams {
  readonly #o: StreamsOptions;
  readonly #out = new Map<string, Outbound>();
  readonly #in = new Map<string, StreamOpener>();
  /** Receiving stream ids per peer, oldest first: at most MAX_STREAMS_PER_PEER each. */
  readonly #inByPeer = new Map<string, string[]>();
  /** Handshakes this node started that failed or timed out, and responses it refused. */
  failures = 0;
  /** Sending streams formed since start: one per destination, then one per rekey. */
  formed = 0;
  /** Closed: no stream forms any more (a request that comes meanwhile is still answered, and starts none). */
  #closed = false;

  constructor(options: StreamsOptions) {
    this.#o = options;
  }

  /** The stream to `peer`, if one is ready now; starts forming or replacing one when needed. */
  ready(peer: string): StreamSealer | undefined {
    const o = this.#out.get(peer);
    const sealer = o?.sealer && !o.sealer.expired() ? o.sealer : undefined;
    if (!sealer || sealer.needsRekey()) void this.sealer(peer);
    return sealer;
  }

  /** The stream to `peer` if one is usable now; never starts forming one. */
  current(peer: string): StreamSealer | undefined {
    const sealer = this.#out.get(peer)?.sealer;
    return sealer && !sealer.expired() ? sealer : undefined;
  }

  /** The stream to `peer`, forming one if needed; undefined if the handshake fails or times out. */
  sealer(peer: string): Promise<StreamSealer | undefined> {
    if (this.#closed) return Promise.resolve(undefined);
    let o = this.#out.get(peer);
    if (!o) this.#out.set(peer, o = {});
    if (o.sealer && !o.sealer.expired() && !o.sealer.needsRekey()) return Promise.resolve(o.sealer);
    if (o.pending) return o.pending;
    const entry = o;
    entry.pending = new Promise((resolve) => entry.resolve = resolve);
    entry.timer = setTimeout(() => {
      this.failures++;
      this.#settle(peer, undefined);
    }, HANDSHAKE_TIMEOUT_MS);
    const ask = async () => {
      try {
        this.#o.send(peer, await this.#o.handshaker.request(fromHex(peer)));
      } catch (error) {
        this.#o.log(`stream to ${peer.slice(0, 8)}: ${(error as Error).message}`);
        this.failures++;
        this.#settle(peer, undefined);
      }
    };
    // Resent after a second, then less often: the control channel delivers at most once. Not sooner: a peer that
    // does not know us yet holds the request while it looks us up, and on a busy host a handshake takes hundreds
    // of milliseconds, each resend one more for both sides to work through.
    let wait = STREAM_REQUEST_FIRST_RESEND_MS;
    const again = () => {
      entry.resend = setTimeout(() => {
        void ask();
        wait = Math.min(wait * 2, STREAM_REQUEST_RESEND_MS);
        again();
      }, wait);
    };
    again();
    void ask();
    return entry.pending;
  }

  #settle(peer: string, sealer: StreamSealer | undefined): void {
    const o = this.#out.get(peer);
    if (!o?.pending) return;
    clearTimeout(o.timer);
    clearTimeout(o.resend);
    if (sealer) {
      o.sealer = sealer;
      this.formed++;
    }
    const resolve = o.resolve!;
    o.pending =
      o.resolve =
      o.timer =
      o.resend =
        undefined;
    resolve(o.sealer && !o.sealer.expired() ? o.sealer : undefined);
  }

  /**
   * A peer asks for a stream to us: answer it and keep the receiving end. A peer keeps at most
   * MAX_STREAMS_PER_PEER receiving streams here (a rekey overlaps two, and a resent request adds one): a new one
   * beyond that replaces its oldest. Ours to it starts forming too if there is none: what it sends first (a
   * ping, a TCP handshake) most likely waits for an answer, which then need not wait for a second handshake.
   */
  async onRequest(m: ControlMessage<ControlKind.StreamRequest>): Promise<void> {
    const { response, secrets: agreed } = await this.#o.handshaker.respond(m);
    const secrets = this.#withAes(agreed);
    const peer = toHex(m.sender);
    const id = toHex(secrets.id);
    this.#in.set(id, new StreamOpener(secrets, { self: this.#o.self, clock: this.#o.clock }));
    const ids = [...this.#inByPeer.get(peer) ?? [], id];
    while (ids.length > MAX_STREAMS_PER_PEER) this.#in.delete(ids.shift()!);
    this.#inByPeer.set(peer, ids);
    this.#o.send(peer, response);
    this.ready(peer);
  }

  /** Our handshake completed. */
  async onResponse(m: ControlMessage<ControlKind.StreamResponse>): Promise<void> {
    try {
      const secrets = this.#withAes(await this.#o.handshaker.complete(m));
      this.#settle(toHex(m.sender), new StreamSealer(secrets, this.#o.clock));
    } catch (error) {
      if (!(error instanceof HandshakeError)) throw error;
      this.failures++;
      this.#o.log(`stream response from ${toHex(m.sender).slice(0, 8)} refused: ${error.reason}`);
    }
  }

  #withAes(secrets: StreamSecrets): StreamSecrets {
    const aes = secrets.raw && (this.#o.syncAes?.(secrets.raw) ?? nodeAesGcm(secrets.raw));
    return aes ? { ...secrets, aes } : secrets;
  }

  /** The receiving stream with this id (8 bytes). */
  opener(id: Uint8Array): StreamOpener | undefined {
    return this.#in.get(toHex(id));
  }

  /** The receiving stream with this id (hex). */
  openerById(id: string): StreamOpener | undefined {
    return this.#in.get(id);
  }

  /** The receiving streams from `peer`. */
  openersOf(peer: string): StreamOpener[] {
    return (this.#inByPeer.get(peer) ?? []).flatMap((id) => this.#in.get(id) ?? []);
  }

  /** Forgets streams that can no longer be used, and everything about a peer that left. */
  expire(gone: (peer: string) => boolean): void {
    for (const [id, opener] of this.#in) {
      if (opener.expired() || gone(toHex(opener.secrets.peer))) this.#in.delete(id);
    }
    for (const [peer, ids] of this.#inByPeer) {
      const live = ids.filter((id) => this.#in.has(id));
      if (live.length > 0) this.#inByPeer.set(peer, live);
      else this.#inByPeer.delete(peer);
    }
    for (const [peer, o] of this.#out) {
      if (gone(peer)) {
        this.#settle(peer, undefined);
        this.#out.delete(peer);
      } else if (o.sealer?.expired()) o.sealer = undefined;
    }
  }

  get counts(): { sending: number; receiving: number } {
    return { sending: [...this.#out.values()].filter((o) => o.sealer).length, receiving: this.#in.size };
  }

  close(): void {
    this.#closed = true;
    for (const peer of this.#out.keys()) this.#settle(peer, undefined);
    this.#out.clear();
    this.#in.clear();
    this.#inByPeer.clear();
  }
}
