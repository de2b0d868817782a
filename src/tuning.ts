/**
 * Tuning constants: local choices that peers never see. Changing one changes this node's behaviour or cost, never
 * the protocol (those constants are in `spec.ts`).
 * @module
 */

/** Control message ids remembered for replay protection (about 5 MiB at capacity). */
export const SEEN_IDS_CAPACITY = 65_536;
/** An initiator forgets a stream request that got no response within this time. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Most handshakes one node waits on at once (each holds an ML-KEM key pair). */
export const MAX_PENDING_HANDSHAKES = 1024;
