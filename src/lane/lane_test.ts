import { assert, assertEquals } from "../../tests/assert.ts";
import { waitFor } from "../../tests/harness.ts";
import { ipPacket } from "../../tests/packets.ts";
import { closeFd, packetPair, recvNow, sendNow } from "../../ffi/socket.ts";
import type { AddressFacts } from "../agent/addresses.ts";
import { nodeAesGcm } from "../crypto/node_aes.ts";
import { StreamOpener, StreamSealer } from "../crypto/stream.ts";
import { DirectTcp, SECRET_BYTES } from "../tether/direct_tcp.ts";
import { toHex } from "../wire/bytes.ts";
import { BatchBuilder } from "../wire/envelope.ts";
import { Lane, type LaneDevice } from "./lane.ts";
import type { LaneStats } from "./protocol.ts";

const SELF = new Uint8Array(16).fill(0x5e);
const PEER = new Uint8Array(16).fill(0x9e);
const facts = (ipv4: number[]): AddressFacts => ({
  ipv4: Uint8Array.from(ipv4),
  ipv6: new Uint8Array(16).fill(ipv4[3]!),
  portal: 0,
  subnets: [],
});
const SELF_FACTS = facts([10, 9, 0, 1]);
const PEER_FACTS = facts([10, 9, 0, 2]);

/** A "device" the worker reads and writes: one end of a packet socket pair; the test holds the other. */
function stubDevice(fd: number): LaneDevice {
  return {
    fd,
    name: "stub0",
    mtu: 1500,
    offload: false,
    stats: { readPackets: 0, writtenPackets: 0, writeErrors: 0, readMs: 0, writeMs: 0 },
    writeBatch: () => 0,
    close: () => Promise.resolve(closeFd(fd)),
  };
}

function batch(packet: Uint8Array): Uint8Array {
  const b = new BatchBuilder();
  b.push(packet);
  return b.plaintext().slice();
}

/**
 * The process's worker with a stand-in device and a direct connection whose both ends are in this process: what
 * reaches the device (`testEnd`), the drops it reports, the messages the listening end hands this thread, and
 * both streams' ends for a stream `from` one node `to` another.
 */
async function laneWithLink(from: Uint8Array, to: Uint8Array) {
  const [deviceEnd, testEnd] = packetPair();
  const lane = Lane.acquire();
  assert(await lane.ready, "the worker started");
  const drops = new Map<string, number>();
  lane.onStats = (s: LaneStats) => {
    for (const [reason, n] of s.drops) drops.set(reason, (drops.get(reason) ?? 0) + n);
  };
  const tun = lane.attach(stubDevice(deviceEnd), SELF)!;
  const secret = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  const arrived: Uint8Array[] = [];
  const quiet = { onMessage: () => {}, onClose: () => {} };
  const listening = DirectTcp.listen(
    "127.0.0.1",
    secret,
    { ...quiet, onMessage: (m) => arrived.push(m) },
    2_000,
  );
  const sender = (await DirectTcp.connect("127.0.0.1", listening.port, secret, quiet, 2_000))!;
  const receiver = (await listening.accepted)!;
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const id = crypto.getRandomValues(new Uint8Array(8));
  const now = Date.now();
  return {
    lane,
    tun,
    testEnd,
    drops,
    arrived,
    sender,
    sealer: new StreamSealer({ id, raw, aes: nodeAesGcm(raw), peer: to, createdAt: now }, Date.now),
    opener: new StreamOpener({ id, raw, aes: nodeAesGcm(raw), peer: from, createdAt: now }, {
      self: to,
      clock: Date.now,
    }),
    async [Symbol.asyncDispose]() {
      sender.close();
      receiver.close();
      await tun.close();
      lane.release();
      await lane.stopped;
      closeFd(testEnd);
    },
  };
}

Deno.test("lane: the worker opens what a direct connection brings for a stream it holds, once; replays through either thread are refused", async () => {
  // A stream from PEER to this node, opened here (the main thread) first.
  await using t = await laneWithLink(PEER, SELF);
  const { lane, sealer, opener, sender, testEnd, drops } = t;
  const packet = (n: number) => ipPacket(PEER_FACTS.ipv4, SELF_FACTS.ipv4, 17, new Uint8Array(20).fill(n));
  const before = sealer.sealNow(batch(packet(1)));
  assertEquals(opener.openNow(before), batch(packet(1)));
  // Handed to the worker, with the counters it accepted.
  lane.facts(SELF_FACTS, [[toHex(PEER), PEER_FACTS]]);
  lane.own(opener.handOver());
  const after = sealer.sealNow(batch(packet(2)));
  sender.send(after);
  const got = new Uint8Array(2048);
  let n = -1;
  await waitFor("the worker to write the packet to the device", 3_000, () => (n = recvNow(testEnd, got)) > 0);
  assertEquals(got.slice(0, n), packet(2));
  // Replays: the one accepted before the handover, over the connection; the one the worker accepted, through
  // the main thread (as a message from the backup pipeline would come).
  sender.send(before);
  lane.open(after);
  await waitFor("both replays refused", 3_000, () => (drops.get("refused") ?? 0) >= 2);
  assertEquals(recvNow(testEnd, got), -1, "nothing more reached the device");
  // And a packet from an address that is not the peer's is not written either.
  const spoofed = ipPacket(Uint8Array.of(10, 9, 0, 77), SELF_FACTS.ipv4, 17, new Uint8Array(8));
  sender.send(sealer.sealNow(batch(spoofed)));
  await waitFor("the spoofed source refused", 3_000, () => (drops.get("spoofed-source") ?? 0) >= 1);
  assertEquals(recvNow(testEnd, got), -1);
});

Deno.test("lane: the worker seals packets to a routed peer with the counters handed to it; unrouted, they reach the main thread", async () => {
  // A stream from this node to PEER: the worker seals, the connection's other end hands the message here.
  await using t = await laneWithLink(SELF, PEER);
  const { lane, sealer, opener, sender, testEnd, arrived, tun } = t;
  const packet = (n: number) => ipPacket(SELF_FACTS.ipv4, PEER_FACTS.ipv4, 17, new Uint8Array(30).fill(n));
  opener.openNow(sealer.sealNow(batch(packet(0)))); // counter 0, sealed on this thread
  lane.route(toHex(PEER), [PEER_FACTS.ipv4, PEER_FACTS.ipv6], sender.link, sealer.handOver());
  await new Promise((r) => setTimeout(r, 50)); // the route is a command: let the worker take it
  assertEquals(sendNow(testEnd, packet(1)), packet(1).length);
  await waitFor("the sealed batch at the other end", 3_000, () => arrived.length === 1);
  const message = arrived[0]!;
  assertEquals(new DataView(message.buffer, message.byteOffset).getUint32(3 + 16 + 8 + 4), 1, "counter 1");
  assertEquals(opener.openNow(message), batch(packet(1)));
  assertEquals(sealer.expired(), true, "this thread seals no more with a stream it handed over");
  // Taken back (a revoked peer, a changed path): its packets go to the main thread's data plane.
  lane.unroute(toHex(PEER));
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(sendNow(testEnd, packet(2)), packet(2).length);
  const bufs = [new Uint8Array(2048)];
  const sizes = [0];
  assertEquals(await tun.readBatch(bufs, sizes, 0), 1);
  assertEquals(bufs[0]!.slice(0, sizes[0]), packet(2));
  assertEquals(arrived.length, 1, "nothing more crossed the connection");
});

Deno.test("lane: a stream's messages reach the device in the order they were sealed, whatever order they come in; a forged one cannot stand in for one still missing", async () => {
  await using t = await laneWithLink(PEER, SELF);
  const { lane, sealer, opener, sender, testEnd, drops } = t;
  const packet = (n: number) => ipPacket(PEER_FACTS.ipv4, SELF_FACTS.ipv4, 17, new Uint8Array(20).fill(n));
  lane.facts(SELF_FACTS, [[toHex(PEER), PEER_FACTS]]);
  lane.own(opener.handOver());
  const sealed = [0, 1, 2, 3].map((n) => sealer.sealNow(batch(packet(n))));
  // A relay on another path forges the missing message 1: its header says counter 1, its bytes are not the
  // sender's. Then 2 comes before 1 (a slower path), then 3.
  const forged = sealed[1]!.slice();
  forged[forged.length - 1]! ^= 1;
  for (const m of [sealed[0]!, forged, sealed[2]!, sealed[1]!, sealed[3]!]) sender.send(m);
  const got = new Uint8Array(2048);
  const seen: Uint8Array[] = [];
  await waitFor("four packets on the device", 3_000, () => {
    for (let n = recvNow(testEnd, got); n > 0; n = recvNow(testEnd, got)) seen.push(got.slice(0, n));
    return seen.length >= 4;
  });
  assertEquals(seen, [0, 1, 2, 3].map(packet));
  await waitFor("the forged message refused", 3_000, () => (drops.get("refused") ?? 0) === 1);
});

Deno.test("lane: the worker's warm-up at start leaves nothing behind: no route to its made-up peer, no counter, no post", async () => {
  await using t = await laneWithLink(SELF, PEER);
  const { lane, testEnd, tun } = t;
  const reports: LaneStats[] = [];
  lane.onStats = (s) => reports.push(s);
  // The warm-up's made-up peer has 10.255.255.2 (src/lane/worker.ts): a packet to it is the main thread's.
  const packet = ipPacket(SELF_FACTS.ipv4, Uint8Array.of(10, 255, 255, 2), 17, new Uint8Array(30).fill(7));
  assertEquals(sendNow(testEnd, packet), packet.length);
  const bufs = [new Uint8Array(2048)];
  const sizes = [0];
  let timer;
  const read = await Promise.race([
    tun.readBatch(bufs, sizes, 0),
    new Promise<"sealed to the made-up peer">((r) =>
      timer = setTimeout(r, 3_000, "sealed to the made-up peer")
    ),
  ]);
  clearTimeout(timer);
  assertEquals(read, 1);
  // The first packet the main thread writes is this one, not one the warm-up made up for it.
  assertEquals(bufs[0]!.slice(0, sizes[0]), packet);
  // The first report counts that packet and nothing the warm-up did.
  await waitFor("the worker's report", 5_000, () => reports.length > 0);
  const [first] = reports;
  assertEquals(first!.traffic, []);
  assertEquals(first!.drops, []);
  assertEquals([first!.readPackets, first!.writtenPackets, first!.writeErrors], [1, 0, 0]);
  assert(Object.values(first!.stages).every((ms) => ms < 50), `stages: ${JSON.stringify(first!.stages)}`);
});

Deno.test("lane: under traffic the worker reports time in each sending stage, though it times only sampled turns", async () => {
  await using t = await laneWithLink(SELF, PEER);
  const { lane, sealer, sender, testEnd } = t;
  let stages: Record<string, number> = {};
  lane.onStats = (s) => stages = s.stages;
  lane.route(toHex(PEER), [PEER_FACTS.ipv4, PEER_FACTS.ipv6], sender.link, sealer.handOver());
  await new Promise((r) => setTimeout(r, 50));
  // One packet a turn: ~300 turns, of which one in STAGE_SAMPLE (8) is timed, drawn at random.
  const packet = ipPacket(SELF_FACTS.ipv4, PEER_FACTS.ipv4, 17, new Uint8Array(30));
  for (let i = 0; i < 300; i++) {
    sendNow(testEnd, packet);
    await new Promise((r) => setTimeout(r, 1));
  }
  await waitFor("a report after the traffic", 5_000, () => (stages.linkSend ?? 0) > 0);
  for (const stage of ["tunRead", "seal", "linkSend"]) {
    assert(stages[stage]! > 0, `${stage}: ${JSON.stringify(stages)}`);
  }
});

Deno.test("lane: a packet already waiting on the device ends the worker's warm-up early (it would otherwise wait for the whole warm-up, seconds on a busy host)", async () => {
  const [deviceEnd, testEnd] = packetPair();
  const packet = ipPacket(SELF_FACTS.ipv4, PEER_FACTS.ipv4, 17, new Uint8Array(30).fill(3));
  assertEquals(sendNow(testEnd, packet), packet.length);
  // A worker of its own (the tests before released theirs), given the device before it is ready: the command
  // reaches it while it warms up.
  const lane = Lane.acquire();
  const reports: LaneStats[] = [];
  lane.onStats = (s) => reports.push(s);
  const tun = lane.attach(stubDevice(deviceEnd), SELF)!;
  try {
    assert(await lane.ready, "the worker started");
    const bufs = [new Uint8Array(2048)];
    const sizes = [0];
    assertEquals(await tun.readBatch(bufs, sizes, 0), 1, "the packet reached the main thread (no route)");
    assertEquals(bufs[0]!.slice(0, sizes[0]), packet);
    await waitFor("the worker's first report", 5_000, () => reports.length > 0);
    // It looks every 50 rounds of 1600: the first look found the packet.
    assert(reports[0]!.warmUpRounds < 100, `the warm-up ran ${reports[0]!.warmUpRounds} rounds`);
  } finally {
    await tun.close();
    lane.release();
    await lane.stopped;
    closeFd(testEnd);
  }
});
