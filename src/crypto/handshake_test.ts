import { assertEquals, assertNotEquals, assertRejects } from "../../tests/assert.ts";
import { CONTROL_MAX_SKEW_MS } from "../spec.ts";
import { HANDSHAKE_TIMEOUT_MS } from "../tuning.ts";
import { BatchBuilder, unpackBatch } from "../wire/envelope.ts";
import { ControlKind, type ControlMessage, decodeControl } from "../wire/control.ts";
import { ControlRejected, ControlVerifier } from "./control_signing.ts";
import { HandshakeError, Handshaker } from "./handshake.ts";
import { Identity, toHex } from "./identity.ts";
import { noble, type PqBackend, webcrypto } from "./pq.ts";
import { StreamOpener, StreamSealer } from "./stream.ts";

const CERT_REF = new Uint8Array(16).fill(0xcc);

/** A node for tests: identity, a handshaker, and a verifier that knows the keys of `directory`. */
async function node(clock: () => number, directory: Map<string, Uint8Array>) {
  const identity = await Identity.generate();
  directory.set(identity.id, identity.publicKey);
  return {
    identity,
    handshaker: new Handshaker({ identity, certRef: () => CERT_REF, clock }),
    verifier: new ControlVerifier({
      self: identity.nodeId,
      clock,
      keys: (sender) => directory.get(toHex(sender)),
    }),
  };
}

async function world() {
  let now = 1_800_000_000_000;
  const clock = () => now;
  const directory = new Map<string, Uint8Array>();
  const [a, b, c] = [
    await node(clock, directory),
    await node(clock, directory),
    await node(clock, directory),
  ];
  return {
    a,
    b,
    c,
    clock,
    advance(ms: number) {
      now += ms;
    },
  };
}

function asRequest(m: ControlMessage): ControlMessage<ControlKind.StreamRequest> {
  assertEquals(m.kind, ControlKind.StreamRequest);
  return m as ControlMessage<ControlKind.StreamRequest>;
}

function asResponse(m: ControlMessage): ControlMessage<ControlKind.StreamResponse> {
  assertEquals(m.kind, ControlKind.StreamResponse);
  return m as ControlMessage<ControlKind.StreamResponse>;
}

Deno.test("handshake: two identities agree on a stream, and data sealed by one opens at the other", async () => {
  const { a, b, clock } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  const { response, secrets: receiving } = await b.handshaker.respond(
    asRequest(await b.verifier.verify(request)),
  );
  const sending = await a.handshaker.complete(asResponse(await a.verifier.verify(response)));

  assertEquals(sending.id, receiving.id);
  assertEquals(sending.peer, b.identity.nodeId);
  assertEquals(receiving.peer, a.identity.nodeId);
  assertEquals(a.handshaker.pending, 0);

  const batch = new BatchBuilder();
  batch.push(new Uint8Array([0x45, 1, 2, 3]));
  const sealer = new StreamSealer(sending, clock);
  const opener = new StreamOpener(receiving, { self: b.identity.nodeId, clock });
  const opened = await opener.open(await sealer.seal(batch.plaintext()));
  assertEquals(unpackBatch(opened), [new Uint8Array([0x45, 1, 2, 3])]);
});

Deno.test("handshake: every handshake yields a fresh stream id and key", async () => {
  const { a, b } = await world();
  const ids = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const request = await a.handshaker.request(b.identity.nodeId);
    const { response } = await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
    ids.add(toHex((await a.handshaker.complete(asResponse(await a.verifier.verify(response)))).id));
  }
  assertEquals(ids.size, 3);
});

Deno.test("handshake: a tampered request is refused by signature, whichever byte changed", async () => {
  const { a, b } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  const decoded = decodeControl(request);
  const end = decoded.signed.length;
  // One bit in each region of the request, and the check that catches it.
  const cases: [n: number, offset: number, reason: string][] = [
    [1, 1, "malformed"], // kind: StreamRequest becomes StreamResponse, whose body does not parse
    [2, 3 + 2, "unknown-sender"], // sender id
    [3, 19 + 5, "misdirected"], // recipient id
    [4, 35 + 3, "bad-signature"], // certificate reference
    [5, 51 + 7, "bad-signature"], // timestamp, lowest byte (still within the skew)
    [6, 59 + 1, "bad-signature"], // message id
    [7, end - 1200, "bad-signature"], // inside the ML-KEM key
    [8, end - 1, "bad-signature"], // inside the X25519 key
    [9, end + 100, "bad-signature"], // the signature itself
  ];
  for (const [n, at, reason] of cases) {
    const tampered = request.slice();
    tampered[at] ^= 0x01;
    const error = await assertRejects(() => b.verifier.verify(tampered), ControlRejected);
    assertEquals(error.reason, reason, `case ${n}: ${error.message}`);
  }
  // The untouched request still works.
  await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
});

Deno.test("handshake: a tampered response cannot complete the handshake", async () => {
  const { a, b } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  const { response } = await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
  const tampered = response.slice();
  tampered[decodeControl(response).signed.length - 10] ^= 0x80; // inside B's X25519 key
  const error = await assertRejects(() => a.verifier.verify(tampered), ControlRejected);
  assertEquals(error.reason, "bad-signature");
});

Deno.test("handshake: a request signed by another node than the one it names is refused", async () => {
  const { a, b, c } = await world();
  // C signs a request but claims to be A: the verifier finds A's key, and C's signature does not verify under it.
  const forged = await c.handshaker.request(b.identity.nodeId);
  const claimed = forged.slice();
  claimed.set(a.identity.nodeId, 3);
  const error = await assertRejects(() => b.verifier.verify(claimed), ControlRejected);
  assertEquals(error.reason, "bad-signature");
});

Deno.test("handshake: a response from another node than the one asked is refused", async () => {
  const { a, b, c } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  // C got hold of A's request (say, by relaying it) and answers it itself, correctly signed as C.
  const redirected = asRequest(decodeControl(request));
  const asIfForC = { ...redirected, recipient: c.identity.nodeId };
  const { response } = await c.handshaker.respond(asIfForC);
  const error = await assertRejects(
    async () => a.handshaker.complete(asResponse(await a.verifier.verify(response))),
    HandshakeError,
  );
  assertEquals(error.reason, "wrong-peer");
});

Deno.test("handshake: a request addressed to another node is refused", async () => {
  const { a, b, c } = await world();
  const request = await a.handshaker.request(c.identity.nodeId);
  const error = await assertRejects(() => b.verifier.verify(request), ControlRejected);
  assertEquals(error.reason, "misdirected");
  // Even if a caller skipped that check, the handshaker itself refuses.
  const direct = await assertRejects(
    () => b.handshaker.respond(asRequest(decodeControl(request))),
    HandshakeError,
  );
  assertEquals(direct.reason, "misdirected");
});

Deno.test("handshake: a replayed request is refused, and so is a replayed response", async () => {
  const { a, b } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  const { response } = await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
  assertEquals((await assertRejects(() => b.verifier.verify(request), ControlRejected)).reason, "replayed");

  await a.handshaker.complete(asResponse(await a.verifier.verify(response)));
  assertEquals((await assertRejects(() => a.verifier.verify(response), ControlRejected)).reason, "replayed");
  // Past the verifier (say, after its memory was lost), the handshaker has no pending request for it any more.
  const again = await assertRejects(
    () => a.handshaker.complete(asResponse(decodeControl(response))),
    HandshakeError,
  );
  assertEquals(again.reason, "unexpected");
});

Deno.test("handshake: a request replayed after the skew limit is refused as stale", async () => {
  const { a, b, advance } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  advance(CONTROL_MAX_SKEW_MS + 1);
  assertEquals((await assertRejects(() => b.verifier.verify(request), ControlRejected)).reason, "stale");
});

Deno.test("handshake: a request dated in the future beyond the skew limit is refused", async () => {
  const { a, b, advance } = await world();
  advance(CONTROL_MAX_SKEW_MS + 1);
  const request = await a.handshaker.request(b.identity.nodeId);
  advance(-2 * (CONTROL_MAX_SKEW_MS + 1));
  assertEquals((await assertRejects(() => b.verifier.verify(request), ControlRejected)).reason, "stale");
});

Deno.test("handshake: a response after the initiator's timeout completes nothing", async () => {
  const { a, b, advance } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  const { response } = await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
  advance(HANDSHAKE_TIMEOUT_MS);
  const verified = asResponse(await a.verifier.verify(response));
  assertEquals(
    (await assertRejects(() => a.handshaker.complete(verified), HandshakeError)).reason,
    "unexpected",
  );
  assertEquals(a.handshaker.pending, 0);
});

Deno.test("handshake: expire() reports the peers whose requests timed out", async () => {
  const { a, b, c, advance } = await world();
  await a.handshaker.request(b.identity.nodeId);
  advance(HANDSHAKE_TIMEOUT_MS / 2);
  await a.handshaker.request(c.identity.nodeId);
  advance(HANDSHAKE_TIMEOUT_MS / 2);
  assertEquals(a.handshaker.expire(), [b.identity.nodeId]);
  assertEquals(a.handshaker.pending, 1);
});

Deno.test("handshake: an opener holding another handshake's key refuses the data", async () => {
  const { a, b } = await world();
  const request = await a.handshaker.request(b.identity.nodeId);
  const { response, secrets } = await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
  const sending = await a.handshaker.complete(asResponse(await a.verifier.verify(response)));
  const other = await (async () => {
    const r2 = await a.handshaker.request(b.identity.nodeId);
    return (await b.handshaker.respond(asRequest(await b.verifier.verify(r2)))).secrets;
  })();
  assertNotEquals(toHex(other.id), toHex(secrets.id));
  const sealer = new StreamSealer(sending, () => sending.createdAt);
  const wrong = new StreamOpener({ ...other, id: secrets.id }, { self: b.identity.nodeId, clock: () => 0 });
  const message = await sealer.seal(new Uint8Array([0, 1, ...new Array(10).fill(0), 0x45]));
  assertEquals((await assertRejects(() => wrong.open(message), Error)).name, "StreamError");
});

Deno.test("handshake: a node on the noble fallback and a node on WebCrypto complete a handshake together", async () => {
  const clock = () => 1_800_000_000_000;
  const directory = new Map<string, Uint8Array>();
  const make = async (backend: PqBackend) => {
    const identity = await Identity.generate({ backend });
    directory.set(identity.id, identity.publicKey);
    return {
      identity,
      handshaker: new Handshaker({ identity, certRef: () => CERT_REF, clock, backend }),
      verifier: new ControlVerifier({
        self: identity.nodeId,
        clock,
        keys: (sender) => directory.get(toHex(sender)),
        backend,
      }),
    };
  };
  for (const [first, second] of [[noble, webcrypto], [webcrypto, noble]]) {
    const [a, b] = [await make(first!), await make(second!)];
    const request = await a.handshaker.request(b.identity.nodeId);
    const { response, secrets } = await b.handshaker.respond(asRequest(await b.verifier.verify(request)));
    const sending = await a.handshaker.complete(asResponse(await a.verifier.verify(response)));
    const message = await new StreamSealer(sending, clock).seal(
      new Uint8Array([0, 1, ...new Array(10).fill(0), 0x45]),
    );
    const opened = await new StreamOpener(secrets, { self: b.identity.nodeId, clock }).open(message);
    assertEquals(unpackBatch(opened), [Uint8Array.of(0x45)]);
  }
});
