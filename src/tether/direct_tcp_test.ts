import { assert, assertEquals } from "../../tests/assert.ts";
import { waitFor } from "../../tests/harness.ts";
import { DirectTcp, SECRET_BYTES, STALL_MS } from "./direct_tcp.ts";

/** A side of a connection: what it received, and why it closed. */
function recorder() {
  const received: Uint8Array[] = [];
  let closed: string | undefined;
  return {
    received,
    get closed() {
      return closed;
    },
    events: {
      onMessage: (m: Uint8Array) => void received.push(m),
      onClose: (r: string) => void (closed = r),
    },
  };
}

Deno.test("direct TCP: with the secret, messages of every size cross both ways whole and in order", async () => {
  const secret = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  const [server, client] = [recorder(), recorder()];
  const listening = DirectTcp.listen("127.0.0.1", secret, server.events, 2_000);
  const a = (await DirectTcp.connect("127.0.0.1", listening.port, secret, client.events, 2_000))!;
  const b = (await listening.accepted)!;
  assert(a && b, "both ends connected");
  const sizes = [1, 1500, 65_536, 7, 40_000, 65_536, 3];
  const messages = sizes.map((n, i) => new Uint8Array(n).fill(i + 1));
  for (const m of messages) a.send(m);
  b.send(Uint8Array.of(42));
  await waitFor(
    "every message",
    3_000,
    () => server.received.length === sizes.length && client.received.length === 1,
  );
  assertEquals(server.received, messages);
  assertEquals(client.received, [Uint8Array.of(42)]);
  await a.drained(1);
  assertEquals(a.queued, 0);
  a.close();
  await waitFor("the other end to see the close", 3_000, () => server.closed !== undefined);
  assertEquals(b.send(Uint8Array.of(1)), false, "a closed connection takes nothing");
});

Deno.test("direct TCP: a connection without the tether's secret is refused and delivers nothing", async () => {
  const secret = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  const server = recorder();
  const listening = DirectTcp.listen("127.0.0.1", secret, server.events, 500);
  // An intruder who found the port: a wrong secret, then what would be a valid frame.
  const intruder = await Deno.connect({ hostname: "127.0.0.1", port: listening.port });
  const wrong = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  await intruder.write(Uint8Array.of(...wrong, 0, 0, 0, 1, 99));
  const got = await intruder.read(new Uint8Array(16)).catch(() => null);
  assertEquals(got, null, "the listener closed the intruder's connection");
  intruder.close();
  assertEquals(await listening.accepted, undefined, "no connection was accepted before the deadline");
  assertEquals(server.received, []);
  // And the listener is gone: nobody else can try.
  const late = await Deno.connect({ hostname: "127.0.0.1", port: listening.port }).then(
    (c) => c.close(),
    () => "refused",
  );
  assertEquals(late, "refused");
});

Deno.test("direct TCP: a frame longer than a data message ends the connection, and says why", async () => {
  const secret = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  const server = recorder();
  const listening = DirectTcp.listen("127.0.0.1", secret, server.events, 2_000);
  const peer = await Deno.connect({ hostname: "127.0.0.1", port: listening.port });
  await peer.write(Uint8Array.of(...secret, 0x7f, 0xff, 0xff, 0xff));
  assert(await listening.accepted);
  await waitFor("the close", 3_000, () => server.closed !== undefined);
  assert(server.closed!.includes("bad frame length"), server.closed);
  peer.close();
});

Deno.test("direct TCP: nothing listening, or too slow: connect gives up within its timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const client = recorder();
  assertEquals(
    await DirectTcp.connect("127.0.0.1", port, new Uint8Array(SECRET_BYTES), client.events, 500),
    undefined,
  );
});

Deno.test("direct TCP: a write the peer never takes closes the connection after STALL_MS, and says why", async () => {
  const secret = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  const client = recorder();
  // A peer that takes the connection and the secret, then reads nothing more.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const a = (await DirectTcp.connect(
    "127.0.0.1",
    (listener.addr as Deno.NetAddr).port,
    secret,
    client.events,
    2_000,
  ))!;
  const peer = await accepted;
  const started = performance.now();
  // Far more than the two ends' socket buffers hold: the write waits for a reader that never comes.
  for (let i = 0; i < 256; i++) a.send(new Uint8Array(64 * 1024));
  await waitFor("the stall to close it", STALL_MS + 2_000, () => client.closed !== undefined);
  const waited = performance.now() - started;
  assert(client.closed!.includes("stalled"), client.closed);
  assert(waited >= STALL_MS - 50, `closed after ${waited.toFixed(0)} ms, before STALL_MS`);
  assertEquals(a.send(Uint8Array.of(1)), false);
  peer.close();
  listener.close();
});
