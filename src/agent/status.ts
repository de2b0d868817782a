/**
 * The JSON a running node reports: `status --json` prints a `NodeStatus`, `peers --json` an array of `PeerStatus`.
 * This is a contract (DESIGN.md): extend it, never rename a field.
 * @module
 */

import type { SubnetRoute } from "../portal/subnets.ts";
export type { SubnetRoute };

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
  rttMs?: number;
  txBytes: number;
  rxBytes: number;
  taints: string[];
  pq: true;
}

/** The node, as `status --json` prints it. */
export interface NodeStatus {
  id: string;
  nodeId: string;
  tag: string;
  ips: string[];
  realm: string;
  taints: string[];
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
  /** Control messages dropped, by reason. */
  dropped: Record<string, number>;
  /** Destinations this node is sending to now (one egress each). */
  egresses: number;
  /** Receiving streams (one per peer sending to this node, per rekey). */
  ingresses: number;
  /** Relays known for the destinations with traffic. */
  relays: number;
  /** Stream handshakes that failed or timed out. */
  handshakeFailures: number;
  /** DNS responses by outcome (absent when the node serves no DNS). */
  dns?: Record<string, number>;
  /** The subnets this node offers as a portal (empty when it is not one). */
  portal: string[];
  /** Subnets reached through portals: the portal chosen for each, and the others offering the same subnet. */
  subnets: SubnetRoute[];
}
