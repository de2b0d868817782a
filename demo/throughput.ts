/**
 * The demo's throughput probe, run inside the nodes' namespaces (`ip netns exec NS deno run -A throughput.ts ...`):
 *   serve PORT             accepts one connection, counts its bytes; prints `{"bytes":N,"seconds":S}` (first byte
 *                          to end of stream)
 *   send HOST PORT SECONDS sends for SECONDS (retrying the connection until the server listens); prints
 *                          `{"bytes":N}`
 * Either gives up (exit 1) if it has not finished well after it should have, so a stalled tunnel cannot hang the
 * demo.
 * @module
 */

const [mode, ...args] = Deno.args;

function giveUpAfter(ms: number, what: string): void {
  const timer = setTimeout(() => {
    console.error(`${what} did not finish within ${ms / 1000} s`);
    Deno.exit(1);
  }, ms);
  Deno.unrefTimer(timer);
}

if (mode === "serve") {
  giveUpAfter(40_000, "the transfer");
  const listener = Deno.listen({ port: Number(args[0]) });
  const conn = await listener.accept();
  listener.close();
  let bytes = 0;
  let first = 0;
  for await (const chunk of conn.readable) {
    if (bytes === 0) first = performance.now();
    bytes += chunk.length;
  }
  console.log(JSON.stringify({ bytes, seconds: (performance.now() - first) / 1000 }));
} else if (mode === "send") {
  const [hostname, port, seconds] = [args[0]!, Number(args[1]), Number(args[2])];
  giveUpAfter((seconds + 20) * 1000, "the transfer");
  let conn: Deno.TcpConn | undefined;
  for (let tries = 0; !conn; tries++) {
    try {
      conn = await Deno.connect({ hostname, port });
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused) || tries > 100) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const block = new Uint8Array(128 * 1024).map((_, i) => (i * 131 + 7) & 0xff);
  const writer = conn.writable.getWriter();
  const end = performance.now() + seconds * 1000;
  let bytes = 0;
  while (performance.now() < end) {
    await writer.write(block);
    bytes += block.length;
  }
  await writer.close();
  console.log(JSON.stringify({ bytes }));
} else {
  console.error("usage: throughput.ts serve PORT | send HOST PORT SECONDS");
  Deno.exit(2);
}
