// @ts-types="./dns_packet.d.ts"
import * as dnsPacket from "dns-packet";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { assert, assertEquals } from "../../tests/assert.ts";
import { prng, randomBytes } from "../../tests/fuzz.ts";
import { DnsServer, type DnsServerOptions } from "./server.ts";

/**
 * Deno.test with the resource and op sanitizers on (this Deno leaves them off by default): a socket, timer or
 * read left behind by the server fails the test.
 */
function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeOps: true, sanitizeResources: true, fn });
}

const B = { tag: "b", ipv4: Uint8Array.of(10, 128, 0, 3), ipv6: new Uint8Array(16) };

function query(name: string, id = 7): Uint8Array {
  return new Uint8Array(
    dnsPacket.encode({ type: "query", id, flags: 0x0100, questions: [{ name, type: "A" }] }),
  );
}

function rcodeAndData(bytes: Uint8Array) {
  const p = dnsPacket.decode(Buffer.from(bytes));
  return { id: p.id, rcode: (p.flags ?? 0) & 0xf, data: (p.answers ?? []).map((a) => a.data) };
}

async function server(o: Partial<DnsServerOptions> = {}): Promise<DnsServer> {
  return await DnsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    lookup: (tag) => Promise.resolve(tag === "b" ? [B] : []),
    upstreams: [],
    allowed: () => true,
    log: () => {},
    ...o,
  });
}

/** A UDP client; `ask` resolves with the next datagram, or undefined after `ms`. */
async function udpClient() {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const inbox: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  socket.on("message", (m: Buffer) => {
    inbox.push(new Uint8Array(m));
    wake?.();
  });
  return {
    send: (port: number, data: Uint8Array) => socket.send(data, port, "127.0.0.1"),
    async next(ms = 2000): Promise<Uint8Array | undefined> {
      if (inbox.length === 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, ms);
        });
        clearTimeout(timer);
      }
      return inbox.shift();
    },
    drain: () => inbox.splice(0),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

async function tcpAsk(port: number, ...queries: Uint8Array[]): Promise<Uint8Array[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const framed = queries.flatMap((q) => [q.length >> 8, q.length & 0xff, ...q]);
    await conn.write(new Uint8Array(framed));
    const out: Uint8Array[] = [];
    let buffered = new Uint8Array(0);
    while (out.length < queries.length) {
      const chunk = new Uint8Array(4096);
      const n = await conn.read(chunk);
      if (n === null) break;
      buffered = new Uint8Array([...buffered, ...chunk.subarray(0, n)]);
      while (buffered.length >= 2 && buffered.length >= 2 + ((buffered[0]! << 8) | buffered[1]!)) {
        const len = (buffered[0]! << 8) | buffered[1]!;
        out.push(buffered.slice(2, 2 + len));
        buffered = buffered.slice(2 + len);
      }
    }
    return out;
  } finally {
    conn.close();
  }
}

test("dns server: answers over UDP and TCP (two queries on one connection, in order)", async () => {
  await using s = await server();
  const client = await udpClient();
  try {
    client.send(s.port, query("b.veilnet"));
    assertEquals(rcodeAndData((await client.next())!), { id: 7, rcode: 0, data: ["10.128.0.3"] });
  } finally {
    await client.close();
  }
  const [one, two] = await tcpAsk(s.port, query("b.veilnet", 1), query("nobody.veilnet", 2));
  assertEquals(rcodeAndData(one!), { id: 1, rcode: 0, data: ["10.128.0.3"] });
  assertEquals(rcodeAndData(two!), { id: 2, rcode: 3, data: [] });
});

test("dns server: after 10,000 garbage datagrams it still answers valid queries", async () => {
  await using s = await server();
  const client = await udpClient();
  try {
    const rand = prng(99);
    for (let i = 0; i < 10_000; i++) {
      const garbage = randomBytes(rand, Math.floor(rand() * 700));
      if (garbage.length >= 3) garbage[2]! &= 0x7f; // mostly "queries", so most get a FORMERR back
      client.send(s.port, garbage);
      // Paced so that the kernel's socket buffer does not drop them before the server sees them.
      if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    client.drain();
    client.send(s.port, query("b.veilnet", 9));
    let answer: Uint8Array | undefined;
    while ((answer = await client.next()) && !(answer[0] === 0 && answer[1] === 9)) { /* late FORMERRs */ }
    assertEquals(rcodeAndData(answer!), { id: 9, rcode: 0, data: ["10.128.0.3"] });
    const seen = [...s.responder.counts.values()].reduce((a, b) => a + b, 0);
    assert(seen > 9_000, `the server saw ${seen} of 10,001 datagrams`);
    assert(s.responder.counts.get("formerr")! > 8_000, "garbage gets FORMERR");
  } finally {
    await client.close();
  }
  assertEquals(rcodeAndData((await tcpAsk(s.port, query("b.veilnet", 10)))[0]!).data, ["10.128.0.3"]);
});

test("dns server: a TCP length above the limit closes that connection only", async () => {
  await using s = await server();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
  await conn.write(Uint8Array.of(0xff, 0xff, 1, 2, 3));
  assertEquals(await conn.read(new Uint8Array(10)), null);
  conn.close();
  assertEquals(rcodeAndData((await tcpAsk(s.port, query("b.veilnet")))[0]!).data, ["10.128.0.3"]);
});

test("dns server: clients it does not allow get nothing", async () => {
  await using s = await server({ allowed: () => false });
  const client = await udpClient();
  try {
    client.send(s.port, query("b.veilnet"));
    assertEquals(await client.next(300), undefined);
  } finally {
    await client.close();
  }
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
  assertEquals(await conn.read(new Uint8Array(10)), null);
  conn.close();
  assertEquals(s.ignored, 2);
});

/** A resolver for everything else, on UDP and TCP: answers every A query with 192.0.2.1. */
async function fakeUpstream() {
  const answer = (query: Uint8Array) => {
    const q = dnsPacket.decode(Buffer.from(query));
    return new Uint8Array(dnsPacket.encode({
      type: "response",
      id: q.id,
      flags: 0x8180,
      questions: q.questions,
      answers: [{ type: "A", name: q.questions![0]!.name, ttl: 60, data: "192.0.2.1" }],
    }));
  };
  const udp = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", resolve));
  udp.on("message", (m: Buffer, from: dgram.RemoteInfo) => udp.send(answer(m), from.port, from.address));
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: udp.address().port });
  const serving = (async () => {
    for await (const conn of tcp) {
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf) ?? 0;
      const reply = answer(buf.subarray(2, n));
      await conn.write(new Uint8Array([reply.length >> 8, reply.length & 0xff, ...reply]));
      conn.close();
    }
  })();
  return {
    port: udp.address().port,
    async [Symbol.asyncDispose]() {
      tcp.close();
      await serving.catch(() => {});
      await new Promise<void>((resolve) => udp.close(() => resolve()));
    },
  };
}

test("dns server: other names go to the upstream; a query forwarded back to us is not forwarded again", async () => {
  {
    await using upstream = await fakeUpstream();
    await using s = await server({ upstreams: [{ hostname: "127.0.0.1", port: upstream.port }] });
    const client = await udpClient();
    try {
      client.send(s.port, query("example.com", 11));
      assertEquals(rcodeAndData((await client.next())!), { id: 11, rcode: 0, data: ["192.0.2.1"] });
    } finally {
      await client.close();
    }
    assertEquals(rcodeAndData((await tcpAsk(s.port, query("example.com", 12)))[0]!).data, ["192.0.2.1"]);
  }

  // A resolver that asks us back: we are our own upstream. The looped copy is refused, the loop ends.
  const port = await freeUdpPort();
  await using loop = await server({ port, upstreams: [{ hostname: "127.0.0.1", port }] });
  const client = await udpClient();
  try {
    client.send(loop.port, query("example.org", 13));
    const answer = rcodeAndData((await client.next(5000))!);
    assertEquals([answer.id, answer.rcode], [13, 2]);
    assertEquals(loop.responder.counts.get("servfail"), 1);
    // One hop: the copy that came back was recognised (by the id we sent it under), not forwarded again.
    assertEquals(loop.responder.counts.get("forwarded"), 1);
  } finally {
    await client.close();
  }
});

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A datagram from `from` (a socket bound there) to `to`, then the socket is closed. */
async function sendFrom(from: { address: string; port: number }, to: dgram.RemoteInfo, data: Uint8Array) {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(from.port, from.address, resolve));
  await new Promise<void>((resolve) => s.send(data, to.port, to.address, () => resolve()));
  await new Promise<void>((resolve) => s.close(() => resolve()));
}

/** A response to `query` (its id unless `id` says otherwise) giving `address` for its one A question. */
function answerTo(query: Uint8Array, address: string, o: { id?: number; name?: string } = {}): Uint8Array {
  const q = dnsPacket.decode(Buffer.from(query));
  const name = o.name ?? q.questions![0]!.name;
  return new Uint8Array(dnsPacket.encode({
    type: "response",
    id: o.id ?? q.id,
    flags: 0x8180,
    questions: [{ name, type: "A" }],
    answers: [{ type: "A", name, ttl: 60, data: address }],
  }));
}

test("dns server: a forged UDP answer (another port, another address, another id or question) is dropped and counted; the upstream's is used", async () => {
  // The upstream sees the query, then four forgeries reach the forwarding socket before its own answer does. Each
  // fails exactly one check, so each check alone is what keeps its forgery out.
  const upstream = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => upstream.bind(0, "127.0.0.1", resolve));
  const port = upstream.address().port;
  const ids: number[] = [];
  upstream.on("message", async (m: Buffer, from: dgram.RemoteInfo) => {
    const q = new Uint8Array(m);
    ids.push((q[0]! << 8) | q[1]!);
    await sendFrom({ address: "127.0.0.1", port: 0 }, from, answerTo(q, "6.6.6.1")); // another port
    await sendFrom({ address: "127.0.0.2", port }, from, answerTo(q, "6.6.6.2")); // another address, same port
    const wrongId = (((q[0]! << 8) | q[1]!) + 1) & 0xffff;
    upstream.send(answerTo(q, "6.6.6.3", { id: wrongId }), from.port, from.address);
    upstream.send(answerTo(q, "6.6.6.4", { name: "example.net" }), from.port, from.address);
    setTimeout(() => upstream.send(answerTo(q, "192.0.2.1"), from.port, from.address), 50);
  });
  try {
    await using s = await server({ upstreams: [{ hostname: "127.0.0.1", port }] });
    const client = await udpClient();
    try {
      for (const id of [21, 21]) {
        client.send(s.port, query("example.com", id));
        assertEquals(rcodeAndData((await client.next())!), { id, rcode: 0, data: ["192.0.2.1"] });
      }
    } finally {
      await client.close();
    }
    assertEquals(s.rejectedAnswers, 8);
    // Our own id upstream, not the client's (both equal to 21 by chance: one in 2^32).
    assert(ids.length === 2 && ids.some((id) => id !== 21), `ids upstream: ${ids}`);
  } finally {
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  }
});

/** A TCP upstream that accepts and reads but never answers; it records when the forwarder closes on it. */
function silentTcpUpstream() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const closedByPeer: Promise<void>[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      closedByPeer.push((async () => {
        const buf = new Uint8Array(4096);
        while (await conn.read(buf).catch(() => null) !== null) { /* swallow the query */ }
      })());
    }
  })();
  return {
    port: listener.addr.port,
    conns,
    closedByPeer,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving.catch(() => {});
      for (const c of conns) c.close();
      await Promise.all(closedByPeer);
    },
  };
}

/**
 * A TCP listener that never accepts: `fill` fills its accept queue (connections that are never accepted) until a
 * connect no longer completes, so the kernel drops further SYNs, as a blackholed address does. The ~512 held
 * connections take as many ephemeral ports: bind other sockets to port 0 before filling. Disposing closes all.
 */
function fullTcpListener() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const dispose = () => {
    for (const c of held) c.close();
    listener.close();
  };
  // Linux queues about 512 (the listen backlog + 1); more would mean the kernel does not stall connects here.
  const fill = async () => {
    for (let full = false; !full;) {
      if (held.length > 10_000) {
        throw new Error(
          "10,000 connects completed to a listener that accepts none: cannot make one that stalls",
        );
      }
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 200);
      try {
        held.push(
          await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port, signal: abort.signal }),
        );
      } catch (error) {
        if (!abort.signal.aborted) throw error;
        full = true; // this connect hung: the backlog is full
      } finally {
        clearTimeout(timer);
      }
    }
  };
  return { port: listener.addr.port, fill, [Symbol.dispose]: dispose };
}

/** `promise`, or "timeout" if it has not settled within `ms`. */
async function within<T>(ms: number, promise: Promise<T>): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), ms));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Forwards a TCP query to `port` with a 400 ms upstream timeout; meanwhile other clients are answered at once, and
 * the forward ends in SERVFAIL within the timeout (plus slack). Returns how long the forward took (ms).
 */
async function forwardStuckTcp(port: number, beforeForwarding?: () => Promise<void>): Promise<number> {
  await using s = await server({ upstreams: [{ hostname: "127.0.0.1", port }], forwardTimeoutMs: 400 });
  await beforeForwarding?.();
  const started = performance.now();
  const forwarded = tcpAsk(s.port, query("example.com", 31));
  await new Promise((resolve) => setTimeout(resolve, 50));
  // The server stays responsive while the forward waits: over TCP on another connection, and over UDP.
  const other = await within(200, tcpAsk(s.port, query("b.veilnet", 32)));
  assert(other !== "timeout", "a TCP query waited behind a stuck forward");
  assertEquals(rcodeAndData(other[0]!).data, ["10.128.0.3"]);
  const client = await udpClient();
  try {
    client.send(s.port, query("b.veilnet", 33));
    assertEquals(rcodeAndData((await client.next(200))!).data, ["10.128.0.3"]);
  } finally {
    await client.close();
  }
  const answer = await within(1_500, forwarded);
  assert(answer !== "timeout", "the forward to a stuck upstream did not end within 1.5 s (timeout 400 ms)");
  assertEquals([rcodeAndData(answer[0]!).id, rcodeAndData(answer[0]!).rcode], [31, 2]);
  return performance.now() - started;
}

test("dns server: a TCP upstream that accepts and never answers costs the timeout, and its connection is closed", async () => {
  await using upstream = silentTcpUpstream();
  const took = await forwardStuckTcp(upstream.port);
  assert(took >= 350, `gave up after ${took} ms, before the timeout`);
  assertEquals(upstream.conns.length, 1);
  const closed = await within(500, Promise.all(upstream.closedByPeer));
  assert(closed !== "timeout", "the forwarder left its connection to the upstream open");
});

test("dns server: a TCP upstream that never accepts the connection costs the timeout", async () => {
  using upstream = fullTcpListener();
  const took = await forwardStuckTcp(upstream.port, upstream.fill);
  assert(took >= 350, `gave up after ${took} ms, before the timeout`);
});
