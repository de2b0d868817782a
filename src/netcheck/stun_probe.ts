/**
 * A STUN client for `netcheck`: one local UDP socket asks a STUN server on a few ports what address and port it
 * sees. One socket for all of them is the point: a NAT that keeps one mapping for the socket shows the same
 * public address:port to every port, a port-randomising one shows a new one each time.
 * @module
 */

import dgram from "node:dgram";
import { formatAddress } from "../tun/ip.ts";
import { bindingRequest, decodeStun, readXorMappedAddress, StunClass } from "../wire/stun.ts";
import { endpoint, type StunMapping } from "./report.ts";

/** When to (re)send each request, in ms after the start: RFC 5389 retransmits with doubling intervals. */
const SEND_AT_MS = [0, 250, 750, 1_500];

/**
 * Asks `host` on each of `o.ports` (from one socket), resending until each answered or `o.timeoutMs` (default 2.5
 * s) passed. A host name is resolved by the socket (the system resolver). Never throws for an unanswered port: it
 * has no `mapped` then.
 */
export async function probeStun(
  host: string,
  o: { ports: number[]; timeoutMs?: number },
): Promise<StunMapping[]> {
  const { ports, timeoutMs = 2_500 } = o;
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  const socket = dgram.createSocket(bare.includes(":") ? "udp6" : "udp4");
  const asks = ports.map((port) => ({
    port,
    id: crypto.getRandomValues(new Uint8Array(12)),
    /** When the request was last sent (a retransmission's answer is timed from the retransmission). */
    sentAt: 0,
    result: { server: endpoint(bare, port) } as StunMapping,
  }));
  const timers: ReturnType<typeof setTimeout>[] = [];
  try {
    await new Promise<void>((resolve) => {
      const finish = () => resolve();
      socket.on("error", () => {}); // an ICMP "unreachable" on send: the port simply stays unanswered
      socket.on("message", (msg, rinfo) => {
        let message;
        try {
          message = decodeStun(new Uint8Array(msg));
        } catch {
          return; // not STUN
        }
        const ask = asks.find((a) =>
          a.port === rinfo.port && a.id.every((b, i) => b === message.transactionId[i])
        );
        if (!ask || ask.result.mapped || message.class !== StunClass.Success) return;
        try {
          const mapped = readXorMappedAddress(message);
          if (!mapped) return;
          ask.result.mapped = endpoint(formatAddress(mapped.address), mapped.port);
          ask.result.rttMs = performance.now() - ask.sentAt;
        } catch {
          return;
        }
        if (asks.every((a) => a.result.mapped)) finish();
      });
      socket.bind(0, () => {
        for (const at of SEND_AT_MS.filter((t) => t < timeoutMs)) {
          timers.push(setTimeout(() => {
            for (const a of asks) {
              if (a.result.mapped) continue;
              a.sentAt = performance.now();
              socket.send(bindingRequest(a.id), a.port, bare, () => {});
            }
          }, at));
        }
        timers.push(setTimeout(finish, timeoutMs));
      });
    });
  } finally {
    for (const t of timers) clearTimeout(t);
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
  return asks.map((a) => a.result);
}
