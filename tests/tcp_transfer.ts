/**
 * A TCP transfer with its bytes verified, for end-to-end tests:
 *   deno run -A tests/tcp_transfer.ts serve PORT          prints "<bytes> <sha256>" after one connection ends
 *   deno run -A tests/tcp_transfer.ts send HOST PORT N    sends N deterministic bytes, prints "<bytes> <sha256>"
 * @module
 */

import { createHash } from "node:crypto";

const [mode, ...args] = Deno.args;
const hash = createHash("sha256");
let total = 0;

if (mode === "serve") {
  const listener = Deno.listen({ port: Number(args[0]) });
  console.error("listening");
  const conn = await listener.accept();
  listener.close();
  for await (const chunk of conn.readable) {
    hash.update(chunk);
    total += chunk.length;
  }
} else if (mode === "send") {
  const conn = await Deno.connect({ hostname: args[0]!, port: Number(args[1]) });
  const size = Number(args[2]);
  const block = new Uint8Array(64 * 1024);
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
  }
  await writer.close();
} else {
  console.error("usage: tcp_transfer.ts serve PORT | send HOST PORT BYTES");
  Deno.exit(2);
}
console.log(`${total} ${hash.digest("hex")}`);
