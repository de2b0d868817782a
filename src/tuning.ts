/**
 * Tuning constants: local choices that peers never see. Changing one changes this node's behaviour or cost, never
 * the protocol (those constants are in `spec.ts`).
 * @module
 */

/** Control message ids remembered for replay protection (about 5 MiB at capacity). */
export const SEEN_IDS_CAPACITY = 65_536;
/** An initiator forgets a stream request that got no response within this time. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Receiving streams one peer may hold at this node; a new one beyond replaces its oldest. */
export const MAX_STREAMS_PER_PEER = 4;
/** Most handshakes one node waits on at once (each holds an ML-KEM key pair). */
export const MAX_PENDING_HANDSHAKES = 1024;
/** A peer this node has had nothing to do with for this long leaves the peer table (it is looked up again). */
export const PEER_IDLE_MS = 10 * 60_000;
/** A message from a sender not known yet waits this long for the sender's certificate... */
export const HELD_MESSAGE_MS = 5_000;
/** ...at most this many per sender, and for this many senders at once; more are dropped. */
export const MAX_HELD_PER_SENDER = 16;
export const MAX_HELD_SENDERS = 256;
/** Packets kept per address while its owner is looked up, and addresses looked up at once; more are dropped. */
export const MAX_UNROUTED_PACKETS = 16;
export const MAX_UNROUTED_ADDRESSES = 64;
/** A lookup (of an address, a tag, or a node) waits this long for its answer. */
export const LOOKUP_WAIT_MS = 1_000;
/** A node renews its session when this share of the certificate's lifetime has passed. */
export const RENEW_AT_FRACTION = 2 / 3;
/** Retry delays for Guardian logins that fail (ms), the last one repeating. */
export const LOGIN_RETRY_MS = [1_000, 2_000, 5_000, 10_000, 30_000];
/** A link stops taking messages from the data path when its emptiest channel holds this many bytes... */
export const LINK_BUFFER_HIGH_BYTES = 1024 * 1024;
/** ...and takes them again when a channel drains below this. */
export const LINK_BUFFER_LOW_BYTES = 256 * 1024;
/** Data channels per tether: one, as several would reorder what each keeps in order (see tether/webrtc.ts). */
export const TETHER_CHANNELS = 1;
/** How long a tether's direct TCP connection may take to form (listen, connect, present the secret). */
export const DIRECT_TCP_TIMEOUT_MS = 2_000;
/**
 * The answering side of a tether offers the direct TCP connection this many times at most, this long apart, while
 * none is taken (no candidate pair selected yet, the connection not made in time): a peer it cannot reach over
 * TCP costs that many listening sockets, one at a time.
 */
export const DIRECT_TCP_OFFERS = 3;
export const DIRECT_TCP_RETRY_MS = 2_000;
/**
 * A direct connection lost while its tether lives (reset, dropped on the way, stalled) is offered again, this many
 * times per tether at most: a path that takes a connection but cannot carry it does not make the tether switch
 * back and forth for as long as it lives.
 */
export const DIRECT_TCP_RENEWALS = 3;
/** SCTP MTU of the data channels. */
export const TETHER_MTU = 1500;
/** A tether with no traffic either way for this long is dissolved (re-formed on the next packet). */
export const TETHER_IDLE_MS = 30_000;
/** A tether that has not opened this long after the first packet is given up (and retried later). */
export const TETHER_FORM_TIMEOUT_MS = 5_000;
/** Batches held for a destination whose stream is still forming (its handshake); more are dropped. */
export const MAX_PENDING_BATCHES = 64;
/** Seals in flight per destination before the TUN reader waits (the egress's elastic width). */
export const MAX_INFLIGHT_SEALS = 16;
/**
 * Concurrent multi-link: a path with this many bytes waiting to leave is backlogged, and the next batch to that
 * destination takes the emptiest of the paths it may spread over (the learner's spread)...
 */
export const SPILL_BYTES = 16 * 1024;
/**
 * ...and for this long after a backlog the destination's traffic stays with the main thread, which spreads it
 * (the worker's fast path sends on one connection only).
 */
export const SPREAD_HOLD_MS = 5_000;
/**
 * A destination spreads (on the main thread) only below this rate: faster than that, one connection in the worker
 * carries more than the main thread could over several paths.
 */
export const SPREAD_MAX_BYTES_PER_S = 50_000_000;
/**
 * While a destination's traffic spreads, its messages carry at most about this many bytes of packets (a TCP
 * super-packet is cut into its segments): a 64 KiB message takes 26 ms to cross a 20 Mbit/s path, which would hold
 * a TCP window above to one message in flight and reorder the paths by as much.
 */
export const SPREAD_BATCH_BYTES = 8 * 1024;
/**
 * A receiving stream holds a message that came before one sealed ahead of it (another path was slower) for at
 * most this long, and at most this many messages, before giving the missing one up as lost (see
 * anchor/reorder.ts).
 */
export const REORDER_HOLD_MS = 50;
export const REORDER_MAX_HELD = 128;
/** An egress with no packets for this long is retired. */
export const EGRESS_IDLE_MS = 30_000;
/** The route upkeep (relays asked for, hops formed) runs for destinations with traffic this recent. */
export const ROUTE_UPKEEP_MS = 3_000;
/** An offer with no answer is sent again this often (the control channel delivers at most once). */
export const OFFER_RESEND_MS = 1_000;
/** A stream request with no response is sent again this often. */
export const STREAM_REQUEST_RESEND_MS = 2_000;
/**
 * The first resend of a stream request comes this late; the gap then doubles up to STREAM_REQUEST_RESEND_MS. Not
 * sooner than a loaded host's handshake takes (0.1-0.8 s seen with twelve nodes starting at once on two cores).
 */
export const STREAM_REQUEST_FIRST_RESEND_MS = 1_000;
/** Open tethers are probed every second; one whose peer has been silent this long is dropped. */
export const LINK_DEAD_MS = 2_500;
/**
 * The longest an offer or answer waits for ICE candidates. Host candidates come at once and a reachable STUN
 * server answers within a round trip; one that never answers (UDP blocked) would hold every tether ~20 s.
 */
export const GATHER_MAX_MS = 2_000;
/**
 * libdatachannel's threads are released this long after the last peer connection closed: an idle node then has
 * no SCTP timer waking 100 times a second. Starting them again takes a few milliseconds.
 */
export const RTC_RELEASE_MS = 10_000;
/**
 * A running node hands back the file pages it read while starting (ffi/pages.ts) this long after it began to
 * serve: login, joining and the first announcements are over by then.
 */
export const STARTUP_PAGES_MS = 30_000;
/** A destination whose traffic took the backup pipeline is shown on it ("backup") this long after. */
export const BACKUP_SHOWN_MS = 2_000;
/** Bytes the backup pipeline may have published but not yet handed to the Master before sending waits. */
export const BACKUP_WINDOW_BYTES = 4 * 1024 * 1024;
/** A tether that failed to form is tried again after this long, doubling with each failure up to the max. */
export const TETHER_RETRY_MIN_MS = 1_000;
export const TETHER_RETRY_MAX_MS = 30_000;
/** A DNS question to the realm waits this long for owners of the tag to answer. */
export const DNS_ASK_WAIT_MS = 1_000;
/** After the first answer, other owners of the tag have this long to answer too. */
export const DNS_ANSWER_GRACE_MS = 50;
/** A tag is asked of the realm at most this often (a name no one owns costs the realm one question a second). */
export const DNS_ASK_INTERVAL_MS = 1_000;
/** Most questions in flight at once; lookups beyond it answer from what is known. */
export const MAX_DNS_ASKS = 32;
/** A node answers one asker at most this often. */
export const DNS_ANSWER_INTERVAL_MS = 100;
/** TTL of the records the DNS server gives (short: the next query sees a changed tag or address). */
export const DNS_TTL_S = 5;
/** Forwarded queries in flight at once; more get SERVFAIL. */
export const MAX_DNS_FORWARDS = 128;
/** An upstream resolver that has not answered within this time is given up for the next one. */
export const DNS_FORWARD_TIMEOUT_MS = 2_000;
/** Concurrent DNS-over-TCP connections; a TCP connection idle this long is closed. */
export const MAX_DNS_TCP_CONNECTIONS = 64;
export const DNS_TCP_IDLE_MS = 10_000;
/** A node reports what it sees to the Guardians this often, and this soon after one of its tethers changed. */
export const REPORT_MS = 30_000;
export const REPORT_AFTER_CHANGE_MS = 2_000;
/** How often a node asks the Guardian's STUN server how its NAT maps it, for its reports (and at every change). */
export const NAT_CHECK_MS = 5 * 60_000;
/** A report lists at most this many peers (those with the most traffic): its size does not grow with the realm. */
export const MAX_REPORT_PEERS = 64;
