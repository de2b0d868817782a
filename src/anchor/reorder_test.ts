import { assertEquals } from "../../tests/assert.ts";
import { Reorder } from "./reorder.ts";

Deno.test("reorder: messages behind a gap wait for it and then go in counter order", () => {
  const r = new Reorder<string>(20, 8);
  assertEquals(r.take(10, "a", 0), ["a"]);
  assertEquals(r.take(12, "c", 1), []);
  assertEquals(r.take(13, "d", 2), []);
  assertEquals(r.deadline, 21);
  assertEquals(r.take(11, "b", 3), ["b", "c", "d"]);
  assertEquals([r.held, r.deadline], [0, undefined]);
  assertEquals(r.take(14, "e", 4), ["e"]);
});

Deno.test("reorder: a gap not filled within the hold is given up; what comes after it late goes at once", () => {
  const r = new Reorder<string>(20, 8);
  r.take(0, "a", 0);
  assertEquals(r.take(2, "c", 5), []);
  assertEquals(r.take(5, "f", 10), []);
  assertEquals(r.expire(24), []);
  // 2 waited 20 ms: the gap at 1 is given up; 5 waits on for its own gap (3, 4) until 30.
  assertEquals(r.expire(25), ["c"]);
  assertEquals(r.deadline, 30);
  assertEquals(r.take(1, "b", 26), ["b"], "late, after its gap was given up");
  assertEquals(r.take(3, "d", 27), ["d"]);
  assertEquals(r.expire(30), ["f"]);
  assertEquals(r.take(6, "g", 31), ["g"]);
});

Deno.test("reorder: never holds more than its limit, and flush hands over everything in order", () => {
  const r = new Reorder<number>(1_000, 3);
  r.take(0, 0, 0);
  for (const n of [2, 3, 4]) assertEquals(r.take(n, n, 0), []);
  assertEquals(r.take(6, 6, 0), [2, 3, 4], "a fourth held: the first gap is given up");
  assertEquals(r.held, 1);
  assertEquals(r.take(9, 9, 0), []);
  assertEquals(r.flush(), [6, 9]);
  assertEquals(r.take(10, 10, 0), [10]);
});

Deno.test("reorder: passes takes a message that may go at once, and only such a one", () => {
  const r = new Reorder<string>(20, 8);
  assertEquals([r.passes(5), r.passes(6)], [true, true]);
  assertEquals(r.passes(8), false, "7 is missing: it must be taken (and wait)");
  assertEquals(r.take(8, "h", 0), []);
  assertEquals(r.passes(7), false, "something waits behind it: take releases both");
  assertEquals(r.take(7, "g", 1), ["g", "h"]);
  assertEquals([r.passes(9), r.passes(3)], [true, true], "in order; and late, after its gap was given up");
  assertEquals(r.take(10, "j", 2), ["j"], "passes moved the order on");
});
