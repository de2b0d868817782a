import { assert, assertEquals } from "../../tests/assert.ts";
import { isLoopbackHost, serveMetrics } from "./metrics.ts";
import type { NodeStatus } from "./status.ts";

/** Deno.test with the resource and op sanitizers on (this Deno leaves them off by default). */
function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name, sanitizeOps: true, sanitizeResources: true, fn });
}

const STATUS: NodeStatus = {
  id: "c1",
  nodeId: "00",
  tag: "a",
  ips: [],
  realm: "r",
  taints: [],
  connected: { guardian: true, master: true },
  certificateExpiresAt: 0,
  peers: 0,
  tethers: 0,
  streams: 0,
  routes: 0,
  relayed: { messages: 0, bytes: 0 },
  backup: { messages: 0, bytes: 0 },
  dropped: {},
  egresses: 0,
  ingresses: 0,
  relays: 0,
  handshakeFailures: 0,
  portal: [],
  subnets: [],
};

/** One raw HTTP request with exactly the Host header given (none when null); the status code and body. */
async function get(
  port: number,
  path: string,
  host: string | null,
): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const request = host === null
      ? `GET ${path} HTTP/1.0\r\n\r\n`
      : `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65_536);
    for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
    const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    return { status: Number(text.split(" ")[1]), body: text.slice(text.indexOf("\r\n\r\n") + 4) };
  } finally {
    conn.close();
  }
}

test("metrics: answer only to a loopback Host (a rebound name like evil.example is refused)", async () => {
  const abort = new AbortController();
  const server = serveMetrics(
    { status: () => STATUS, peers: () => [] },
    { hostname: "127.0.0.1", port: 0 },
    abort.signal,
  );
  try {
    const port = (server.addr as Deno.NetAddr).port;
    for (
      const host of ["evil.example", `evil.example:${port}`, "127.0.0.1.evil.example", "localhost.evil", null]
    ) {
      for (const path of ["/metrics", "/healthz", "/nothing"]) {
        const r = await get(port, path, host);
        assertEquals(r.status, 403, `${path} with Host ${host}`);
        assert(r.body.includes("loopback Host"), r.body);
      }
    }
    for (
      const host of [`127.0.0.1:${port}`, "127.0.0.1", `localhost:${port}`, "LOCALHOST", `[::1]:${port}`]
    ) {
      const r = await get(port, "/metrics", host);
      assertEquals(r.status, 200, `Host ${host}`);
      assert(r.body.includes("veilnet_up 1"), r.body);
    }
    // A scraper that sets nothing special (as Prometheus does) sends the address it scrapes as Host.
    const scraped = await fetch(`http://127.0.0.1:${port}/metrics`);
    assertEquals(scraped.status, 200);
    assert((await scraped.text()).includes("veilnet_up 1"));
    assertEquals((await get(port, "/healthz", `127.0.0.1:${port}`)).status, 200);
  } finally {
    abort.abort();
    await server.finished;
  }
});

test("metrics: isLoopbackHost reads Host headers", () => {
  const vectors: [number, string | null, boolean][] = [
    [1, "localhost", true],
    [2, "localhost:9464", true],
    [3, "127.0.0.1", true],
    [4, "127.0.0.1:9464", true],
    [5, "127.1.2.3:80", true],
    [6, "[::1]", true],
    [7, "[::1]:9464", true],
    [8, "Localhost:9464", true],
    [9, "::1", false], // an IPv6 Host is bracketed
    [10, "evil.example", false],
    [11, "evil.example:9464", false],
    [12, "localhost.evil.example", false],
    [13, "127.0.0.1.nip.io", false],
    [14, "[::2]:9464", false],
    [15, "localhost:9464:1", false],
    [16, "localhost:http", false],
    [17, "", false],
    [18, null, false],
    [19, "[::1]evil", false],
    [20, "10.0.0.1:9464", false],
  ];
  for (const [n, host, expected] of vectors) assertEquals(isLoopbackHost(host), expected, `vector ${n}`);
});
