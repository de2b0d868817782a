/**
 * A UDP flow with every datagram checked, for end-to-end tests:
 *   deno run -A tests/udp_flow.ts serve PORT
 *       prints "listening" (to stderr); on SIGTERM or SIGINT prints "<received> <duplicates> <corrupt>" and exits
 *   deno run -A tests/udp_flow.ts send HOST PORT PER_SECOND SECONDS [ON_S OFF_S]
 *       sends numbered 1000-byte datagrams at the rate for SECONDS (only in the ON_S part of each ON_S + OFF_S
 *       cycle when given), prints how many it sent
 * A datagram is its number (u32) and bytes derived from it: the receiver knows each one's content.
 * @module
 */

import { createSocket } from "node:dgram";

const SIZE = 1000;

function fill(datagram: Uint8Array, seq: number): void {
  new DataView(datagram.buffer).setUint32(0, seq);
  for (let i = 4; i < datagram.length; i++) datagram[i] = (seq * 31 + i) & 0xff;
}

const [mode, ...args] = Deno.args;
if (mode === "serve") {
  const socket = createSocket("udp4");
  const seen = new Set<number>();
  let duplicates = 0;
  let corrupt = 0;
  const report = () => {
    console.log(`${seen.size} ${duplicates} ${corrupt}`);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", report);
  Deno.addSignalListener("SIGINT", report);
  const expected = new Uint8Array(SIZE);
  socket.on("message", (datagram: Uint8Array) => {
    const seq = datagram.length >= 4 ? new DataView(datagram.buffer, datagram.byteOffset).getUint32(0) : -1;
    fill(expected, seq);
    if (datagram.length !== SIZE || expected.some((b, i) => datagram[i] !== b)) corrupt++;
    else if (seen.has(seq)) duplicates++;
    else seen.add(seq);
  });
  socket.bind(Number(args[0]), "0.0.0.0", () => console.error("listening"));
} else if (mode === "send") {
  const [host, port, perSecond, seconds, on, off] = [args[0]!, ...args.slice(1).map(Number)];
  const socket = createSocket("udp4");
  const started = performance.now();
  let sent = 0;
  for (let due = 0; due < seconds! * 1000; due += 1000 / perSecond!) {
    const cycle = on === undefined ? Infinity : on + off!;
    if ((due / 1000) % cycle >= (on ?? Infinity)) continue; // the quiet part of a cycle
    const wait = started + due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const datagram = new Uint8Array(SIZE);
    fill(datagram, sent++);
    await new Promise<void>((resolve, reject) =>
      socket.send(datagram, port!, host, (e) => e ? reject(e) : resolve())
    );
  }
  console.log(`${sent}`);
  socket.close();
} else {
  console.error("usage: udp_flow.ts serve PORT | send HOST PORT PER_SECOND SECONDS [ON_S OFF_S]");
  Deno.exit(2);
}
