import { assert, assertEquals } from "../../tests/assert.ts";
import { Handshaker } from "../crypto/handshake.ts";
import { Identity, toHex } from "../crypto/identity.ts";
import { MAX_STREAMS_PER_PEER } from "../tuning.ts";
import { type ControlKind, type ControlMessage, decodeControl } from "../wire/control.ts";
import { Streams } from "./streams.ts";

Deno.test("streams: a peer holds at most MAX_STREAMS_PER_PEER receiving streams; a new one replaces its oldest", async () => {
  const [a, b] = [await Identity.generate(), await Identity.generate()];
  const handshaker = (identity: Identity) =>
    new Handshaker({ identity, certRef: () => new Uint8Array(16), clock: Date.now });
  const fromA = handshaker(a);
  const answers: string[] = [];
  const streams = new Streams({
    self: b.nodeId,
    handshaker: handshaker(b),
    send: (peer) => answers.push(peer),
    clock: Date.now,
    log: () => {},
  });
  for (let i = 0; i < 3 * MAX_STREAMS_PER_PEER; i++) {
    const request = decodeControl(await fromA.request(b.nodeId)) as ControlMessage<ControlKind.StreamRequest>;
    await streams.onRequest(request);
    assert(streams.counts.receiving <= MAX_STREAMS_PER_PEER, `${streams.counts.receiving} streams`);
  }
  assertEquals(answers.length, 3 * MAX_STREAMS_PER_PEER, "every request is answered");
  assertEquals(streams.counts.receiving, MAX_STREAMS_PER_PEER);
  assertEquals(new Set(answers), new Set([toHex(a.nodeId)]));
  streams.close();
});
