/**
 * Signing and verifying control messages. A receiver acts on a control message only after `ControlVerifier`
 * returned it: well-formed, addressed to this node (or to all), dated within CONTROL_MAX_SKEW_MS of this node's
 * clock, never seen before, from a sender whose node id matches the public key its certificate vouches for, and
 * signed by that key. Access control (realm, taints) is the caller's next step, on the returned sender.
 *
 * The Guardian's messages (`Revoke`) are the one exception to "signed by a node": they come from the all-zero
 * sender and are signed by the realm key (`signRevocation`). Each side is closed to the other: a Revoke from any
 * other sender, or any other kind from the all-zero sender, is refused before signature work, and a Revoke is
 * checked against the realm key only, so no node key can ever make one.
 * @module
 */

import { Refused } from "../errors.ts";
import { CONTROL_MAX_SKEW_MS, CONTROL_SIGNATURE_CONTEXT } from "../spec.ts";
import { SEEN_IDS_CAPACITY } from "../tuning.ts";
import { WireError } from "../wire/bytes.ts";
import {
  type AnyControlMessage,
  BROADCAST,
  type ControlBody,
  type ControlFields,
  ControlKind,
  decodeControl,
  encodeControlUnsigned,
  GUARDIAN_SENDER,
  isZero,
  NO_CERT_REF,
  withSignature,
} from "../wire/control.ts";
import { bytesEqual, domainSeparated, type Identity, nodeIdOf, toHex } from "./identity.ts";
import { pq, type PqBackend, type SigningKey } from "./pq.ts";

const context = new TextEncoder().encode(CONTROL_SIGNATURE_CONTEXT);

const signingInput = (signed: Uint8Array) => domainSeparated(context, signed);

/** The kinds a node sends (everything but the Guardian's `Revoke`). */
export type NodeKind = Exclude<ControlKind, ControlKind.Revoke>;

/** What a sender fills in; `sender`, `timestamp` and `id` are added by `signControl`. */
export type Outgoing<K extends ControlKind> = Omit<ControlFields<K>, "sender" | "timestamp" | "id">;

/** Encodes and signs a control message from `identity`, dated `now` (ms), with a fresh random id. */
export async function signControl<K extends NodeKind>(
  identity: Identity,
  message: Outgoing<K>,
  now: number,
): Promise<Uint8Array> {
  if ((message.kind as ControlKind) === ControlKind.Revoke) {
    throw new TypeError(
      "a node never signs a Revoke: only the Guardian does, with the realm key (signRevocation)",
    );
  }
  const unsigned = encodeControlUnsigned({
    ...message,
    sender: identity.nodeId,
    timestamp: now,
    id: crypto.getRandomValues(new Uint8Array(16)),
  });
  return withSignature(unsigned, await identity.sign(signingInput(unsigned)));
}

/**
 * The Guardian's side: a Revoke (every certificate of `body.conflux` issued at or before `body.before` is void),
 * signed with the realm key, dated `now` (ms), from GUARDIAN_SENDER to everyone. Publish it on the realm's
 * broadcast subject (`realmSubjects(realmId).broadcast`).
 */
export async function signRevocation(
  realmKey: SigningKey,
  body: ControlBody<ControlKind.Revoke>,
  now: number,
): Promise<Uint8Array> {
  const unsigned = encodeControlUnsigned({
    kind: ControlKind.Revoke,
    sender: GUARDIAN_SENDER,
    recipient: BROADCAST,
    certRef: NO_CERT_REF,
    timestamp: now,
    id: crypto.getRandomValues(new Uint8Array(16)),
    body,
  });
  return withSignature(unsigned, await realmKey.sign(signingInput(unsigned)));
}

/** Why a control message was refused: a stable label for metrics and debug logs. */
export type RejectReason =
  | "malformed"
  | "misdirected"
  | "stale"
  | "replayed"
  | "unknown-sender"
  /** A Revoke not from the Guardian's all-zero sender, or another kind claiming that sender. */
  | "bad-sender"
  | "bad-signature";

/** A control message refused by `ControlVerifier`. Callers drop the message and count `reason`. */
export class ControlRejected extends Refused<RejectReason> {
  override name = "ControlRejected";
}

/** Remembers message ids until they could no longer pass the timestamp check, within a bounded capacity. */
export class SeenIds {
  #expiry = new Map<string, number>();

  constructor(readonly capacity: number = SEEN_IDS_CAPACITY) {}

  get size(): number {
    return this.#expiry.size;
  }

  /** Whether `id` is recorded and has not expired by `now`. */
  has(id: string, now: number): boolean {
    const known = this.#expiry.get(id);
    return known !== undefined && known >= now;
  }

  /** Records `id` until `until` (ms); false if it was already recorded and has not expired by `now`. */
  add(id: string, until: number, now: number): boolean {
    const known = this.#expiry.get(id);
    if (known !== undefined && known >= now) return false;
    this.#expiry.delete(id);
    // Map keeps insertion order, which is roughly expiry order, so pruning from the front and stopping at the first
    // live entry is cheap. An expired entry left behind is harmless: its message now fails the timestamp check.
    for (const [old, expiry] of this.#expiry) {
      if (expiry >= now && this.#expiry.size < this.capacity) break;
      this.#expiry.delete(old);
    }
    this.#expiry.set(id, until);
    return true;
  }
}

/** Looks up the public key a sender's certificate vouches for; undefined if no valid certificate is known. */
export type SenderKeys = (sender: Uint8Array, certRef: Uint8Array) => Uint8Array | undefined;

/** Checks incoming control messages for one node. */
export class ControlVerifier {
  readonly #self: Uint8Array;
  readonly #keys: SenderKeys;
  readonly #realmKey: Uint8Array | undefined;
  readonly #clock: () => number;
  readonly #seen: SeenIds;
  readonly #backend: PqBackend | undefined;

  constructor(options: {
    /** This node's id: messages for other recipients are refused. */
    self: Uint8Array;
    keys: SenderKeys;
    /** The realm's public key, which signs the Guardian's messages (Revoke); without it they are refused. */
    realmKey?: Uint8Array;
    /** Milliseconds since the Unix epoch. */
    clock: () => number;
    seen?: SeenIds;
    backend?: PqBackend;
  }) {
    this.#self = options.self;
    this.#keys = options.keys;
    this.#realmKey = options.realmKey;
    this.#clock = options.clock;
    this.#seen = options.seen ?? new SeenIds();
    this.#backend = options.backend;
  }

  /**
   * The checks that cost no signature work, on a decoded message: its recipient, its date, who may send its kind,
   * and whether it was received before. Throws ControlRejected. `verify` runs them first too; a receiver that has
   * more to do before the signature (a carried certificate to check) calls this first.
   */
  check(m: AnyControlMessage): void {
    if (!isBroadcast(m.recipient) && !bytesEqual(m.recipient, this.#self)) {
      throw new ControlRejected(
        "misdirected",
        `control message for ${toHex(m.recipient)}, this is not that node`,
      );
    }
    const now = this.#clock();
    if (Math.abs(now - m.timestamp) > CONTROL_MAX_SKEW_MS) {
      throw new ControlRejected(
        "stale",
        `control message dated ${
          now - m.timestamp
        } ms from this node's clock (limit ±${CONTROL_MAX_SKEW_MS} ms)`,
      );
    }
    const fromGuardian = isZero(m.sender);
    if (fromGuardian !== (m.kind === ControlKind.Revoke)) {
      throw new ControlRejected(
        "bad-sender",
        fromGuardian
          ? `a ${ControlKind[m.kind]} from the all-zero sender: only the Guardian's Revoke comes from it`
          : `a Revoke from node ${toHex(m.sender)}: only the Guardian (the all-zero sender) revokes`,
      );
    }
    // A replay costs a lookup, not a signature check (ids are recorded only once authentic, below).
    if (this.#seen.has(seenKey(m), now)) {
      throw new ControlRejected("replayed", `control message ${toHex(m.id)} was already received`);
    }
  }

  /**
   * Returns the decoded message if it passes every check, else throws ControlRejected. `key`: the sender's key
   * from the certificate the message itself carries (checked by the caller), used instead of a known one.
   */
  async verify(bytes: Uint8Array, key?: Uint8Array): Promise<AnyControlMessage> {
    let m: AnyControlMessage;
    try {
      m = decodeControl(bytes);
    } catch (cause) {
      if (cause instanceof WireError) throw new ControlRejected("malformed", cause.message, { cause });
      throw cause;
    }
    this.check(m);
    const fromGuardian = isZero(m.sender);
    if (fromGuardian) {
      key = this.#realmKey;
      if (!key) throw new ControlRejected("unknown-sender", "a Revoke, and this node knows no realm key");
    } else {
      key ??= this.#keys(m.sender, m.certRef);
      if (!key || !bytesEqual(await nodeIdOf(key), m.sender)) {
        throw new ControlRejected(
          "unknown-sender",
          `no valid certificate known for sender ${toHex(m.sender)}`,
        );
      }
    }
    const backend = this.#backend ?? await pq();
    if (!await backend.verify(key, signingInput(m.signed), m.signature)) {
      throw new ControlRejected(
        "bad-signature",
        fromGuardian
          ? "a Revoke not signed by the realm key"
          : `signature of ${toHex(m.sender)} does not verify`,
      );
    }
    // Recorded only once authentic, so forged messages cannot fill the cache; keyed by sender too, so one node
    // cannot shadow another's message by reusing its id.
    if (!this.#seen.add(seenKey(m), m.timestamp + CONTROL_MAX_SKEW_MS, this.#clock())) {
      throw new ControlRejected("replayed", `control message ${toHex(m.id)} was already received`);
    }
    return m;
  }
}

function seenKey(m: AnyControlMessage): string {
  return toHex(m.sender) + toHex(m.id);
}

function isBroadcast(recipient: Uint8Array): boolean {
  return isZero(recipient);
}
