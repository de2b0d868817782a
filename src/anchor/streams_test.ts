import { assert, assertEquals } from "../../tests/assert.ts";
import { Handshaker } from "../crypto/handshake.ts";
import { Identity, toHex } from "../crypto/identity.ts";
import { MAX_STREAMS_PER_PEER } from "../tuning.ts";
import { ControlKind, type ControlMessage, decodeControl } from "../wire/control.ts";
import { Streams } from "./streams.ts";

/** Node b's stream table, what it sends (decoded), and `ask()`: a's stream request handed to it. */
async function askedByA() {
  const [a, b] = [await Identity.generate(), await Identity.generate()];
  const handshaker = (identity: Identity) =>
    new Handshaker({ identity, certRef: () => new Uint8Array(16), clock: Date.now });
  const fromA = handshaker(a);
  const sent: ControlMessage[] = [];
  const streams = new Streams({
    self: b.nodeId,
    handshaker: handshaker(b),
    send: (_, m) => sent.push(decodeControl(m)),
    clock: Date.now,
    log: () => {},
  });
  const ask = async () =>
    await streams.onRequest(
      decodeControl(await fromA.request(b.nodeId)) as ControlMessage<ControlKind.StreamRequest>,
    );
  return { a, fromA, streams, sent, ask };
}

Deno.test("streams: a peer holds at most MAX_STREAMS_PER_PEER receiving streams; a new one replaces its oldest", async () => {
  const { a, streams, sent, ask } = await askedByA();
  for (let i = 0; i < 3 * MAX_STREAMS_PER_PEER; i++) {
    await ask();
    assert(streams.counts.receiving <= MAX_STREAMS_PER_PEER, `${streams.counts.receiving} streams`);
  }
  // b's own request to a (see the next test) is not an answer.
  const answers = sent.filter((m) => m.kind === ControlKind.StreamResponse);
  assertEquals(answers.length, 3 * MAX_STREAMS_PER_PEER, "every request is answered");
  assertEquals(streams.counts.receiving, MAX_STREAMS_PER_PEER);
  assertEquals(new Set(answers.map((m) => toHex(m.recipient))), new Set([toHex(a.nodeId)]));
  streams.close();
});

Deno.test("streams: a request from a peer this node has no stream to starts ours to it at once; one from a peer it has a stream to does not", async () => {
  const { a, fromA, streams, sent, ask } = await askedByA();
  await ask();
  // b's request is made (signed) after its answer went: wait for it.
  for (let i = 0; i < 100 && sent.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assertEquals(sent.map((m) => m.kind), [ControlKind.StreamResponse, ControlKind.StreamRequest]);
  assertEquals(toHex(sent[1]!.recipient), toHex(a.nodeId), "b asks a for its own stream");
  // a answers it: b's stream to a is ready, and a's next request is only answered.
  const forming = streams.sealer(toHex(a.nodeId));
  const { response } = await fromA.respond(sent[1] as ControlMessage<ControlKind.StreamRequest>);
  await streams.onResponse(decodeControl(response) as ControlMessage<ControlKind.StreamResponse>);
  assert(await forming, "b's stream to a formed");
  sent.length = 0;
  await ask();
  await new Promise((r) => setTimeout(r, 100));
  assertEquals(sent.map((m) => m.kind), [ControlKind.StreamResponse]);
  streams.close();
});

Deno.test("streams: a closed stream table still answers a request, but starts no stream of its own (no timer outlives it)", async () => {
  const { streams, sent, ask } = await askedByA();
  streams.close();
  await ask();
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(sent.map((m) => m.kind), [ControlKind.StreamResponse]);
});
