import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { REJECT_AFTER_MESSAGES, REJECT_AFTER_MS, REKEY_AFTER_MESSAGES, REKEY_AFTER_MS } from "../spec.ts";
import { BatchBuilder, DATA_HEADER_BYTES, unpackBatch } from "../wire/envelope.ts";
import { StreamError, StreamOpener, StreamSealer, type StreamSecrets } from "./stream.ts";
import { gnutlsAesGcm, hostAesGcm, libcryptoAesGcm } from "../../ffi/aes_gcm.ts";
import { nodeAesGcm } from "./node_aes.ts";

const SELF = new Uint8Array(16).fill(0xbb);
const START = 1_800_000_000_000;

async function pair(options: { firstCounter?: number } = {}) {
  let now = START;
  const clock = () => now;
  const key = await crypto.subtle.importKey(
    "raw",
    crypto.getRandomValues(new Uint8Array(32)),
    "AES-GCM",
    false,
    [
      "encrypt",
      "decrypt",
    ],
  );
  const id = crypto.getRandomValues(new Uint8Array(8));
  const sending: StreamSecrets = { id, key, peer: SELF, createdAt: now };
  const receiving: StreamSecrets = { id, key, peer: new Uint8Array(16).fill(0xaa), createdAt: now };
  return {
    sealer: new StreamSealer(sending, clock, options.firstCounter),
    opener: new StreamOpener(receiving, { self: SELF, clock }),
    advance(ms: number) {
      now += ms;
    },
  };
}

/** `n` distinct packets of `size` bytes. */
function packets(n: number, size: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => new Uint8Array(size).fill(i + 1));
}

function batchOf(list: Uint8Array[]): Uint8Array {
  const b = new BatchBuilder();
  for (const p of list) b.push(p);
  return b.plaintext();
}

for (const n of [1, 2, 13, 24, 25]) {
  Deno.test(`stream: a batch of ${n} x 1500-byte packets seals into one message and opens intact`, async () => {
    const { sealer, opener } = await pair();
    const sent = packets(n, 1500);
    const message = await sealer.seal(batchOf(sent));
    assertEquals(message.length, DATA_HEADER_BYTES + n * (2 + 10 + 1500) + 16);
    assertEquals(unpackBatch(await opener.open(message)), sent);
  });
}

Deno.test("stream: mixed packet sizes, 1 byte to 65000 bytes, round trip", async () => {
  const { sealer, opener } = await pair();
  for (const sizes of [[1], [20, 1500, 64], [65_000], [40, 9000, 40]]) {
    const sent = sizes.map((size, i) => new Uint8Array(size).fill(i + 7));
    assertEquals(unpackBatch(await opener.open(await sealer.seal(batchOf(sent)))), sent);
  }
});

Deno.test("stream: flipping any bit of a sealed message outside the TTL byte makes it refused", async () => {
  const { sealer, opener } = await pair();
  const message = await sealer.seal(batchOf(packets(2, 24)));
  const ttlByte = DATA_HEADER_BYTES - 1;
  let refused = 0;
  for (let bit = 0; bit < message.length * 8; bit++) {
    if (bit >> 3 === ttlByte) continue;
    const flipped = message.slice();
    flipped[bit >> 3] ^= 1 << (bit & 7);
    await assertRejects(() => opener.open(flipped), StreamError);
    refused++;
  }
  assertEquals(refused, (message.length - 1) * 8);
  // Nothing above advanced the replay window: the genuine message still opens.
  assertEquals(unpackBatch(await opener.open(message)).length, 2);
});

Deno.test("stream: the TTL is the one field relays may change, and it is not authenticated", async () => {
  const { sealer, opener } = await pair();
  const message = await sealer.seal(batchOf(packets(1, 60)), 5);
  message[DATA_HEADER_BYTES - 1] = 2;
  assertEquals(unpackBatch(await opener.open(message)).length, 1);
});

Deno.test("stream: a message opened once is refused the second time", async () => {
  const { sealer, opener } = await pair();
  const message = await sealer.seal(batchOf(packets(1, 60)));
  await opener.open(message);
  assertEquals((await assertRejects(() => opener.open(message), StreamError)).reason, "replayed");
});

Deno.test("stream: messages sealed concurrently get distinct counters and all open, in any order", async () => {
  const { sealer, opener } = await pair();
  const messages = await Promise.all(
    Array.from({ length: 200 }, () => sealer.seal(batchOf(packets(1, 100)))),
  );
  assertEquals(sealer.sealed, 200);
  messages.reverse();
  const opened = await Promise.all(messages.map((m) => opener.open(m)));
  assertEquals(opened.length, 200);
});

Deno.test("stream: the same message opened twice concurrently is accepted once", async () => {
  const { sealer, opener } = await pair();
  const message = await sealer.seal(batchOf(packets(1, 60)));
  const results = await Promise.allSettled([opener.open(message), opener.open(message.slice())]);
  assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
});

Deno.test("stream: a message for another node or another stream is refused before decryption", async () => {
  const { sealer, opener } = await pair();
  const message = await sealer.seal(batchOf(packets(1, 60)));
  const other = await pair();
  assertEquals((await assertRejects(() => other.opener.open(message), StreamError)).reason, "wrong-stream");
  const elsewhere = new StreamOpener(opener.secrets, { self: new Uint8Array(16), clock: opener.clock });
  assertEquals((await assertRejects(() => elsewhere.open(message), StreamError)).reason, "misdirected");
});

Deno.test("stream: garbage, truncated and oversize input is refused as malformed", async () => {
  const { sealer, opener } = await pair();
  const message = await sealer.seal(batchOf(packets(1, 60)));
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["header only", message.subarray(0, DATA_HEADER_BYTES)],
    ["shorter than a tag", message.subarray(0, DATA_HEADER_BYTES + 15)],
    ["oversize", new Uint8Array(70_000).fill(1)],
    ["wrong version", Uint8Array.of(9, ...message.subarray(1))],
  ];
  for (const [what, bytes] of cases) {
    assertEquals((await assertRejects(() => opener.open(bytes), StreamError)).reason, "malformed", what);
  }
});

Deno.test("stream: the sender asks for a rekey at REKEY_AFTER_MS and stops at REJECT_AFTER_MS", async () => {
  const { sealer, opener, advance } = await pair();
  const early = await sealer.seal(batchOf(packets(1, 60)));
  advance(REKEY_AFTER_MS - 1);
  assertEquals(sealer.needsRekey(), false);
  advance(1);
  assert(sealer.needsRekey());
  assertEquals(sealer.expired(), false);
  await opener.open(await sealer.seal(batchOf(packets(1, 60))));
  advance(REJECT_AFTER_MS - REKEY_AFTER_MS);
  assert(sealer.expired());
  assertEquals(
    (await assertRejects(() => sealer.seal(batchOf(packets(1, 60))), StreamError)).reason,
    "expired",
  );
  // The receiver refuses old messages too, even ones never opened.
  assertEquals((await assertRejects(() => opener.open(early), StreamError)).reason, "expired");
});

Deno.test("stream: the sender asks for a rekey after 2^32 messages and never reuses a counter", async () => {
  const rekey = await pair({ firstCounter: REKEY_AFTER_MESSAGES - 1 });
  assertEquals(rekey.sealer.needsRekey(), false);
  const last = await rekey.sealer.seal(batchOf(packets(1, 60)));
  assert(rekey.sealer.needsRekey());
  assertEquals(unpackBatch(await rekey.opener.open(last)).length, 1);

  const exhausted = await pair({ firstCounter: REJECT_AFTER_MESSAGES - 1 });
  await exhausted.sealer.seal(batchOf(packets(1, 60)));
  assert(exhausted.sealer.expired());
  const error = await assertRejects(() => exhausted.sealer.seal(batchOf(packets(1, 60))), StreamError);
  assertEquals(error.reason, "exhausted");
});

for (
  const [name, syncAes] of [
    ["node:crypto", nodeAesGcm],
    ["libcrypto (FFI)", libcryptoAesGcm],
    ["GnuTLS (FFI)", gnutlsAesGcm],
  ] as const
) {
  Deno.test(`stream: small batches sealed and opened on this thread (${name}) match WebCrypto's, both ways; tampering is refused`, async () => {
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const aes = syncAes(raw);
    if (!aes) return console.warn(`no ${name} on this host: skipped`);
    const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    const id = crypto.getRandomValues(new Uint8Array(8));
    const peer = new Uint8Array(16).fill(0xaa);
    const clock = () => START;
    const end = (withRaw: boolean) => {
      const known = withRaw ? { raw, aes } : {};
      return {
        sealer: new StreamSealer({ id, key, peer: SELF, createdAt: START, ...known }, clock),
        opener: new StreamOpener({ id, key, peer, createdAt: START, ...known }, { self: SELF, clock }),
      };
    };
    const [sync, web] = [end(true), end(false)];
    for (const size of [40, 1400, 4000, 20_000]) {
      const sent = packets(1, size);
      // Counters advance together on both sealers, so each message is new to each opener.
      const fromSync = await sync.sealer.seal(batchOf(sent));
      const fromWeb = await web.sealer.seal(batchOf(sent));
      assertEquals(fromSync, fromWeb, `${size} bytes: the same message either way`);
      assertEquals(unpackBatch(await web.opener.open(fromSync)), sent);
      assertEquals(unpackBatch(await sync.opener.open(fromWeb)), sent);
    }
    for (const at of ["tag", "ciphertext"] as const) {
      const tampered = await sync.sealer.seal(batchOf(packets(1, 40)));
      tampered[tampered.length - (at === "tag" ? 1 : 20)]! ^= 1;
      const error = await assertRejects(() => sync.opener.open(tampered), StreamError);
      assertEquals(error.reason, "auth", at);
    }
  });
}

/** Both ends of a stream whose key bytes are known (what a handover needs), with node:crypto on this thread. */
async function rawPair() {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  const id = crypto.getRandomValues(new Uint8Array(8));
  const clock = () => START;
  return {
    clock,
    sealer: new StreamSealer({ id, key, raw, aes: nodeAesGcm(raw), peer: SELF, createdAt: START }, clock),
    opener: new StreamOpener({
      id,
      key,
      raw,
      aes: nodeAesGcm(raw),
      peer: new Uint8Array(16).fill(0xaa),
      createdAt: START,
    }, {
      self: SELF,
      clock,
    }),
  };
}

Deno.test("stream: a sealer handed to another thread never shares a counter with the one that handed it", async () => {
  const { sealer, opener, clock } = await rawPair();
  const before = [await sealer.seal(batchOf(packets(1, 40))), await sealer.seal(batchOf(packets(1, 40)))];
  const handover = sealer.handOver();
  assertEquals(handover.first, 2);
  // The thread that handed it seals nothing more: its counters are the other thread's now.
  const refused = await assertRejects(() => sealer.seal(batchOf(packets(1, 40))), StreamError);
  assertEquals(refused.reason, "exhausted");
  assert(
    sealer.expired(),
    "a handed-over sealer counts as expired, so a fresh stream is formed for this thread",
  );
  let twice: Error | undefined;
  try {
    sealer.handOver();
  } catch (error) {
    twice = error as Error;
  }
  assert(twice?.message.includes("already handed over"), "a stream is handed over once at most");
  const other = StreamSealer.fromHandover(handover, clock, hostAesGcm(handover.raw));
  const after = [other.sealNow(batchOf(packets(1, 40))), other.sealNow(batchOf(packets(1, 40)))];
  const counter = (m: Uint8Array) => new DataView(m.buffer, m.byteOffset).getBigUint64(3 + 16 + 8);
  assertEquals([...before, ...after].map(counter), [0n, 1n, 2n, 3n]);
  for (const m of [...before, ...after]) assertEquals(unpackBatch(await opener.open(m)), packets(1, 40));
});

Deno.test("stream: an opener handed to another thread keeps its replay window; the old one refuses everything", async () => {
  const { sealer, opener, clock } = await rawPair();
  const seen = await sealer.seal(batchOf(packets(1, 40)));
  await opener.open(seen);
  const later = await sealer.seal(batchOf(packets(1, 40)));
  const handover = opener.handOver();
  const other = StreamOpener.fromHandover(handover, {
    self: SELF,
    clock,
    aes: hostAesGcm(handover.raw),
  });
  // A message accepted before the handover, replayed to the thread that took the stream over: refused.
  const replayed = await assertRejects(() => other.open(seen), StreamError);
  assertEquals(replayed.reason, "replayed");
  assertEquals(unpackBatch(await other.open(later)), packets(1, 40));
  // The thread that handed it over opens nothing, not even a message it never saw.
  const fresh = await sealer.seal(batchOf(packets(1, 40)));
  const moved = await assertRejects(() => opener.open(fresh), StreamError);
  assertEquals(moved.reason, "moved");
  assertEquals(unpackBatch(await other.open(fresh)), packets(1, 40));
});
