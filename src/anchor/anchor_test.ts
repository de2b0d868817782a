import { assertEquals } from "../../tests/assert.ts";
import { fromHex } from "../crypto/identity.ts";
import type { Tethers } from "../tether/tethers.ts";
import { MemoryTun } from "../tun/memory_tun.ts";
import { DATA_HEADER_BYTES, DataType, readDataHeader, writeDataHeader } from "../wire/envelope.ts";
import { Anchor } from "./anchor.ts";
import type { Streams } from "./streams.ts";

const SELF = "bb".repeat(16);
const A = "aa".repeat(16);
const C = "cc".repeat(16);

/** A relay node's data plane with its tethers replaced by a recorder. */
function relay(mayRelay: (from: string, dest: string) => boolean) {
  const sent: { to: string; message: Uint8Array }[] = [];
  const tethers = {
    send: (to: string, message: Uint8Array) => (sent.push({ to, message: message.slice() }), true),
    ensure: () => Promise.resolve(true),
    info: () => ({ state: "open" as const, txBytes: 0, rxBytes: 0 }),
    drained: () => Promise.resolve(),
  } as unknown as Tethers;
  const anchor = new Anchor({
    tun: new MemoryTun(),
    self: fromHex(SELF),
    streams: { opener: () => undefined } as unknown as Streams,
    tethers,
    route: () => undefined,
    nextHop: (d) => d,
    hopFailed: () => {},
    mayRelay,
    backup: () => {},
    clock: () => 0,
    log: () => {},
  });
  return { anchor, sent };
}

function message(to: string, ttl: number): Uint8Array {
  const m = new Uint8Array(DATA_HEADER_BYTES + 40);
  writeDataHeader(m, {
    type: DataType.Packets,
    destination: fromHex(to),
    stream: new Uint8Array(8),
    counter: 1,
    ttl,
  });
  return m;
}

Deno.test("anchor relay: forwards unchanged but for the TTL, only between nodes that may talk, never back", async () => {
  const cases: [n: number, from: string, to: string, ttl: number, allowed: boolean, outcome: string][] = [
    [1, A, C, 8, true, "forwarded"],
    [2, A, C, 8, false, "relay-forbidden"], // the two ends' taints are incompatible
    [3, C, C, 8, true, "relay-reflection"], // back to where it came from
    [4, A, C, 1, true, "ttl-expired"],
  ];
  for (const [n, from, to, ttl, allowed, outcome] of cases) {
    const { anchor, sent } = relay(() => allowed);
    const m = message(to, ttl);
    anchor.receive(from, m);
    if (outcome === "forwarded") {
      assertEquals(sent.length, 1, `case ${n}`);
      assertEquals(sent[0]!.to, to);
      assertEquals(readDataHeader(sent[0]!.message).ttl, ttl - 1);
      assertEquals(sent[0]!.message.subarray(0, DATA_HEADER_BYTES - 1), m.subarray(0, DATA_HEADER_BYTES - 1));
      assertEquals(sent[0]!.message.subarray(DATA_HEADER_BYTES), m.subarray(DATA_HEADER_BYTES));
      assertEquals(anchor.relayed.messages, 1);
    } else {
      assertEquals(sent.length, 0, `case ${n}`);
      assertEquals(anchor.drops.get(outcome as never), 1, `case ${n}`);
    }
    await anchor.close();
  }
});
