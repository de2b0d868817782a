/**
 * `deno task demo`: what this build can show on one machine. Today that is the cryptographic core: two nodes make
 * identities, agree on a post-quantum stream over signed control messages, and carry a batch of IP packets across a
 * relay that cannot read it. The three-node overlay in network namespaces replaces this as the data plane lands.
 * @module
 */

import { ControlVerifier } from "../src/crypto/control_signing.ts";
import { Handshaker } from "../src/crypto/handshake.ts";
import { Identity, toHex } from "../src/crypto/identity.ts";
import { pq } from "../src/crypto/pq.ts";
import { type StreamError, StreamOpener, StreamSealer } from "../src/crypto/stream.ts";
import type { ControlKind, ControlMessage } from "../src/wire/control.ts";
import { BatchBuilder, decrementTtl, readDataHeader, unpackBatch } from "../src/wire/envelope.ts";

const clock = () => Date.now();
const directory = new Map<string, Uint8Array>();
const log = (line = "") => console.log(line);

async function node(name: string) {
  const identity = await Identity.generate();
  directory.set(identity.id, identity.publicKey);
  log(
    `  ${name}: node id ${identity.id} (ML-DSA-65 key made in memory, ${identity.publicKey.length}-byte public key)`,
  );
  return {
    name,
    identity,
    handshaker: new Handshaker({ identity, certRef: () => new Uint8Array(16), clock }),
    verifier: new ControlVerifier({ self: identity.nodeId, clock, keys: (s) => directory.get(toHex(s)) }),
  };
}

/** An IPv4 ICMP echo request from 10.128.0.1 to 10.128.0.3 (checksums left zero: nothing parses them here). */
function pingPacket(seq: number): Uint8Array {
  const p = new Uint8Array(84);
  p.set([0x45, 0, 0, 84, 0, seq, 0x40, 0, 64, 1, 0, 0, 10, 128, 0, 1, 10, 128, 0, 3]);
  p.set([8, 0, 0, 0, 0, 1, 0, seq], 20);
  return p;
}

log("veilnet-conflux demo: the post-quantum core (the networked overlay comes with the TUN and tunnel work)");
log(`  crypto backend: ${(await pq()).name}`);
log();
log("1. Three nodes start.");
const a = await node("A");
await node("R"); // the relay: a node like any other, with no key for the A→B stream
const b = await node("B");

log();
log("2. A opens a stream to B: ML-KEM-768 + X25519, both messages signed with ML-DSA-65.");
let t = performance.now();
const request = await a.handshaker.request(b.identity.nodeId);
const verifiedRequest = await b.verifier.verify(request) as ControlMessage<ControlKind.StreamRequest>;
const { response, secrets: atB } = await b.handshaker.respond(verifiedRequest);
const verifiedResponse = await a.verifier.verify(response) as ControlMessage<ControlKind.StreamResponse>;
const atA = await a.handshaker.complete(verifiedResponse);
log(
  `  request ${request.length} bytes, response ${response.length} bytes, ${
    (performance.now() - t).toFixed(1)
  } ms`,
);
log(`  stream id ${toHex(atA.id)} (B derived ${toHex(atB.id)})`);

log();
log("3. A seals 25 ping packets into one data message, bound to B and the stream.");
const batch = new BatchBuilder();
for (let i = 1; i <= 25; i++) batch.push(pingPacket(i));
const sealer = new StreamSealer(atA, clock);
const message = await sealer.seal(batch.plaintext());
log(`  ${batch.count} packets, ${batch.size} bytes of batch -> ${message.length}-byte message`);

log();
log("4. R relays it: it reads only the header, lowers the TTL, and cannot open the payload.");
const header = readDataHeader(message);
log(`  destination ${toHex(header.destination)}, ttl ${header.ttl} -> ${decrementTtl(message)}`);
const nosy = new StreamOpener({
  ...atB,
  key: await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["decrypt"]),
}, {
  self: b.identity.nodeId,
  clock,
});
try {
  await nosy.open(message);
  log("  R opened it?! (this must not happen)");
  Deno.exit(1);
} catch (error) {
  log(`  R without the stream key: ${(error as StreamError).reason}`);
}

log();
log("5. B opens it, checks the replay window, and unpacks the packets.");
t = performance.now();
const opener = new StreamOpener(atB, { self: b.identity.nodeId, clock });
const packets = unpackBatch(await opener.open(message));
log(
  `  ${packets.length} packets back in ${(performance.now() - t).toFixed(2)} ms; first: ICMP echo seq ${
    packets[0]![27]
  }`,
);
try {
  await opener.open(message);
} catch (error) {
  log(`  the same message again: ${(error as StreamError).reason}`);
}
log();
log("Done. `deno task bench` measures these steps; `deno task ok` runs every test.");
