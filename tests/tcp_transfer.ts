/**
 * A TCP transfer with its bytes verified, for end-to-end tests:
 *   deno run -A tests/tcp_transfer.ts serve PORT
 *       prints "listening" (to stderr), then "<bytes> <sha256> <longest gap ms> <ms>" after one connection ends;
 *       the gap is the longest time between two reads once the first byte came, the last figure the time from
 *       the first byte to the end
 *   deno run -A tests/tcp_transfer.ts send HOST PORT N [BYTES_PER_SECOND [ON_S OFF_S]]
 *       sends N deterministic bytes (paced to the rate if given; with ON_S and OFF_S, only in the first ON_S
 *       seconds of each ON_S + OFF_S cycle, the connection idle in between), prints "<bytes> <sha256>"
 * @module
 */

import { createHash } from "node:crypto";

const [mode, ...args] = Deno.args;
const hash = createHash("sha256");
let total = 0;
let longestGapMs = 0;

if (mode === "serve") {
  const listener = Deno.listen({ port: Number(args[0]) });
  console.error("listening");
  const conn = await listener.accept();
  listener.close();
  let last: number | undefined;
  let first: number | undefined;
  for await (const chunk of conn.readable) {
    const now = performance.now();
    if (last !== undefined) longestGapMs = Math.max(longestGapMs, now - last);
    first ??= now;
    last = now;
    hash.update(chunk);
    total += chunk.length;
  }
  const tookMs = first === undefined ? 0 : performance.now() - first;
  console.log(`${total} ${hash.digest("hex")} ${Math.round(longestGapMs)} ${Math.round(tookMs)}`);
} else if (mode === "send") {
  const conn = await Deno.connect({ hostname: args[0]!, port: Number(args[1]) });
  const size = Number(args[2]);
  const rate = args[3] === undefined ? undefined : Number(args[3]);
  const [on, off] = args[4] === undefined ? [Infinity, 0] : [Number(args[4]), Number(args[5])];
  /** When, since the start, the sender has been busy for `active` seconds: the quiet parts are skipped. */
  const wallMs = (active: number) => (Math.floor(active / on) * (on + off) + (active % on)) * 1000;
  const started = performance.now();
  const block = new Uint8Array(rate === undefined ? 64 * 1024 : Math.min(64 * 1024, Math.ceil(rate / 50)));
  let seed = 12345;
  const writer = conn.writable.getWriter();
  while (total < size) {
    for (let i = 0; i < block.length; i += 4) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      block[i] = seed & 0xff;
      block[i + 1] = (seed >> 8) & 0xff;
      block[i + 2] = (seed >> 16) & 0xff;
      block[i + 3] = seed >> 24;
    }
    const chunk = block.subarray(0, Math.min(block.length, size - total));
    hash.update(chunk);
    await writer.write(chunk.slice());
    total += chunk.length;
    if (rate !== undefined) {
      // On schedule: a stall is made up afterwards, so the transfer's size and end stay the same.
      const due = started + (on === Infinity ? (total / rate) * 1000 : wallMs(total / rate));
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }
  await writer.close();
  console.log(`${total} ${hash.digest("hex")}`);
} else {
  console.error("usage: tcp_transfer.ts serve PORT | send HOST PORT BYTES [BYTES_PER_SECOND]");
  Deno.exit(2);
}
