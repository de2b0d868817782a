/**
 * veilnet-conflux as a library: run an overlay node inside a Deno program, the way `veilnet-conflux run` does.
 *
 * The program needs the node's permissions (see src/service/permissions.ts), and root (or CAP_NET_ADMIN) for the
 * TUN device; with `tun: false` it runs the control plane only.
 *
 * @example Start a node, wait for a peer, and close it
 * ```ts
 * import { startConflux } from "./mod.ts";
 *
 * await using node = await startConflux({
 *   token: Deno.env.get("VEILNET_CONFLUX_TOKEN")!,
 *   guardian: "https://guardian.example:8080",
 *   tag: "worker-1",
 *   signal: AbortSignal.timeout(60_000),
 * });
 * console.log(node.status().ips, node.status().connected);
 * for (const peer of node.peers()) console.log(peer.tag, peer.ips[0], peer.path);
 * ```
 * @module
 */

export { type Conflux, type ConfluxOptions, startConflux } from "./src/conflux.ts";
export type { NodeStatus, PeerStatus, SubnetRoute } from "./src/agent/status.ts";
export type { Owner } from "./src/agent/membership.ts";
