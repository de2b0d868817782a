/**
 * A stream seals one direction of traffic between two nodes with AES-256-GCM under a key from the handshake.
 *
 * Nonce: 4 zero bytes || the 64-bit message counter. The key is fresh for every stream and only its sender seals,
 * so a (key, nonce) pair never repeats as long as the counter never does: `seal` takes the next counter
 * synchronously, before any await, and refuses to go past REJECT_AFTER_MESSAGES.
 *
 * The sender seals at most REJECT_AFTER_MS after the handshake and should open a new stream after REKEY_AFTER_*;
 * the receiver refuses messages after REJECT_AFTER_MS, counters outside its replay window, and anything that does
 * not authenticate (header included, TTL excepted).
 * @module
 */

import { Refused } from "../errors.ts";
import {
  AEAD_TAG_BYTES,
  DEFAULT_DATA_TTL,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_MS,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_MS,
} from "../spec.ts";
import { WireError } from "../wire/bytes.ts";
import {
  DATA_HEADER_BYTES,
  dataAad,
  type DataHeader,
  DataType,
  MAX_BATCH_BYTES,
  readDataHeader,
  sealedPart,
  writeDataHeader,
} from "../wire/envelope.ts";
import { bytesEqual, toHex } from "../wire/bytes.ts";
import { ReplayWindow } from "./replay_window.ts";

/** What a completed handshake yields, on each side. */
export interface StreamSecrets {
  /** Stream id (8 bytes), the same on both sides. */
  id: Uint8Array;
  /** AES-256-GCM key, non-extractable; absent where only `aes` seals and opens (the data-plane worker). */
  key?: CryptoKey;
  /**
   * The same key's bytes, when known: small batches (pings, TCP acknowledgements) are then sealed and opened
   * synchronously here, without WebCrypto's hop to another thread and back (~33 us each way, every message).
   */
  raw?: Uint8Array;
  /**
   * AES-256-GCM under `raw` on this thread: GnuTLS's, else OpenSSL's libcrypto, through FFI (ffi/aes_gcm.ts) where
   * the host has one, else node:crypto's (src/crypto/node_aes.ts). Without one, everything goes through WebCrypto.
   */
  aes?: SyncAesGcm;
  /** The node at the other end: the destination for the sender, the source for the receiver. */
  peer: Uint8Array;
  /** When this side completed the handshake (its own clock, ms). */
  createdAt: number;
}

/** Why a data message could not be sealed or opened: a stable label for metrics. */
export type StreamErrorReason =
  | "expired"
  | "exhausted"
  | "malformed"
  | "wrong-stream"
  | "misdirected"
  | "auth"
  | "replayed"
  | "moved";

/** A data message refused (or a stream past its limits). The caller drops the message and counts `reason`. */
export class StreamError extends Refused<StreamErrorReason> {
  override name = "StreamError";
}

/** Batches up to this size are sealed and opened synchronously when the key's bytes are known (see `raw`). */
export const SYNC_AES_BYTES = 4096;

/** AES-256-GCM under one key, on the calling thread. */
export interface SyncAesGcm {
  /** Encrypts `plain` into `out`: the ciphertext, then the tag (`plain.length + AEAD_TAG_BYTES` bytes). */
  seal(nonce: Uint8Array, aad: Uint8Array, plain: Uint8Array, out: Uint8Array): void;
  /** Decrypts `sealed` (ciphertext, then tag) into `out`; false when it does not authenticate. */
  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean;
}

/**
 * The nonce for `counter`, in `iv` when given. Synchronous ciphers copy the nonce in, so one buffer serves all
 * their calls: no allocation per message, which after a pause costs ~20 us here (the allocator returns idle memory).
 */
function nonceFor(counter: number, iv = new Uint8Array(12)): Uint8Array {
  const view = new DataView(iv.buffer, iv.byteOffset, 12);
  view.setUint32(4, Math.floor(counter / 2 ** 32));
  view.setUint32(8, counter >>> 0);
  return iv;
}

/** What another thread needs to go on sealing a stream: its counters from `first` on are that thread's alone. */
export interface SealerHandover {
  id: Uint8Array;
  peer: Uint8Array;
  raw: Uint8Array;
  createdAt: number;
  first: number;
}

/** What another thread needs to go on opening a stream, with the counters this one accepted. */
export interface OpenerHandover {
  id: Uint8Array;
  peer: Uint8Array;
  raw: Uint8Array;
  createdAt: number;
  window: { ring: Uint32Array; last: number };
}

/** The sending end of a stream. */
export class StreamSealer {
  #next: number;
  /** The nonce of the synchronous cipher's calls. */
  readonly #iv = new Uint8Array(12);
  /** Counters from here on are not this sealer's (they were handed to another thread, see `handOver`). */
  #limit = REJECT_AFTER_MESSAGES;
  readonly #aes: SyncAesGcm | undefined;

  /** `firstCounter` is for tests that exercise the counter limits without sealing 2^32 messages. */
  constructor(readonly secrets: StreamSecrets, readonly clock: () => number, firstCounter = 0) {
    this.#next = firstCounter;
    this.#aes = secrets.aes;
  }

  /** The sealer another thread makes of a handover, with its own synchronous cipher for the key. */
  static fromHandover(h: SealerHandover, clock: () => number, aes?: SyncAesGcm): StreamSealer {
    return new StreamSealer(
      { id: h.id, peer: h.peer, raw: h.raw, aes, createdAt: h.createdAt },
      clock,
      h.first,
    );
  }

  /**
   * Gives every counter not yet used to another thread, which goes on sealing with them; this sealer seals
   * nothing more (it is `expired`). A stream is handed over once at most, so no counter is ever used twice.
   */
  handOver(): SealerHandover {
    const { id, peer, raw, createdAt } = this.secrets;
    if (!raw) {
      throw new Error(`stream ${toHex(id)}: only a stream whose key bytes are known can be handed over`);
    }
    if (this.#limit !== REJECT_AFTER_MESSAGES) throw new Error(`stream ${toHex(id)} was already handed over`);
    this.#limit = this.#next;
    return { id, peer, raw, createdAt, first: this.#next };
  }

  /** Whether this sealer gave its counters to another thread. */
  get handedOver(): boolean {
    return this.#limit !== REJECT_AFTER_MESSAGES;
  }

  /** Messages sealed so far. */
  get sealed(): number {
    return this.#next;
  }

  /** True once the stream should be replaced by a fresh one (it still works until `expired`). */
  needsRekey(): boolean {
    return this.clock() - this.secrets.createdAt >= REKEY_AFTER_MS || this.#next >= REKEY_AFTER_MESSAGES;
  }

  /** True once `seal` refuses. */
  expired(): boolean {
    return this.clock() - this.secrets.createdAt >= REJECT_AFTER_MS || this.#next >= this.#limit;
  }

  /** Whether a batch of `length` bytes is sealed on this thread: `sealNow` takes it. */
  sealsNow(length: number): boolean {
    return this.#aes !== undefined && length <= SYNC_AES_BYTES;
  }

  /**
   * Seals a batch on this thread and returns the message at once: what `seal` resolves with, without a promise.
   * For small batches (see `sealsNow`), or any where the thread has nothing else to do. Throws what `seal`
   * rejects with.
   */
  sealNow(batch: Uint8Array, ttl: number = DEFAULT_DATA_TTL): Uint8Array {
    const message = new Uint8Array(DATA_HEADER_BYTES + batch.length + AEAD_TAG_BYTES);
    this.sealInto(batch, message, ttl);
    return message;
  }

  /** `sealNow` into `out` (header, ciphertext, tag from its start); returns the message's length. */
  sealInto(batch: Uint8Array, out: Uint8Array, ttl: number = DEFAULT_DATA_TTL): number {
    if (!this.#aes) throw new RangeError("this stream has no cipher on this thread: use seal()");
    const length = DATA_HEADER_BYTES + batch.length + AEAD_TAG_BYTES;
    if (out.length < length) throw new RangeError(`${out.length} bytes cannot hold a message of ${length}`);
    const { counter, header } = this.#take(batch, ttl, out);
    this.#aes.seal(
      nonceFor(counter, this.#iv),
      dataAad(header),
      batch,
      out.subarray(DATA_HEADER_BYTES, length),
    );
    return length;
  }

  /**
   * Seals a batch (see BatchBuilder) into a complete data message for `secrets.peer`. The batch is copied by
   * WebCrypto when the call starts, so the caller may reuse its buffer as soon as this returns a promise.
   */
  seal(batch: Uint8Array, ttl: number = DEFAULT_DATA_TTL): Promise<Uint8Array> {
    let next;
    try {
      if (this.sealsNow(batch.length) || !this.secrets.key) return Promise.resolve(this.sealNow(batch, ttl));
      next = this.#take(batch, ttl);
    } catch (error) {
      return Promise.reject(error);
    }
    const { counter, header } = next;
    const key = this.secrets.key!; // without one, sealNow took the batch above
    return crypto.subtle.encrypt(
      {
        name: "AES-GCM",
        iv: nonceFor(counter) as BufferSource,
        additionalData: dataAad(header) as BufferSource,
      },
      key,
      batch as BufferSource,
    ).then((sealed) => {
      // WebCrypto cannot encrypt into place, so this is the one copy on the send path.
      const message = new Uint8Array(DATA_HEADER_BYTES + sealed.byteLength);
      message.set(header);
      message.set(new Uint8Array(sealed), DATA_HEADER_BYTES);
      return message;
    });
  }

  /** Checks the limits, takes the next counter and writes the message's header; throws when it may not seal. */
  #take(
    batch: Uint8Array,
    ttl: number,
    header: Uint8Array = new Uint8Array(DATA_HEADER_BYTES),
  ): { counter: number; header: Uint8Array } {
    if (batch.length > MAX_BATCH_BYTES) {
      throw new RangeError(`batch of ${batch.length} bytes exceeds ${MAX_BATCH_BYTES}`);
    }
    if (this.clock() - this.secrets.createdAt >= REJECT_AFTER_MS) {
      throw new StreamError("expired", `stream ${toHex(this.secrets.id)} is past its lifetime`);
    }
    if (this.#next >= this.#limit) {
      throw new StreamError(
        "exhausted",
        `stream ${toHex(this.secrets.id)} ${
          this.handedOver ? "was handed to another thread" : "used all its counters"
        }`,
      );
    }
    const counter = this.#next++;
    writeDataHeader(header, {
      type: DataType.Packets,
      destination: this.secrets.peer,
      stream: this.secrets.id,
      counter,
      ttl,
    });
    return { counter, header };
  }
}

/** The receiving end of a stream. */
export class StreamOpener {
  readonly #window: ReplayWindow;
  readonly #self: Uint8Array;
  readonly #aes: SyncAesGcm | undefined;
  readonly clock: () => number;
  /** The nonce of the synchronous cipher's calls. */
  readonly #iv = new Uint8Array(12);
  /** Set once another thread opens this stream's messages (see `handOver`): this one refuses them all. */
  #moved = false;

  constructor(
    readonly secrets: StreamSecrets,
    options: { self: Uint8Array; clock: () => number; window?: ReplayWindow },
  ) {
    this.#self = options.self;
    this.clock = options.clock;
    this.#window = options.window ?? new ReplayWindow();
    this.#aes = secrets.aes;
  }

  /** The opener another thread makes of a handover: the same replay window, its own cipher for the key. */
  static fromHandover(
    h: OpenerHandover,
    options: { self: Uint8Array; clock: () => number; aes?: SyncAesGcm },
  ): StreamOpener {
    return new StreamOpener(
      { id: h.id, peer: h.peer, raw: h.raw, aes: options.aes, createdAt: h.createdAt },
      {
        ...options,
        window: ReplayWindow.restore(h.window),
      },
    );
  }

  /**
   * Gives the stream, with the counters accepted so far, to another thread; from now on this opener refuses
   * everything, so a message is never accepted by both. Call it with no `open` in flight: its counter would be
   * missing from the window handed over.
   */
  handOver(): OpenerHandover {
    const { id, peer, raw, createdAt } = this.secrets;
    if (!raw) {
      throw new Error(`stream ${toHex(id)}: only a stream whose key bytes are known can be handed over`);
    }
    if (this.#moved) throw new Error(`stream ${toHex(id)} was already handed over`);
    this.#moved = true;
    return { id, peer, raw, createdAt, window: this.#window.snapshot() };
  }

  /** Whether another thread opens this stream's messages now. */
  get handedOver(): boolean {
    return this.#moved;
  }

  /** True once this stream refuses everything. */
  expired(): boolean {
    return this.clock() - this.secrets.createdAt >= REJECT_AFTER_MS;
  }

  /** Whether `message` is opened on this thread: `openNow` takes it. */
  opensNow(message: Uint8Array): boolean {
    return this.#aes !== undefined &&
      (message.length <= DATA_HEADER_BYTES + SYNC_AES_BYTES + AEAD_TAG_BYTES || !this.secrets.key);
  }

  /**
   * Opens a message on this thread and returns its batch at once: what `open` resolves with, without a promise.
   * For small messages (see `opensNow`), or any where the thread has nothing else to do. Throws what `open`
   * rejects with.
   */
  openNow(message: Uint8Array): Uint8Array {
    const plain = new Uint8Array(Math.max(0, message.length - DATA_HEADER_BYTES - AEAD_TAG_BYTES));
    this.openInto(message, plain);
    return plain;
  }

  /** `openNow` into `out` (the batch from its start); returns the batch's length. */
  openInto(message: Uint8Array, out: Uint8Array): number {
    if (!this.#aes) throw new RangeError("this stream has no cipher on this thread: use open()");
    const header = this.#check(message);
    const sealed = sealedPart(message);
    const length = Math.max(0, sealed.length - AEAD_TAG_BYTES);
    if (out.length < length) throw new RangeError(`${out.length} bytes cannot hold a batch of ${length}`);
    if (
      !this.#aes.open(nonceFor(header.counter, this.#iv), dataAad(message), sealed, out.subarray(0, length))
    ) {
      throw new StreamError("auth", "data message does not authenticate (tampered, or another key)");
    }
    this.#accept(header.counter);
    return length;
  }

  /** Returns the batch inside `message`, or throws StreamError. The result is a fresh buffer. */
  async open(message: Uint8Array): Promise<Uint8Array> {
    if (this.opensNow(message) || !this.secrets.key) return this.openNow(message);
    const header = this.#check(message);
    let plain: ArrayBuffer;
    try {
      plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: nonceFor(header.counter) as BufferSource,
          additionalData: dataAad(message) as BufferSource,
        },
        this.secrets.key!, // without one, openNow took the message above
        sealedPart(message) as BufferSource,
      );
    } catch (cause) {
      throw new StreamError("auth", "data message does not authenticate (tampered, or another key)", {
        cause,
      });
    }
    // Checked again after the await: another message with this counter may have been accepted meanwhile.
    this.#accept(header.counter);
    return new Uint8Array(plain);
  }

  /** Reads and checks a message's header before it is decrypted; throws StreamError. */
  #check(message: Uint8Array): DataHeader {
    let header;
    try {
      header = readDataHeader(message);
    } catch (cause) {
      if (cause instanceof WireError) throw new StreamError("malformed", cause.message, { cause });
      throw cause;
    }
    if (this.#moved) {
      throw new StreamError("moved", `stream ${toHex(this.secrets.id)} is opened by another thread`);
    }
    if (!bytesEqual(header.stream, this.secrets.id)) {
      throw new StreamError(
        "wrong-stream",
        `message for stream ${toHex(header.stream)} given to another stream`,
      );
    }
    if (!bytesEqual(header.destination, this.#self)) {
      throw new StreamError("misdirected", `message for node ${toHex(header.destination)} reached this node`);
    }
    if (this.expired()) {
      throw new StreamError("expired", `stream ${toHex(this.secrets.id)} is past its lifetime`);
    }
    if (!this.#window.check(header.counter)) {
      throw new StreamError("replayed", `counter ${header.counter} was seen before or is outside the window`);
    }
    return header;
  }

  /** Marks an authenticated counter as seen; throws StreamError if it was taken meanwhile. */
  #accept(counter: number): void {
    if (!this.#window.accept(counter)) {
      throw new StreamError("replayed", `counter ${counter} was seen before or is outside the window`);
    }
  }
}
