import { assert, assertEquals } from "../../tests/assert.ts";
import type { AddressFacts } from "../agent/addresses.ts";
import { udpPacket } from "../../tests/packets.ts";
import { bytesEqual, fromHex } from "../crypto/identity.ts";
import type { Lane } from "../lane/lane.ts";
import type { Tethers } from "../tether/tethers.ts";
import { destinationOf, sourceOf } from "../tun/ip.ts";
import { MemoryTun } from "../tun/memory_tun.ts";
import {
  BatchBuilder,
  DATA_HEADER_BYTES,
  DataType,
  readDataHeader,
  unpackBatch,
  writeDataHeader,
} from "../wire/envelope.ts";
import { Anchor, type AnchorOptions, type DataDrop } from "./anchor.ts";
import { REORDER_HOLD_MS } from "../tuning.ts";
import type { Streams } from "./streams.ts";

const SELF = "bb".repeat(16);
const A = "aa".repeat(16);
const C = "cc".repeat(16);

/**
 * An anchor for SELF on a MemoryTun with `o`'s streams and tethers; everything else quiet unless `o` says: no route,
 * every hop its own destination, relaying allowed, the backup pipeline a sink, the clock at 0.
 */
function anchorWith(o: Pick<AnchorOptions, "streams" | "tethers"> & Partial<AnchorOptions>): Anchor {
  return new Anchor({
    tun: new MemoryTun(),
    self: fromHex(SELF),
    route: () => undefined,
    nextHop: (d) => d,
    hopFailed: () => {},
    mayRelay: () => true,
    backup: () => {},
    backupFlush: () => Promise.resolve(),
    clock: () => 0,
    log: () => {},
    ...o,
  });
}

/** A relay node's data plane with its tethers replaced by a recorder. */
function relay(mayRelay: (from: string, dest: string) => boolean) {
  const sent: { to: string; message: Uint8Array }[] = [];
  const tethers = {
    send: (to: string, message: Uint8Array) => (sent.push({ to, message: message.slice() }), true),
    ensure: () => Promise.resolve(true),
    info: () => ({ state: "open" as const, txBytes: 0, rxBytes: 0 }),
    drained: () => Promise.resolve(),
  } as unknown as Tethers;
  const anchor = anchorWith({
    streams: { opener: () => undefined } as unknown as Streams,
    tethers,
    mayRelay,
  });
  return { anchor, sent };
}

function message(to: string, ttl: number, counter = 1): Uint8Array {
  const m = new Uint8Array(DATA_HEADER_BYTES + 40);
  writeDataHeader(m, {
    type: DataType.Packets,
    destination: fromHex(to),
    stream: new Uint8Array(8),
    counter,
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

/** A node's data plane receiving from A's stream: `open` hands back `batch` as the opened plaintext. */
function receiver(admit?: (peer: string, packet: Uint8Array) => DataDrop | undefined) {
  const tun = new MemoryTun();
  const opened: Promise<Uint8Array>[] = [];
  const admitted: { peer: string; packet: Uint8Array }[] = [];
  let batch = new Uint8Array(0);
  const opener = {
    secrets: { peer: fromHex(A) },
    opensNow: () => false,
    open: () => {
      const p = Promise.resolve(batch.slice());
      opened.push(p);
      return p;
    },
  };
  const anchor = anchorWith({
    tun,
    streams: { opener: () => opener } as unknown as Streams,
    tethers: {} as Tethers,
    admit: admit && ((peer, packet) => {
      admitted.push({ peer, packet: packet.slice() });
      return admit(peer, packet);
    }),
  });
  /** Delivers `packets` as one batch from A; resolves once the anchor has dealt with it. */
  const deliver = async (packets: Uint8Array[], counter = 1) => {
    const builder = new BatchBuilder();
    for (const p of packets) builder.push(p);
    batch = builder.plaintext().slice();
    anchor.receive(A, message(SELF, 8, counter));
    // The anchor writes once the open and the writes before it have settled: all done by the next macrotask.
    await opened.at(-1);
    await new Promise((resolve) => setTimeout(resolve, 0));
  };
  /** Closes the anchor and returns every packet written to the TUN. */
  const written = async () => {
    await anchor.close();
    const out: Uint8Array[] = [];
    for (let p; (p = await tun.host.receive());) out.push(p);
    return out;
  };
  return { anchor, deliver, written, admitted };
}

const v4 = (text: string) => Uint8Array.from(text.split("."), Number);
const PEER_IP = v4("10.128.0.1");
const SELF_IP = v4("10.128.0.2");

Deno.test("anchor ingress: only packets admit lets through reach the TUN; the rest are counted by reason", async () => {
  // Like the agent's check: the source must be the peer's, the destination this node's.
  const admit = (_peer: string, p: Uint8Array): DataDrop | undefined => {
    if (!bytesEqual(sourceOf(p)!, PEER_IP)) return "spoofed-source";
    if (!bytesEqual(destinationOf(p)!, SELF_IP)) return "foreign-destination";
    return undefined;
  };
  const { anchor, deliver, written, admitted } = receiver(admit);
  const ports = { sport: 4000, dport: 53 };
  const good1 = udpPacket(PEER_IP, SELF_IP, ports, new TextEncoder().encode("one"));
  const spoofed = udpPacket(v4("10.128.0.9"), SELF_IP, ports, new Uint8Array(10));
  const foreign = udpPacket(PEER_IP, v4("8.8.8.8"), ports, new Uint8Array(20));
  const good2 = udpPacket(PEER_IP, SELF_IP, ports, new TextEncoder().encode("two"));
  const alsoForeign = udpPacket(PEER_IP, v4("192.168.1.1"), ports, new Uint8Array(30));

  await deliver([good1, spoofed, foreign, good2]);
  await deliver([alsoForeign]);
  await deliver([good1]);

  assertEquals(admitted.map((a) => a.peer), new Array(6).fill(A), "admit is asked with the stream's peer");
  assertEquals(admitted.map((a) => a.packet), [good1, spoofed, foreign, good2, alsoForeign, good1]);
  assertEquals(anchor.drops.get("spoofed-source"), 1);
  assertEquals(anchor.drops.get("foreign-destination"), 2);
  assertEquals(anchor.traffic.get(A)?.rxPackets, 3, "only admitted packets count as received");
  assertEquals(anchor.traffic.get(A)?.rxBytes, 2 * good1.length + good2.length);
  assertEquals(await written(), [good1, good2, good1]);
});

Deno.test("anchor ingress: a batch admit refuses entirely writes nothing; without admit every packet is written", async () => {
  const refused = receiver(() => "spoofed-source");
  const packet = udpPacket(PEER_IP, SELF_IP, { sport: 1, dport: 2 }, new Uint8Array(8));
  await refused.deliver([packet, packet, packet]);
  assertEquals(refused.anchor.drops.get("spoofed-source"), 3);
  assertEquals(refused.anchor.traffic.get(A)?.rxPackets ?? 0, 0);
  assertEquals(await refused.written(), []);

  const open = receiver();
  const other = udpPacket(v4("1.2.3.4"), v4("5.6.7.8"), { sport: 1, dport: 2 }, new Uint8Array(8));
  await open.deliver([packet, other]);
  assertEquals(open.anchor.drops.size, 0);
  assertEquals(await open.written(), [packet, other]);
});

Deno.test("anchor ingress: a stream's batches are written in the order they were sealed, whatever order they come in; a missing one is waited for a while only", async () => {
  const { deliver, written } = receiver();
  const p = [0, 1, 2, 3, 4, 5].map((n) =>
    udpPacket(PEER_IP, SELF_IP, { sport: 1, dport: 2 }, new Uint8Array(n + 1))
  );
  await deliver([p[1]!], 1);
  await deliver([p[3]!], 3); // 2 took a slower path
  await deliver([p[2]!], 2);
  await deliver([p[5]!], 5); // 4 is lost
  await new Promise((r) => setTimeout(r, REORDER_HOLD_MS + 30));
  await deliver([p[4]!], 4); // too late to be waited for: written at once
  assertEquals(await written(), [p[1], p[2], p[3], p[5], p[4]]);
});

/**
 * A sender: its TUN, a ready stream to A that "seals" by copying, and tethers whose forming the test controls
 * (each `ensure` waits until the test settles it).
 */
function sender(
  seal: (b: Uint8Array) => Promise<Uint8Array> = (b) => Promise.resolve(b.slice()),
  /** Batches up to this size are "sealed" on the spot (sealNow), as a real stream does small ones. */
  sealsNowUpTo = -1,
  /** Whether the backup pipeline may carry this node's traffic (geo-location control). */
  mayBackup?: () => boolean,
) {
  const tun = new MemoryTun();
  let now = 0;
  let state: "open" | "forming" | undefined;
  const attempts: ((open: boolean) => void)[] = [];
  const onTether: Uint8Array[] = [];
  const onBackup: Uint8Array[] = [];
  const failed: string[] = [];
  const tethers = {
    info: () => state && { state, txBytes: 0, rxBytes: 0 },
    ensure: () => {
      state = "forming";
      return new Promise<boolean>((resolve) =>
        attempts.push((open) => {
          state = open ? "open" : undefined;
          resolve(open);
        })
      );
    },
    send: (_: string, m: Uint8Array) => state === "open" && onTether.push(m) > 0,
    drained: () => Promise.resolve(),
  } as unknown as Tethers;
  const sealer = { seal, sealsNow: (n: number) => n <= sealsNowUpTo, sealNow: (b: Uint8Array) => b.slice() };
  const anchor = anchorWith({
    tun,
    streams: { ready: () => sealer, sealer: () => Promise.resolve(sealer) } as unknown as Streams,
    tethers,
    route: () => A,
    hopFailed: (_, hop) => failed.push(hop),
    backup: (_, m) => onBackup.push(m),
    mayBackup,
    clock: () => now,
  });
  anchor.start();
  const packet = udpPacket(SELF_IP, PEER_IP, { sport: 1, dport: 2 }, new Uint8Array(8));
  /** Sends one packet into the TUN and waits until the anchor has sent it on one path or the other. */
  const send = async () => {
    const before = onTether.length + onBackup.length;
    await tun.host.send(packet);
    for (let i = 0; i < 100 && onTether.length + onBackup.length === before; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  return {
    anchor,
    tun,
    send,
    attempts,
    onTether,
    onBackup,
    failed,
    advance: (ms: number) => now += ms,
    settle: async (open: boolean) => {
      attempts.at(-1)!(open);
      await new Promise((r) => setTimeout(r, 0));
    },
  };
}

Deno.test("anchor egress: no batch waits for a tether: the backup pipeline carries it until the tether is open", async () => {
  const s = sender();
  await s.send();
  assertEquals(
    [s.onBackup.length, s.onTether.length, s.attempts.length],
    [1, 0, 1],
    "first packet: backup now",
  );
  assertEquals(s.anchor.inBackup(A), true);
  await s.send(); // still forming: backup again, and no second attempt
  assertEquals([s.onBackup.length, s.attempts.length], [2, 1]);
  await s.settle(true);
  await s.send();
  assertEquals([s.onBackup.length, s.onTether.length], [2, 1], "the tether takes over once open");
  assertEquals(s.anchor.inBackup(A), false);
  await s.anchor.close();
});

Deno.test("anchor egress: where the backup pipeline may not carry the traffic, a batch waits for the tether", async () => {
  const s = sender(undefined, -1, () => false);
  await s.send();
  assertEquals(
    [s.onBackup.length, s.onTether.length, s.attempts.length],
    [0, 0, 1],
    "dropped, tether forming",
  );
  assertEquals([s.anchor.drops.get("region"), s.anchor.blocked(A), s.anchor.inBackup(A)], [1, true, false]);
  await s.settle(true);
  await s.send();
  assertEquals([s.onBackup.length, s.onTether.length], [0, 1], "the tether carries it once open");
  assertEquals(s.anchor.blocked(A), false);
  await s.anchor.close();
});

Deno.test("anchor egress: a tether that failed is tried again only after a backoff that doubles", async () => {
  const s = sender();
  await s.send();
  await s.settle(false);
  assertEquals(s.failed, [A]);
  await s.send();
  assertEquals([s.onBackup.length, s.attempts.length], [2, 1], "within the backoff: no new attempt");
  s.advance(1_001);
  await s.send();
  assertEquals(s.attempts.length, 2, "after 1 s it is tried again");
  await s.settle(false);
  s.advance(1_001);
  await s.send();
  assertEquals(s.attempts.length, 2, "the second backoff is 2 s");
  s.advance(1_000);
  await s.send();
  assertEquals(s.attempts.length, 3);
  s.anchor.retryTethers();
  await s.settle(false);
  s.anchor.retryTethers(); // something changed: at once
  await s.send();
  assertEquals(s.attempts.length, 4);
  assertEquals(s.onBackup.length, 6, "every packet went out, none waited");
  await s.settle(true);
  await s.anchor.close();
});

Deno.test("anchor egress: batches leave in the order they were read, whatever order their seals finish in", async () => {
  // Each seal takes less time than the one before: the last batch read is sealed first.
  let delay = 50;
  const s = sender((b) => new Promise((resolve) => setTimeout(() => resolve(b.slice()), delay -= 10)));
  await s.send(); // forms the tether (over the backup pipeline meanwhile)
  await s.settle(true);
  const packets = [1, 2, 3, 4].map((n) =>
    udpPacket(SELF_IP, PEER_IP, { sport: n, dport: 2 }, new Uint8Array(8))
  );
  for (const p of packets) {
    await s.tun.host.send(p);
    await new Promise((r) => setTimeout(r, 0)); // read, batched alone and handed to its seal
  }
  for (let i = 0; i < 100 && s.onTether.length < packets.length; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const ports = s.onTether.map((batch) => unpackBatch(batch).map((p) => p[21]!));
  assertEquals(ports, [[1], [2], [3], [4]]);
  await s.anchor.close();
});

Deno.test("anchor egress: more packets waiting than one read takes all leave once, in order", async () => {
  const s = sender();
  await s.send(); // forms the tether (over the backup pipeline meanwhile)
  await s.settle(true);
  const count = 300; // the read loop starts with one slot and doubles them up to 64
  for (let n = 0; n < count; n++) {
    s.tun.host.send(udpPacket(SELF_IP, PEER_IP, { sport: n, dport: 2 }, new Uint8Array(8)));
  }
  const sent = () => s.onTether.flatMap((batch) => unpackBatch(batch)).length;
  for (let i = 0; i < 200 && sent() < count; i++) await new Promise((r) => setTimeout(r, 5));
  const ports = s.onTether.flatMap((batch) => unpackBatch(batch).map((p) => (p[20]! << 8) | p[21]!));
  assertEquals(ports, Array.from({ length: count }, (_, n) => n));
  await s.anchor.close();
});

Deno.test("anchor egress: a small batch sealed on the spot never overtakes a larger one still being sealed", async () => {
  let seals = 0;
  const slowSeal = (b: Uint8Array) => {
    seals++;
    return new Promise<Uint8Array>((resolve) => setTimeout(() => resolve(b.slice()), 30));
  };
  const s = sender(slowSeal, 200);
  await s.send(); // forms the tether (over the backup pipeline meanwhile)
  await s.settle(true);
  const small = (n: number) => udpPacket(SELF_IP, PEER_IP, { sport: n, dport: 2 }, new Uint8Array(8));
  const large = udpPacket(SELF_IP, PEER_IP, { sport: 2, dport: 2 }, new Uint8Array(1000));
  for (const p of [large, small(3)]) {
    await s.tun.host.send(p);
    await new Promise((r) => setTimeout(r, 0)); // read, batched alone and handed to its seal
  }
  for (let i = 0; i < 100 && s.onTether.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
  assertEquals(seals, 2, "the small batch behind the large one waited for its turn in seal()");
  await s.send(); // one more small one, with nothing in flight: sealed on the spot
  assertEquals(seals, 2);
  const ports = s.onTether.map((batch) => unpackBatch(batch).map((p) => p[21]!));
  assertEquals(ports, [[2], [3], [1]]);
  await s.anchor.close();
});

Deno.test("anchor: time per stage is counted, and the TUN's own reads and writes when it counts them", async () => {
  const s = sender();
  for (let i = 0; i < 20; i++) await s.send();
  const stages = s.anchor.stages;
  assertEquals(Object.keys(stages).sort(), [
    "batch",
    "linkSend",
    "open",
    "receive",
    "seal",
    "tunRead",
    "tunWrite",
  ]);
  assertEquals(Object.values(stages).every((ms) => Number.isFinite(ms) && ms >= 0), true);
  assertEquals(stages.batch + stages.seal + stages.linkSend > 0, true, "sending took some time");
  await s.anchor.close();
});

Deno.test("anchor lane: with no tether open, the worker is told what changed seldom, though it keeps receiving streams", async () => {
  let direct = new Map([[A, {}]]);
  let syncs = 0;
  const tethers = {
    directLinks: () => (syncs++, direct),
    get count() {
      return direct.size;
    },
  } as unknown as Tethers;
  // A receiving stream from A, handed to the worker while A's direct connection is open, and kept once it closes
  // (streams outlive tethers).
  const opener = {
    handedOver: false,
    secrets: { id: new Uint8Array(8), peer: fromHex(A), raw: new Uint8Array(32) },
    expired: () => false,
    handOver() {
      this.handedOver = true;
      return {};
    },
  };
  let owned = 0;
  const lane = {
    facts: () => {},
    own: () => owned++,
    disown: () => owned--,
    unroute: () => {},
  } as unknown as Lane;
  const self: AddressFacts = { ipv4: new Uint8Array(4), ipv6: new Uint8Array(16), portal: 0, subnets: [] };
  const anchor = anchorWith({
    streams: {
      openersOf: (p: string) => p === A ? [opener] : [],
      openerById: () => opener,
    } as unknown as Streams,
    tethers,
    mayRelay: () => false,
    lane,
    preferredHop: (d) => d,
    facts: () => undefined,
    selfFacts: () => self,
  });
  try {
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    while (owned === 0) await sleep(20);
    direct = new Map();
    await sleep(250); // the sync already due, at most LANE_SYNC_MS away
    const since = syncs;
    await sleep(1_500);
    assertEquals(owned, 1, "the stream stays with the worker");
    // Every 200 ms this would be 7; every LANE_IDLE_SYNC_MS (5 s) it is 0 or 1 (a timer is never early).
    assert(syncs - since <= 1, `${syncs - since} syncs in 1.5 s`);
  } finally {
    await anchor.close();
  }
});

Deno.test("anchor egress: while the stream forms, the tether waits too: it starts forming once the first batch has left", async () => {
  // Making a peer connection holds this thread (tens of ms on a busy host): the handshake must not wait for it.
  const tun = new MemoryTun();
  const events: string[] = [];
  let ready: ((s: unknown) => void) | undefined;
  const sealer = { seal: (b: Uint8Array) => Promise.resolve(b.slice()), sealsNow: () => false };
  const anchor = anchorWith({
    tun,
    streams: {
      ready: () => undefined,
      sealer: () => new Promise((resolve) => ready = resolve),
    } as unknown as Streams,
    tethers: {
      info: () => undefined,
      ensure: () => (events.push("tether"), new Promise(() => {})),
      send: () => false,
      drained: () => Promise.resolve(),
    } as unknown as Tethers,
    route: () => A,
    backup: () => events.push("backup"),
  });
  anchor.start();
  await tun.host.send(udpPacket(SELF_IP, PEER_IP, { sport: 1, dport: 2 }, new Uint8Array(8)));
  for (let i = 0; i < 100 && !ready; i++) await new Promise((r) => setTimeout(r, 1));
  assertEquals(events, [], "the stream is forming: nothing sent, no tether yet");
  ready!(sealer);
  for (let i = 0; i < 100 && events.length < 2; i++) await new Promise((r) => setTimeout(r, 1));
  assertEquals(events, ["backup", "tether"]);
  await anchor.close();
});
