import { assert, assertEquals } from "../../tests/assert.ts";
import { REPLAY_WINDOW } from "../spec.ts";
import { ReplayWindow, WINDOW_SIZE } from "./replay_window.ts";

const W = WINDOW_SIZE;
const T = W + 1;
const LIMIT = 2 ** 40;

// One window, fed in order; each row: counter, whether it is accepted. Modelled on wireguard-go's replay_test.go.
const SEQUENCE: [n: number, counter: number, accepted: boolean][] = [
  [1, 0, true],
  [2, 1, true],
  [3, 1, false], // seen
  [4, 9, true], // jump ahead
  [5, 8, true], // behind, unseen
  [6, 7, true],
  [7, 7, false],
  [8, T, true], // jump by more than the window
  [9, T - 1, true],
  [10, T - 1, false],
  [11, T - 2, true],
  [12, 2, true], // exactly W - 1 behind T: still inside
  [13, 2, false],
  [14, T + 16, true],
  [15, 3, false], // now too old
  [16, T + 16, false],
  [17, T * 4, true],
  [18, T * 4 - (W - 1), true],
  [19, 10, false],
  [20, T * 4 - W, true], // the oldest counter the window still judges
  [21, T * 4 - (W + 1), false], // one older: refused
  [22, T * 4 - (W - 1), false], // seen (row 18)
  [23, T * 4, false],
  [24, T * 4 + 1, true],
  [25, LIMIT - 1, true], // the last usable counter
  [26, LIMIT, false], // the limit itself
  [27, LIMIT + 1, false],
  [28, -1, false],
  [29, 1.5, false],
  [30, Number.NaN, false],
  [31, LIMIT - 2, true], // behind the highest, unseen
  [32, LIMIT - 2, false],
];

Deno.test("ReplayWindow follows the numbered sequence of accepts and refusals", () => {
  const window = new ReplayWindow(LIMIT);
  for (const [n, counter, accepted] of SEQUENCE) {
    assertEquals(window.check(counter), accepted, `row ${n}: check(${counter})`);
    assertEquals(window.accept(counter), accepted, `row ${n}: accept(${counter})`);
  }
});

Deno.test("ReplayWindow spans at least the protocol's REPLAY_WINDOW counters", () => {
  assert(W >= REPLAY_WINDOW, `window ${W} < ${REPLAY_WINDOW}`);
  const window = new ReplayWindow();
  assert(window.accept(REPLAY_WINDOW + 5));
  assert(window.accept(5), "a counter exactly REPLAY_WINDOW behind must still be judged");
  assertEquals(window.accept(5), false);
});

Deno.test("ReplayWindow accepts every counter once when they arrive reordered within the window", () => {
  const window = new ReplayWindow();
  // 200 blocks of 64 counters, each block delivered newest counter first.
  const end = 200 * 64;
  for (let block = 0; block < end; block += 64) {
    for (let c = block + 63; c >= block; c--) assert(window.accept(c), `first delivery of ${c}`);
  }
  for (let c = end - W; c < end; c++) assertEquals(window.accept(c), false, `second delivery of ${c}`);
  assertEquals(window.last, end - 1);
});

Deno.test("ReplayWindow forgets everything behind a jump further than the window", () => {
  const window = new ReplayWindow();
  for (let c = 0; c < 100; c++) window.accept(c);
  assert(window.accept(1_000_000));
  assertEquals(window.accept(50), false);
  // Counters just behind the new head were never seen, although their ring words held bits of 0..99 before.
  for (let c = 1_000_000 - W; c < 1_000_000; c += 97) assert(window.accept(c), `counter ${c}`);
});

Deno.test("ReplayWindow check() changes nothing", () => {
  const window = new ReplayWindow();
  assert(window.check(7));
  assert(window.check(7));
  assertEquals(window.last, -1);
  assert(window.accept(7));
  assertEquals(window.check(7), false);
});
