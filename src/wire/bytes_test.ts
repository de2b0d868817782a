import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { ByteReader, ByteWriter, WireError } from "./bytes.ts";

Deno.test("ByteWriter grows past its initial size and ByteReader reads every field back", () => {
  const w = new ByteWriter("test", 2)
    .u8(0xab, "a")
    .u16(0xbeef, "b")
    .u32(0xdeadbeef, "c")
    .u64(2 ** 53 - 1, "d")
    .fixed(new Uint8Array(300).fill(7), 300, "e")
    .varBytes(Uint8Array.of(1, 2, 3), 3, "f")
    .string("héllo", 10, "g");
  const r = new ByteReader(w.finish(), "test");
  assertEquals(
    [r.u8("a"), r.u16("b"), r.u32("c"), r.u64("d")],
    [0xab, 0xbeef, 0xdeadbeef, 2 ** 53 - 1],
  );
  assertEquals(r.bytes(300, "e"), new Uint8Array(300).fill(7));
  assertEquals(r.varBytes(3, "f"), Uint8Array.of(1, 2, 3));
  assertEquals(r.string(10, "g"), "héllo");
  r.end();
});

Deno.test("ByteReader refuses truncation, oversize fields, trailing bytes and unsafe u64 with WireError", () => {
  const cases: [n: number, run: () => unknown, reason: string, text: string][] = [
    [1, () => new ByteReader(Uint8Array.of(1), "m").u16("len"), "truncated", "m: truncated at len"],
    [2, () => new ByteReader(Uint8Array.of(0, 9, 1), "m").varBytes(8, "blob"), "oversize", "blob is 9 bytes"],
    [
      3,
      () => new ByteReader(Uint8Array.of(0, 2, 1), "m").varBytes(8, "blob"),
      "truncated",
      "truncated at blob",
    ],
    [4, () => new ByteReader(new Uint8Array(8).fill(0xff), "m").u64("n"), "value", "n exceeds 2^53 - 1"],
    [
      5,
      () => new ByteReader(Uint8Array.of(0, 1, 0xc3), "m").string(5, "s"),
      "encoding",
      "s is not valid UTF-8",
    ],
    [6, () => new ByteReader(Uint8Array.of(1, 2), "m").end(), "trailing", "2 unexpected trailing bytes"],
  ];
  for (const [n, run, reason, text] of cases) {
    assertEquals(assertThrows(run, WireError, text).reason, reason, `case ${n}`);
  }
});

Deno.test("ByteWriter refuses out-of-range values with RangeError naming the field", () => {
  const w = new ByteWriter("m");
  assertThrows(() => w.u8(256, "small"), RangeError, "small");
  assertThrows(() => w.u16(-1, "neg"), RangeError, "neg");
  assertThrows(() => w.u32(1.5, "frac"), RangeError, "frac");
  assertThrows(() => w.u64(2 ** 53, "big"), RangeError, "big");
  assertThrows(() => w.fixed(new Uint8Array(3), 4, "id"), RangeError, "id must be 4 bytes");
  assertThrows(() => w.varBytes(new Uint8Array(5), 4, "blob"), RangeError, "limit is 4");
  assertEquals(w.length, 0);
});
