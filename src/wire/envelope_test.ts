import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { MAX_DATA_MESSAGE_BYTES, MAX_PACKETS_PER_MESSAGE } from "../spec.ts";
import { WireError } from "./bytes.ts";
import {
  BatchBuilder,
  counterOf,
  DATA_HEADER_BYTES,
  DataType,
  decrementTtl,
  MAX_BATCH_BYTES,
  namesStream,
  readDataHeader,
  unpackBatch,
  unpackEntries,
  writeDataHeader,
} from "./envelope.ts";

const DEST = Uint8Array.from({ length: 16 }, (_, i) => 0xd0 + i);
const STREAM = Uint8Array.from({ length: 8 }, (_, i) => 0x50 + i);

function message(counter: number, ttl: number, sealedBytes = 16): Uint8Array {
  const m = new Uint8Array(DATA_HEADER_BYTES + sealedBytes);
  writeDataHeader(m, { type: DataType.Packets, destination: DEST, stream: STREAM, counter, ttl });
  return m;
}

// Header vectors: the exact bytes for a few counters and TTLs.
const HEADER_VECTORS: [n: number, counter: number, ttl: number, hex: string][] = [
  [1, 0, 8, "020100" + "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf" + "5051525354555657" + "0000000000000000" + "08"],
  [2, 1, 0, "020100" + "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf" + "5051525354555657" + "0000000000000001" + "00"],
  [
    3,
    2 ** 32 + 5,
    255,
    "020100" + "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf" + "5051525354555657" + "0000000100000005" + "ff",
  ],
  [
    4,
    2 ** 53 - 1,
    1,
    "020100" + "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf" + "5051525354555657" + "001fffffffffffff" + "01",
  ],
];

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

for (const [n, counter, ttl, expected] of HEADER_VECTORS) {
  Deno.test(`envelope vector ${n}: header for counter ${counter}, ttl ${ttl} has the documented bytes`, () => {
    const m = message(counter, ttl);
    assertEquals(hex(m.subarray(0, DATA_HEADER_BYTES)), expected);
    const h = readDataHeader(m);
    assertEquals([h.type, h.counter, h.ttl], [DataType.Packets, counter, ttl]);
    assertEquals(h.destination, DEST);
    assertEquals(h.stream, STREAM);
    // Read in place, as the worker finds a message's stream: the same counter, the same names.
    assertEquals(counterOf(m), counter);
    assertEquals(namesStream(m, DEST, STREAM), true);
    assertEquals(namesStream(m, DEST, STREAM.map((b) => b ^ 1)), false);
    assertEquals(namesStream(m, DEST.map((b) => b ^ 1), STREAM), false);
    assertEquals(namesStream(m.subarray(0, DATA_HEADER_BYTES - 1), DEST, STREAM), false);
  });
}

Deno.test("envelope: header decoding refuses each malformed case with a WireError saying why", () => {
  const good = message(3, 8);
  const cases: [n: number, bytes: Uint8Array, reason: string, text: string][] = [
    [1, new Uint8Array(0), "truncated", "truncated at version"],
    [2, good.subarray(0, 12), "truncated", "truncated at destination"],
    [3, good.subarray(0, DATA_HEADER_BYTES + 15), "truncated", "shorter than its tag"],
    [4, Uint8Array.of(1, ...good.subarray(1)), "version", "version 1"],
    [5, Uint8Array.of(2, 99, ...good.subarray(2)), "type", "unknown type 99"],
    [6, Uint8Array.of(2, 1, 4, ...good.subarray(3)), "value", "reserved flags"],
    [7, new Uint8Array(MAX_DATA_MESSAGE_BYTES + 1), "oversize", "limit is 65536"],
    [
      8,
      Uint8Array.of(...good.subarray(0, 27), 0xff, 0, 0, 0, 0, 0, 0, 0, ...good.subarray(35)),
      "value",
      "2^53",
    ],
  ];
  for (const [n, bytes, reason, text] of cases) {
    const error = assertThrows(() => readDataHeader(bytes), WireError, text);
    assertEquals(error.reason, reason, `case ${n}`);
  }
});

Deno.test("envelope: decrementTtl lowers the TTL in place and stops at zero", () => {
  const m = message(1, 2);
  assertEquals(decrementTtl(m), 1);
  assertEquals(decrementTtl(m), 0);
  assertEquals(readDataHeader(m).ttl, 0);
  assertEquals(decrementTtl(m), 0);
  assertEquals(readDataHeader(m).ttl, 0);
});

Deno.test("envelope: the header decoder is total over 5000 hostile inputs", () => {
  let decoded = 0;
  for (const { what, bytes } of mutants(message(77, 8, 200), 5000, { seed: 11, maxLength: 400 })) {
    try {
      readDataHeader(bytes);
      decoded++;
    } catch (error) {
      if (!(error instanceof WireError)) throw new Error(`${what}: ${error}`);
    }
  }
  // Bit flips in destination, stream, counter or payload still decode: authentication is the opener's job.
  assertEquals(decoded > 0, true);
});

Deno.test("batch: 25 MTU-sized packets fit one message; a 26th is refused", () => {
  const b = new BatchBuilder();
  for (let i = 0; i < MAX_PACKETS_PER_MESSAGE; i++) {
    assertEquals(b.full(), false);
    b.push(new Uint8Array(1500).fill(i));
  }
  assertEquals(b.full(), true);
  assertEquals(b.size, 25 * (2 + 10 + 1500));
  assertThrows(() => b.push(new Uint8Array(10)), RangeError, "maximum packets");
  assertEquals(DATA_HEADER_BYTES + b.size + 16 <= MAX_DATA_MESSAGE_BYTES, true);
  const out = unpackBatch(b.plaintext());
  assertEquals(out.length, 25);
  assertEquals(out[24], new Uint8Array(1500).fill(24));
});

Deno.test("batch: a packet read straight into slot() needs no copy, and reset() starts over", () => {
  const b = new BatchBuilder();
  const slot = b.slot();
  slot.set([0x45, 0, 0, 20]);
  b.commit(4);
  assertEquals(b.plaintext(), Uint8Array.of(0, 4, ...new Array(10).fill(0), 0x45, 0, 0, 20));
  assertEquals(unpackBatch(b.plaintext())[0]!.buffer, b.buffer.buffer);
  assertThrows(() => b.commit(0), RangeError, "does not fit");
  b.reset();
  assertEquals([b.count, b.size], [0, 0]);
});

Deno.test("batch: unpacking refuses each malformed batch with a WireError", () => {
  const cases: [n: number, bytes: Uint8Array, reason: string][] = [
    [1, new Uint8Array(0), "truncated"], // no packets
    [2, Uint8Array.of(0), "truncated"], // half a length
    [3, Uint8Array.of(0, 5, ...new Array(10).fill(0), 1, 2), "truncated"], // length overruns
    [4, Uint8Array.of(0, 0), "value"], // zero-length packet
    [5, Uint8Array.of(0, 1, 0, 0, 0), "truncated"], // offload header cut short
    [6, new Uint8Array(26 * 13).map((_, i) => (i % 13 === 1 ? 1 : 0)), "oversize"], // 26 one-byte packets
    [7, new Uint8Array(MAX_BATCH_BYTES + 1), "oversize"],
  ];
  for (const [n, bytes, reason] of cases) {
    assertEquals(assertThrows(() => unpackBatch(bytes), WireError).reason, reason, `case ${n}`);
  }
});

Deno.test("batch: unpacking is total over 5000 hostile inputs", () => {
  const b = new BatchBuilder();
  for (const size of [60, 1500, 1, 300]) b.push(new Uint8Array(size).fill(size & 0xff));
  for (const { what, bytes } of mutants(b.plaintext(), 5000, { seed: 5 })) {
    try {
      for (const p of unpackBatch(bytes)) assertEquals(p.length > 0, true, what);
    } catch (error) {
      if (!(error instanceof WireError)) throw new Error(`${what}: ${error}`);
    }
  }
});

Deno.test("batch: each packet keeps its offload header; without one it is all zero", () => {
  const b = new BatchBuilder();
  const offload = Uint8Array.of(1, 1, 52, 0, 0xa8, 5, 20, 0, 16, 0);
  b.push(Uint8Array.of(0x45, 1), offload);
  b.push(Uint8Array.of(0x45, 2));
  assertEquals(unpackEntries(b.plaintext()), [
    { offload, packet: Uint8Array.of(0x45, 1) },
    { offload: new Uint8Array(10), packet: Uint8Array.of(0x45, 2) },
  ]);
});
