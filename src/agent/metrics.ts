/**
 * Prometheus text and a health check for one node, served on loopback only and only when asked
 * (`run --metrics 127.0.0.1:9464`). The numbers are the ones `status --json` and `peers --json` report.
 *
 * Listening on loopback keeps other hosts out, not web pages: a page in a browser on this host can point its own
 * name at 127.0.0.1 (DNS rebinding) and read the answer as same-origin. Such a request carries the page's name in
 * its Host header, so every request whose Host is not a loopback name is refused (403) before anything else.
 * @module
 */

import type { NodeStatus, PeerStatus } from "./status.ts";

/** Renders the node's status as Prometheus text exposition (version 0.0.4). */
export function renderMetrics(s: NodeStatus, peers: PeerStatus[]): string {
  const out: string[] = [];
  const family = (name: string, type: "gauge" | "counter", help: string, samples: [string, number][]) => {
    out.push(`# HELP veilnet_${name} ${help}`, `# TYPE veilnet_${name} ${type}`);
    for (const [labels, value] of samples) out.push(`veilnet_${name}${labels} ${value}`);
  };
  const label = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  family("up", "gauge", "1 when the session is valid and the Master is connected.", [[
    "",
    s.connected.guardian && s.connected.master ? 1 : 0,
  ]]);
  family("peers", "gauge", "Peers this node may talk to.", [["", s.peers]]);
  family("tethers", "gauge", "Open tethers (WebRTC links to next hops).", [["", s.tethers]]);
  family("streams", "gauge", "Encrypted streams, both directions.", [["", s.streams]]);
  family("routes", "gauge", "Overlay routes installed.", [["", s.routes]]);
  family("portal_subnets_refused", "gauge", "Portal subnets refused: they cover this node's underlay.", [[
    "",
    s.refusedSubnets?.length ?? 0,
  ]]);
  family("relays", "gauge", "Relays known for destinations with traffic.", [["", s.relays]]);
  family("egresses", "gauge", "Destinations this node is sending to.", [["", s.egresses]]);
  family("ingresses", "gauge", "Receiving streams.", [["", s.ingresses]]);
  family("relayed_bytes_total", "counter", "Bytes carried for other nodes.", [["", s.relayed.bytes]]);
  family("backup_messages_total", "counter", "Messages sent over the backup pipeline.", [[
    "",
    s.backup.messages,
  ]]);
  family("backup_bytes_total", "counter", "Bytes sent over the backup pipeline.", [["", s.backup.bytes]]);
  family("handshake_failures_total", "counter", "Stream handshakes that failed or timed out.", [[
    "",
    s.handshakeFailures,
  ]]);
  family("streams_formed_total", "counter", "Sending streams formed (one per destination, then per rekey).", [
    [
      "",
      s.streamsFormed ?? 0,
    ],
  ]);
  family(
    "dropped_total",
    "counter",
    "Messages dropped, by reason.",
    Object.entries(s.dropped).map(([reason, n]) => [`{reason="${label(reason)}"}`, n]),
  );
  family(
    "dns_responses_total",
    "counter",
    "DNS responses, by outcome (upstream_rejected: upstream datagrams dropped as not the answer asked for).",
    Object.entries(s.dns ?? {}).map(([outcome, n]) => [`{outcome="${label(outcome)}"}`, n]),
  );
  for (
    const [name, key, help] of [["peer_tx_bytes_total", "txBytes", "Bytes sent to a peer."], [
      "peer_rx_bytes_total",
      "rxBytes",
      "Bytes received from a peer.",
    ]] as const
  ) {
    family(name, "counter", help, peers.map((p) => [`{tag="${label(p.tag)}",path="${p.path}"}`, p[key]]));
  }
  return out.join("\n") + "\n";
}

/** True for loopback hosts: metrics never listen anywhere else. */
export function isLoopback(hostname: string): boolean {
  return /^(127(\.\d{1,3}){3}|::1|localhost)$/.test(hostname);
}

/**
 * True when a Host header names a loopback host, with or without a port: `localhost`, `127.0.0.1` (any of
 * 127/8), `[::1]`. A missing header is not one (every browser sends it).
 */
export function isLoopbackHost(host: string | null): boolean {
  if (host === null) return false;
  const m = /^(?:\[([^\]]*)\]|([^:\[\]]*))(?::(\d{1,5}))?$/.exec(host.trim().toLowerCase());
  if (!m) return false;
  return m[1] !== undefined ? m[1] === "::1" : isLoopback(m[2]!);
}

/** Serves `/metrics` and `/healthz` (200 when connected, 503 otherwise) until `signal` aborts. */
export function serveMetrics(
  node: { status(): NodeStatus; peers(): PeerStatus[] },
  listen: { hostname: string; port: number },
  signal: AbortSignal,
): Deno.HttpServer {
  if (!isLoopback(listen.hostname)) {
    throw new Error(`metrics listen on loopback only (127.0.0.1 or ::1), not ${listen.hostname}`);
  }
  return Deno.serve({ ...listen, signal, onListen() {} }, (req) => {
    if (!isLoopbackHost(req.headers.get("host"))) {
      return new Response(
        "forbidden: metrics answer only to a loopback Host (localhost, 127.0.0.1 or [::1], with or without the port)\n",
        { status: 403 },
      );
    }
    const path = new URL(req.url).pathname;
    if (req.method !== "GET") return new Response("GET only\n", { status: 405 });
    if (path === "/metrics") {
      return new Response(renderMetrics(node.status(), node.peers()), {
        headers: { "content-type": "text/plain; version=0.0.4" },
      });
    }
    if (path === "/healthz") {
      const s = node.status();
      const ok = s.connected.guardian && s.connected.master;
      return new Response(ok ? "ok\n" : "not connected\n", { status: ok ? 200 : 503 });
    }
    return new Response("not found: /metrics or /healthz\n", { status: 404 });
  });
}
