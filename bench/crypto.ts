/**
 * Crypto benchmarks: stream sealing/opening throughput and handshake cost per side.
 * @module
 */

import { ControlVerifier } from "../src/crypto/control_signing.ts";
import { Handshaker } from "../src/crypto/handshake.ts";
import { Identity, toHex } from "../src/crypto/identity.ts";
import { noble, pq } from "../src/crypto/pq.ts";
import { StreamOpener, StreamSealer } from "../src/crypto/stream.ts";
import type { ControlKind, ControlMessage } from "../src/wire/control.ts";
import { BatchBuilder } from "../src/wire/envelope.ts";

/** One printed figure. */
export interface Figure {
  name: string;
  value: number;
  unit: string;
  note?: string;
}

async function handshakePair() {
  const clock = () => Date.now();
  const keys = new Map<string, Uint8Array>();
  const make = async () => {
    const identity = await Identity.generate();
    keys.set(identity.id, identity.publicKey);
    return {
      identity,
      handshaker: new Handshaker({ identity, certRef: () => new Uint8Array(16), clock }),
      verifier: new ControlVerifier({ self: identity.nodeId, clock, keys: (s) => keys.get(toHex(s)) }),
    };
  };
  return { a: await make(), b: await make(), clock };
}

/** Seal+open throughput for batches of 25 x 1400-byte packets, and the handshake time on each side. */
export async function cryptoBench(options: { seconds?: number } = {}): Promise<Figure[]> {
  const seconds = options.seconds ?? 2;
  const figures: Figure[] = [];
  const { a, b, clock } = await handshakePair();

  // Handshake, timed per side. Initiator: make the request, verify the response, complete.
  // Responder: verify the request, answer it.
  let initiatorMs = 0;
  let responderMs = 0;
  const rounds = 40;
  let sending, receiving;
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    const request = await a.handshaker.request(b.identity.nodeId);
    initiatorMs += performance.now() - t;
    t = performance.now();
    const answered = await b.handshaker.respond(
      await b.verifier.verify(request) as ControlMessage<ControlKind.StreamRequest>,
    );
    responderMs += performance.now() - t;
    t = performance.now();
    sending = await a.handshaker.complete(
      await a.verifier.verify(answered.response) as ControlMessage<ControlKind.StreamResponse>,
    );
    initiatorMs += performance.now() - t;
    receiving = answered.secrets;
  }
  const backend = (await pq()).name;
  figures.push({ name: "handshake, initiator side", value: initiatorMs / rounds, unit: "ms", note: backend });
  figures.push({ name: "handshake, responder side", value: responderMs / rounds, unit: "ms", note: backend });

  const batch = new BatchBuilder();
  for (let i = 0; i < 25; i++) batch.push(new Uint8Array(1400).fill(i));
  const plaintext = batch.plaintext();
  const bitsPerMessage = 25 * 1400 * 8;
  const sealer = new StreamSealer(sending!, clock);
  const opener = new StreamOpener(receiving!, { self: b.identity.nodeId, clock });

  /** Runs `step` (which seals and opens `inFlight` messages) for `seconds`, and reports the data rate. */
  const throughput = async (name: string, inFlight: number, step: () => Promise<unknown>) => {
    let messages = 0;
    const start = performance.now();
    while (performance.now() - start < seconds * 1000) {
      await step();
      messages += inFlight;
    }
    const elapsed = (performance.now() - start) / 1000;
    const value = (messages * bitsPerMessage) / elapsed / 1e6;
    figures.push({ name, value, unit: "Mbit/s", note: `${Math.round(messages / elapsed)} msg/s` });
  };
  // One message at a time, seal then open: the latency-bound figure.
  await throughput("seal+open 25 x 1400 B, one at a time", 1, async () => {
    await opener.open(await sealer.seal(plaintext));
  });
  // 16 messages in flight, as a busy egresser/ingresser pair would run.
  await throughput("seal+open 25 x 1400 B, 16 in flight", 16, async () => {
    const sealed = await Promise.all(Array.from({ length: 16 }, () => sealer.seal(plaintext)));
    await Promise.all(sealed.map((m) => opener.open(m)));
  });

  // The reference implementation's signing cost, for comparison with the figures above.
  const reference = await noble.signingKey();
  const t = performance.now();
  for (let i = 0; i < 10; i++) await reference.sign(new Uint8Array(200));
  figures.push({
    name: "ML-DSA-65 sign, noble (reference)",
    value: (performance.now() - t) / 10,
    unit: "ms",
  });
  const fast = await Identity.generate();
  const t2 = performance.now();
  for (let i = 0; i < 50; i++) await fast.sign(new Uint8Array(200));
  figures.push({ name: `ML-DSA-65 sign, ${backend}`, value: (performance.now() - t2) / 50, unit: "ms" });
  return figures;
}
