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
/** A node announces itself this often (and at once when it sees a new peer, at most once a second). */
export const ANNOUNCE_INTERVAL_MS = 5_000;
/** A peer not heard from for this long leaves the peer table. */
export const PEER_TTL_MS = 15_000;
/** A node renews its session when this share of the certificate's lifetime has passed. */
export const RENEW_AT_FRACTION = 2 / 3;
/** Retry delays for Guardian logins that fail (ms), the last one repeating. */
export const LOGIN_RETRY_MS = [1_000, 2_000, 5_000, 10_000, 30_000];
