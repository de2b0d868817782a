/**
 * Post-quantum identities, signed control messages, the stream handshake and stream sealing. Pure: no I/O; the
 * caller supplies clocks and moves bytes.
 * @module
 */

export {
  ControlRejected,
  ControlVerifier,
  type RejectReason,
  SeenIds,
  signControl,
} from "./control_signing.ts";
export type { Outgoing, SenderKeys } from "./control_signing.ts";
export { HandshakeError, type HandshakeErrorReason, Handshaker } from "./handshake.ts";
export { bytesEqual, Identity, nodeIdOf, sha256, toHex } from "./identity.ts";
export { type KemKeyPair, noble, pq, type PqBackend, type SigningKey, webcrypto } from "./pq.ts";
export { ReplayWindow } from "./replay_window.ts";
export {
  StreamError,
  type StreamErrorReason,
  StreamOpener,
  StreamSealer,
  type StreamSecrets,
} from "./stream.ts";
