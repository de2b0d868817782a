/**
 * The JSON a running node reports: `status --json` prints a `NodeStatus`, `peers --json` an array of `PeerStatus`.
 * This is a contract (DESIGN.md): extend it, never rename a field.
 * @module
 */

import type { SubnetRoute } from "../portal/subnets.ts";
import type { RefusedSubnet } from "../portal/underlay.ts";
export type { RefusedSubnet, SubnetRoute };

/** Who registered a node, as its realm verified (OIDC) and signed into its certificate. */
export interface IdentityStatus {
  /** The identity provider's subject (`sub`): stable, unique per provider. */
  subject: string;
  /** The email the provider gave, when it gave one. */
  email?: string;
}

/**
 * The `identity` field of a status, from a certificate's `subject` and `email`: absent (an empty object to spread)
 * when the realm asks for no identity, and `email` absent when the provider gave none.
 */
export function identityStatus(cert: { subject: string; email: string }): { identity?: IdentityStatus } {
  if (cert.subject === "") return {};
  return { identity: { subject: cert.subject, ...(cert.email !== "" ? { email: cert.email } : {}) } };
}

/** One peer, as `peers --json` prints it. */
export interface PeerStatus {
  /** The peer's conflux id. */
  id: string;
  /** Its node id this session (hex of the key hash). */
  nodeId: string;
  tag: string;
  ips: string[];
  /** How traffic reaches it: no data plane yet means "none". */
  path: "direct" | "relay" | "backup" | "none";
  via?: string;
  /** What carries the tether to the next hop: a direct TCP connection, or WebRTC (SCTP over DTLS over UDP). */
  link?: "tcp" | "webrtc";
  rttMs?: number;
  /** Where the administrator placed the peer, when it did. */
  region?: string;
  /**
   * Why traffic to the peer has no path now: its direct tether is not open and no relay or backup pipeline it may
   * cross (geo-location control) is there. Its packets are dropped meanwhile.
   */
  waiting?: string;
  /**
   * With recent traffic: the paths the route learner weighs (the direct one, each relay that offered, the backup
   * pipeline when it carried some), what it measured of each, and the share of recent batches each carried.
   */
  routes?: RouteStatus[];
  txBytes: number;
  rxBytes: number;
  taints: string[];
  pq: true;
  /** Who registered the peer, from its certificate (absent when its realm asks for no identity). */
  identity?: IdentityStatus;
}

/** One path to a peer, as the route learner sees it (`peers --json`). */
export interface RouteStatus {
  /** "direct", a relay's tag, or "backup" (the pipeline over the Master). */
  via: string;
  /** The relay's node id (hex), for a relay. */
  nodeId?: string;
  /** Share of the batches of about the last 10 s that took this path (0..1). */
  share: number;
  /** Round trip through this path, smoothed (ms), once measured. */
  rttMs?: number;
  /** Share of messages not acknowledged, smoothed (0..1). */
  loss?: number;
  /** For a relay: its own round trip to the peer, as it shared it when it offered (ms): the learner's prior. */
  sharedMs?: number;
  /** Benched after a failure: until when (ms since the epoch). */
  benchedUntil?: number;
}

/** The node, as `status --json` prints it. */
export interface NodeStatus {
  id: string;
  nodeId: string;
  tag: string;
  ips: string[];
  realm: string;
  taints: string[];
  /** The realm's access model; by teams, how many identities this node holds and which teams it was denied. */
  access?: { model: "taints" | "teams"; identities: number; ignoredTeams: string[] };
  /** Who registered this node, from its certificate (absent when the realm asks for no identity). */
  identity?: IdentityStatus;
  /** Where the administrator placed this node, when it did. */
  region?: string;
  /** The regions its traffic may cross through a relay or the Master, when restricted. */
  regions?: string[];
  /** Where the Master (the backup pipeline) is, when the Guardian says. */
  masterRegion?: string;
  connected: {
    /** The session certificate is valid (the Guardian may be down meanwhile). */
    guardian: boolean;
    /** The control channel reaches the Master. */
    master: boolean;
  };
  /** When the session certificate expires (ms since the epoch). */
  certificateExpiresAt: number;
  peers: number;
  tethers: number;
  streams: number;
  routes: number;
  /** Messages this node carried for others (it cannot read them). */
  relayed: { messages: number; bytes: number };
  /** Messages this node sent over the backup pipeline (the control channel) because no tether could form. */
  backup: { messages: number; bytes: number };
  /**
   * Control messages dropped, by reason (among them `revoked`: a certificate the realm revoked, and `bad-sender`: a
   * Revoke not from the Guardian).
   */
  dropped: Record<string, number>;
  /**
   * Revocations this node holds: confluxes whose certificates issued up to a time it refuses (from the Guardian's
   * Revoke broadcasts and its login answers). Absent only from nodes older than the field.
   */
  revocations?: number;
  /** Destinations this node is sending to now (one egress each). */
  egresses: number;
  /**
   * Milliseconds the data plane's thread has spent per stage since start (tunRead, batch, seal, linkSend, receive,
   * open, tunWrite; see DataStages in src/anchor/anchor.ts). The data-plane worker's share is estimated from one
   * turn of its loop in eight (src/lane/worker.ts, STAGE_SAMPLE). Absent without a TUN.
   */
  stages?: Record<string, number>;
  /** With the data-plane worker (src/lane/): peers whose traffic it seals and sends itself, streams it opens. */
  worker?: { fastPeers: number; streams: number };
  /** Receiving streams (one per peer sending to this node, per rekey). */
  ingresses: number;
  /** Relays known for the destinations with traffic. */
  relays: number;
  /** Stream handshakes that failed or timed out. */
  handshakeFailures: number;
  /**
   * Sending streams formed since start: one per destination, then one per rekey (each stream is replaced after
   * two minutes). Absent from nodes older than the field.
   */
  streamsFormed?: number;
  /** DNS responses by outcome (absent when the node serves no DNS). */
  dns?: Record<string, number>;
  /** The subnets this node offers as a portal (empty when it is not one). */
  portal: string[];
  /** Subnets reached through portals: the portal chosen for each, and the others offering the same subnet. */
  subnets: SubnetRoute[];
  /**
   * Portal subnets refused because they cover an address this node's own traffic depends on (its own, a gateway,
   * the Guardian's, the Master's); each also counted once in `dropped` as `portal:covers-<kind>`.
   */
  refusedSubnets?: RefusedSubnet[];
}
