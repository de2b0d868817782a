import dgram from "node:dgram";
import { assert, assertEquals } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { formatAddress } from "../tun/ip.ts";
import { answerBinding, bindingRequest, decodeStun, readXorMappedAddress } from "../wire/stun.ts";
import { DEFAULT_STUN_LIMITS, SourceLimiter, StunServer } from "./stun_server.ts";

/** A UDP client on loopback that keeps every datagram it receives. */
async function client(): Promise<
  { socket: dgram.Socket; port: number; received: Uint8Array[]; close(): Promise<void> }
> {
  const socket = dgram.createSocket("udp4");
  const received: Uint8Array[] = [];
  socket.on("message", (m) => received.push(new Uint8Array(m)));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return {
    socket,
    port: socket.address().port,
    received,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

const send = (c: { socket: dgram.Socket }, bytes: Uint8Array, port: number) =>
  new Promise<void>((resolve, reject) =>
    c.socket.send(bytes, port, "127.0.0.1", (error) => error ? reject(error) : resolve())
  );
const settle = () => new Promise((r) => setTimeout(r, 150));

Deno.test("stun server: answers a Binding request on each port with the client's own address and port", async () => {
  await using server = await StunServer.listen({ hostname: "127.0.0.1", ports: [0, 0] });
  const c = await client();
  try {
    for (const port of server.ports) {
      const id = crypto.getRandomValues(new Uint8Array(12));
      await send(c, bindingRequest(id), port);
      await settle();
      const answer = decodeStun(c.received.at(-1)!);
      assertEquals(answer.transactionId.join(), id.join());
      const mapped = readXorMappedAddress(answer)!;
      assertEquals([formatAddress(mapped.address), mapped.port], ["127.0.0.1", c.port]);
    }
    assertEquals(c.received.length, 2);
    assertEquals(server.counters.answered, 2);
  } finally {
    await c.close();
  }
});

Deno.test("stun server: junk gets no answer and does not stop the service; answers are never more than 24 bytes above the request", async () => {
  await using server = await StunServer.listen({ hostname: "127.0.0.1", ports: [0] });
  const c = await client();
  try {
    const valid = bindingRequest(new Uint8Array(12));
    let sent = 0;
    let expected = 0;
    for (const m of mutants(valid, 400, { maxLength: 1400 })) {
      if (m.bytes.length === 0) continue;
      await send(c, m.bytes, server.ports[0]!);
      // Paced, so the receive buffer never overflows (every datagram is accounted for below).
      if (++sent % 25 === 0) await settle();
      // Still a Binding request (a flipped bit in the transaction id): that is answered, at its usual size.
      try {
        answerBinding(m.bytes, { address: new Uint8Array(4), port: 1 });
        expected++;
      } catch { /* junk */ }
    }
    await settle();
    assert(sent > 300);
    assertEquals(c.received.length, server.counters.answered);
    assert(c.received.every((a) => a.length === 32), "every answer is the 32-byte IPv4 Binding success");
    const dropped = Object.values(server.counters.dropped).reduce((a, b) => a + b, 0);
    assertEquals(server.counters.answered + dropped, sent, JSON.stringify(server.counters));
    assertEquals(server.counters.answered, expected, JSON.stringify(server.counters));
    // After all that, a real request is still answered.
    const before = c.received.length;
    await send(c, valid, server.ports[0]!);
    await settle();
    assertEquals(c.received.length, before + 1);
  } finally {
    await c.close();
  }
});

Deno.test("stun server: answers to one source are rate limited (no reflector for spoofed requests)", async () => {
  await using server = await StunServer.listen({
    hostname: "127.0.0.1",
    ports: [0],
    limits: { perSecond: 1, burst: 5, maxSources: 100 },
  });
  const c = await client();
  try {
    for (let i = 0; i < 40; i++) {
      await send(c, bindingRequest(crypto.getRandomValues(new Uint8Array(12))), server.ports[0]!);
    }
    await settle();
    // The burst, plus at most what refilled while sending.
    assert(c.received.length >= 5 && c.received.length <= 6, `${c.received.length} answers`);
    assertEquals(server.counters.dropped["rate-limited"], 40 - c.received.length);
  } finally {
    await c.close();
  }
});

Deno.test("stun server: SourceLimiter refills over time, per key, and bounds the keys it tracks", () => {
  let now = 0;
  const limiter = new SourceLimiter({ perSecond: 2, burst: 3, maxSources: 2 }, () => now);
  const take = (key: string, n: number) =>
    Array.from({ length: n }, () => limiter.take(key)).filter(Boolean).length;
  const steps: [n: number, at: number, key: string, tries: number, granted: number][] = [
    [1, 0, "a", 5, 3], // the burst
    [2, 0, "b", 4, 3], // another source has its own bucket
    [3, 400, "a", 5, 0], // 0.8 token refilled: not one yet
    [4, 500, "a", 5, 1], // 1.0
    [5, 500, "c", 1, 0], // two sources tracked, neither idle: a third is refused
    [6, 5_000, "c", 1, 1], // "a" and "b" refilled, forgotten, so "c" gets a bucket
  ];
  for (const [n, at, key, tries, granted] of steps) {
    now = at;
    assertEquals(take(key, tries), granted, `step ${n}`);
  }
  assert(limiter.size <= 2);
  assert(DEFAULT_STUN_LIMITS.burst >= 100, "a node forming many tethers at once is not throttled");
});

Deno.test("stun server: a port that cannot be bound fails the whole listen, naming the port", async () => {
  const taken = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => taken.bind(0, "127.0.0.1", resolve));
  const port = taken.address().port;
  try {
    let error: Error | undefined;
    try {
      await StunServer.listen({ hostname: "127.0.0.1", ports: [0, port] });
    } catch (e) {
      error = e as Error;
    }
    assert(error?.message.includes(`UDP 127.0.0.1:${port}`), error?.message);
  } finally {
    await new Promise<void>((resolve) => taken.close(() => resolve()));
  }
});
