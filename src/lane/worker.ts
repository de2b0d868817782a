/**
 * The data-plane worker: a thread that waits in one synchronous `poll()` on the TUN device, every direct TCP
 * connection and its wake counter, and carries the common case on its own, with no promise and no hop to another
 * thread between the device and the socket:
 *
 * ```
 * TUN read ─▶ destination has a fast route? ─yes─▶ batch ─▶ seal (GnuTLS)   ─▶ frame ─▶ send() on the connection
 *                                          └no──▶ posted to the main thread (its Anchor does the rest)
 * connection ─▶ frame ─▶ for this node, a stream this thread holds? ─yes─▶ open ─▶ admit ─▶ TUN write
 *                                                                 └no──▶ posted to the main thread
 * ```
 * The main thread decides everything else and tells this one (src/lane/protocol.ts): which peer's addresses take
 * which connection with which sending stream, which receiving streams are this thread's, what each peer may send.
 * A stream's counters and replay window are only ever on one thread at a time.
 * @module
 */

/// <reference lib="deno.worker" />

import { hasHostAes, hostAesGcm } from "../../ffi/aes_gcm.ts";
import { addTo, eventfd, takeFrom } from "../../ffi/eventfd.ts";
import { LINUX } from "../../ffi/libc.ts";
import { libc } from "../../ffi/loader.ts";
import { closeFd, packetPair, recvNow, sendNow, setNoDelay, unacknowledged } from "../../ffi/socket.ts";
import { type AddressFacts, admitPacket } from "../agent/addresses.ts";
import { toHex } from "../wire/bytes.ts";
import { ReplayWindow } from "../crypto/replay_window.ts";
import { StreamOpener, StreamSealer, type SyncAesGcm } from "../crypto/stream.ts";
import { MAX_DATA_MESSAGE_BYTES } from "../spec.ts";
import { destinationOf } from "../tun/ip.ts";
import { OFFLOAD_HEADER_BYTES, plainPackets } from "../tun/offload.ts";
import {
  LINK_BUFFER_HIGH_BYTES,
  LINK_BUFFER_LOW_BYTES,
  REORDER_HOLD_MS,
  REORDER_MAX_HELD,
  SPILL_BYTES,
} from "../tuning.ts";
import { BatchBuilder, counterOf, namesStream, unpackEntries } from "../wire/envelope.ts";
import type { Command, Event, LaneStats } from "./protocol.ts";
import { Reorder } from "../anchor/reorder.ts";

/** A write the kernel has not taken any of for this long closes the connection (see direct_tcp.ts). */
export const STALL_MS = 3_000;
/** Batches of packets posted to the main thread and not yet taken: beyond this the TUN is not read. */
export const SLOW_WINDOW = 8;
/**
 * Counters are reported once traffic has paused for STATS_QUIET_MS, and at least every STATS_MS: not in the
 * middle of an exchange, where waking the main thread would compete with the packets for the CPUs.
 */
const STATS_QUIET_MS = 100;
const STATS_MS = 1_000;
/** With nothing counted since the last report, the next comes this much later (an idle node wakes less). */
const STATS_IDLE_MS = 10_000;
/** Batches sent behind a backlog that make a report come after STATS_QUIET_MS, not STATS_MS. */
const BACKLOG_REPORT_BATCHES = 8;
const PACKETS_PER_READ = 64;
/** See readTun and seal. */
const SMALL_PACKET_BYTES = 512;
/** Bytes read from one connection per turn, so one busy peer cannot starve the others or the TUN. */
const READ_TURN_BYTES = 512 * 1024;

interface Queued {
  bytes: Uint8Array;
  /** The frame's whole length when it came from the main thread (reported as flushed once written), else 0. */
  fromMain: number;
}

interface Link {
  id: number;
  fd: number;
  buffer: Uint8Array;
  filled: number;
  queue: Queued[];
  queued: number;
  congested: boolean;
  /** When the last byte was written, or the queue last became non-empty (ms). */
  progress: number;
}

interface Route {
  peer: string;
  link: Link;
  sealer: StreamSealer;
  builder: BatchBuilder;
  keys: (number | string)[];
}

const c = libc();

/** struct timespec (64-bit tv_sec, then 64-bit tv_nsec; little-endian on the platforms Deno runs on), reused. */
const timespec = new Int32Array(4);
const timespecBytes = new Uint8Array(timespec.buffer);
function monotonicMs(): number {
  c.clock_gettime(LINUX.CLOCK_MONOTONIC, timespecBytes);
  return timespec[0]! * 1000 + timespec[2]! / 1e6;
}
const clockOffset = performance.now() - monotonicMs();
/**
 * This thread's clock (ms, on performance.now()'s scale), read for the timeouts, and around each stage of the turns
 * that are timed (STAGE_SAMPLE): CLOCK_MONOTONIC through libc costs ~40 ns, performance.now() (a call into Deno)
 * ~100 ns, and more after a pause, when its code is no longer in the CPU's caches (a ping's median RTT was 0-8%
 * lower with this).
 */
function clock(): number {
  return monotonicMs() + clockOffset;
}
const scope = self as unknown as DedicatedWorkerGlobalScope;
const inbox: Command[] = [];
let received = 0;
let arrived: (() => void) | undefined;

let selfId: Uint8Array = new Uint8Array(0);
let wakeFd = -1;
let ackFd = -1;
let tun: { fd: number; offload: boolean; slot: Uint8Array } | undefined;
const links = new Map<number, Link>();
const routes = new Map<number | string, Route>();
const routesByPeer = new Map<string, Route>();
/** A receiving stream the worker opens, and what it holds back until the messages before it come. */
interface Held {
  opener: StreamOpener;
  peer: string;
  reorder: Reorder<Opened>;
}
/** An opened message's packets, ready for the device, and their IP bytes. */
interface Opened {
  packets: Uint8Array[];
  bytes: number;
}
const openers = new Map<string, Held>();
/** Streams holding messages back (see reorder.ts). */
const waiting = new Set<Held>();
const facts = new Map<string, AddressFacts>();
let selfFacts: AddressFacts | undefined;
let slowOutstanding = 0;
let stopping = false;

// What this turn posts, gathered.
let slow: Uint8Array[] = [];
const forMain = new Map<number, Uint8Array[]>();
const flushed = new Map<number, number>();
const touched = new Set<Route>();

// Counters since the last report, and the stages' totals.
let traffic = new Map<string, LaneStats["traffic"][number][1]>();
let drops = new Map<string, number>();
const stages = { tunRead: 0, batch: 0, seal: 0, linkSend: 0, receive: 0, open: 0, tunWrite: 0 };
/**
 * Stages are timed in one turn of STAGE_SAMPLE, drawn at random, and reported STAGE_SAMPLE times over: reading the
 * clock around every stage of every turn made a ping's round trip ~2% slower than timing none (one realm
 * alternating each second, three realms: 0.95-1.00x without it, 0.98x on average). Bulk traffic takes thousands of
 * turns a second.
 */
const STAGE_SAMPLE = 8;
let timed = true;
/** The clock in a timed turn, else 0 (a stage's time is then 0 - 0). */
function stageClock(): number {
  return timed ? clock() : 0;
}
/** Batches sent behind a backlog since the last report: a few make the next report come early (see run). */
let backlogs = 0;
/** When the counters were last reported (ms). */
let lastReport = clock();
let readPackets = 0;
let writtenPackets = 0;
let writeErrors = 0;
/** readPackets + writtenPackets + writeErrors when the counters were last reported. */
let reportedPackets = 0;

/** Whether anything was counted since the last report. */
function counted(): boolean {
  return traffic.size > 0 || drops.size > 0 || readPackets + writtenPackets + writeErrors !== reportedPackets;
}

/** While the warm-up runs, what it would post is made up: only its logs are said. */
let warming = false;

function post(event: Event, transfer: Transferable[] = []): void {
  if (warming && event.t !== "log") return;
  scope.postMessage(event, transfer);
}

function drop(reason: string, n = 1): void {
  drops.set(reason, (drops.get(reason) ?? 0) + n);
}

function trafficOf(peer: string): LaneStats["traffic"][number][1] {
  let t = traffic.get(peer);
  if (!t) {
    traffic.set(peer, t = { txBytes: 0, txPackets: 0, rxBytes: 0, rxPackets: 0, batches: 0, backlogged: 0 });
  }
  return t;
}

/** node:crypto's cipher, loaded only on a host with neither GnuTLS nor libcrypto (Node's compatibility layer is big). */
let nodeAes: ((key: Uint8Array) => SyncAesGcm) | undefined;

function aesFor(raw: Uint8Array): SyncAesGcm {
  return hostAesGcm(raw) ?? nodeAes!(raw);
}

function addressKey(address: Uint8Array): number | string {
  if (address.length === 4) {
    return ((address[0]! << 24) | (address[1]! << 16) | (address[2]! << 8) | address[3]!) >>> 0;
  }
  return toHex(address);
}

// ---- Connections ------------------------------------------------------------------------------------------------

function closeLink(link: Link, reason: string): void {
  if (!links.delete(link.id)) return;
  closeFd(link.fd);
  for (const route of [...routesByPeer.values()]) {
    if (route.link === link) unroute(route, `its connection ${reason}`);
  }
  post({ t: "closed", link: link.id, reason });
}

/**
 * The frame the fast path seals into: reused, as is every buffer on that path. Allocating one per message costs
 * ~20 us after each pause here (the allocator hands idle memory back), which a ping pays on every hop.
 */
const frame = new Uint8Array(4 + MAX_DATA_MESSAGE_BYTES);
const frameView = new DataView(frame.buffer);
/** Where the fast path opens a batch. */
const plainBuffer = new Uint8Array(MAX_DATA_MESSAGE_BYTES);

/** A message from the main thread: framed and sent. */
function sendFrame(link: Link, message: Uint8Array): void {
  const framed = new Uint8Array(4 + message.length);
  new DataView(framed.buffer).setUint32(0, message.length);
  framed.set(message, 4);
  sendBytes(link, framed, framed.length);
}

/**
 * Writes a frame, what the kernel takes at once, and queues the rest (copied: `bytes` may be a reused buffer).
 * `fromMain`: the frame's length when the main thread sent it (reported once written), else 0.
 */
function sendBytes(link: Link, bytes: Uint8Array, fromMain: number): void {
  let sent = 0;
  if (link.queue.length === 0) {
    try {
      sent = sendNow(link.fd, bytes);
    } catch (error) {
      return closeLink(link, `write failed: ${(error as Error).message}`);
    }
    link.progress = clock();
    if (sent === bytes.length) {
      if (fromMain) flushed.set(link.id, (flushed.get(link.id) ?? 0) + fromMain);
      return;
    }
  }
  link.queue.push({ bytes: bytes.slice(sent), fromMain });
  link.queued += bytes.length - sent;
  if (link.queued >= LINK_BUFFER_HIGH_BYTES) link.congested = true;
}

function writeLink(link: Link): void {
  try {
    while (link.queue.length > 0) {
      const head = link.queue[0]!;
      const n = sendNow(link.fd, head.bytes);
      if (n === 0) return;
      link.progress = clock();
      link.queued -= n;
      if (n < head.bytes.length) {
        head.bytes = head.bytes.subarray(n);
        return;
      }
      link.queue.shift();
      if (head.fromMain) flushed.set(link.id, (flushed.get(link.id) ?? 0) + head.fromMain);
    }
  } catch (error) {
    closeLink(link, `write failed: ${(error as Error).message}`);
  } finally {
    if (link.congested && link.queued < LINK_BUFFER_LOW_BYTES) link.congested = false;
  }
}

function readLink(link: Link): void {
  let taken = 0;
  while (taken < READ_TURN_BYTES && links.has(link.id)) {
    let n;
    const room = link.buffer.length - link.filled;
    try {
      n = recvNow(link.fd, link.buffer.subarray(link.filled));
    } catch (error) {
      return closeLink(link, `read failed: ${(error as Error).message}`);
    }
    if (n < 0) return;
    if (n === 0) return closeLink(link, "closed by the peer");
    active = true;
    link.filled += n;
    taken += n;
    takeFrames(link);
    // A read that left room took all the kernel had: the next poll() says when more comes (one recv() saved).
    if (n < room) return;
  }
}

/** Delivers every whole frame in the connection's buffer. */
function takeFrames(link: Link): void {
  const { buffer } = link;
  const view = new DataView(buffer.buffer);
  let at = 0;
  while (link.filled - at >= 4) {
    const length = view.getUint32(at);
    if (length === 0 || length > MAX_DATA_MESSAGE_BYTES) return closeLink(link, `bad frame length ${length}`);
    if (link.filled - at - 4 < length) break;
    onMessage(link.id, buffer.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  if (at > 0) {
    buffer.copyWithin(0, at, link.filled);
    link.filled -= at;
  }
}

// ---- Receiving ---------------------------------------------------------------------------------------------------

/** A message from a connection (a view into its buffer): opened here when it is for a stream this thread holds. */
function onMessage(link: number, message: Uint8Array): void {
  const started = stageClock();
  const held = tun && ownStream(message);
  if (held) openAndWrite(held, message);
  else {
    let list = forMain.get(link);
    if (!list) forMain.set(link, list = []);
    list.push(message.slice());
  }
  stages.receive += stageClock() - started - answered;
  answered = 0;
}

/**
 * The stream this worker opens that `message` belongs to: its header read in place, not decoded (the opener
 * checks all of it). A few streams per peer: comparing bytes beats building a key for every message.
 */
function ownStream(message: Uint8Array): Held | undefined {
  for (const held of openers.values()) if (namesStream(message, selfId, held.opener.secrets.id)) return held;
  return undefined;
}

/**
 * Opens a message of a stream this worker holds, checks its packets and writes them to the device, in the order
 * they were sealed: one that comes before those sealed ahead of it waits for them (see reorder.ts).
 */
function openAndWrite(held: Held, message: Uint8Array): void {
  const started = stageClock();
  let entries;
  try {
    entries = unpackEntries(plainBuffer.subarray(0, held.opener.openInto(message, plainBuffer)));
  } catch {
    return drop("refused");
  }
  const counter = counterOf(message);
  const from = facts.get(held.peer);
  const packets: Uint8Array[] = [];
  let bytes = 0;
  for (const e of entries) {
    const refused = from && selfFacts ? admitPacket(from, selfFacts, e.packet) : "spoofed-source";
    if (refused) {
      drop(refused);
      continue;
    }
    bytes += e.packet.length;
    if (tun!.offload) {
      packets.push(
        new Uint8Array(e.offload.buffer, e.offload.byteOffset, OFFLOAD_HEADER_BYTES + e.packet.length),
      );
    } else {
      const plain = plainPackets(e.offload, e.packet);
      if (plain) packets.push(...plain);
      else drop("malformed");
    }
  }
  stages.open += stageClock() - started;
  // The common case: in order, nothing waiting behind it.
  if (held.reorder.passes(counter)) return writeOpened(held.peer, [{ packets, bytes }]);
  // The packets are views of a reused buffer: one that waits is copied.
  const opened = { packets: held.reorder.waits(counter) ? packets.map((p) => p.slice()) : packets, bytes };
  settle(held, held.reorder.take(counter, opened, clock()));
}

/** Writes what a stream let go of, in order, and notes whether it still holds messages back. */
function settle(held: Held, ready: Opened[]): void {
  if (held.reorder.held > 0) waiting.add(held);
  else waiting.delete(held);
  if (ready.length > 0 && tun) writeOpened(held.peer, ready);
}

/** Writes opened messages' packets to the device, and counts them. */
function writeOpened(peer: string, ready: Opened[]): void {
  const writing = stageClock();
  let written = 0;
  let bytes = 0;
  for (const opened of ready) {
    for (const p of opened.packets) {
      if (Number(c.write(tun!.fd, p, BigInt(p.length))) === p.length) written++;
      else writeErrors++;
    }
    bytes += opened.bytes;
  }
  writtenPackets += written;
  stages.tunWrite += stageClock() - writing;
  const t = trafficOf(peer);
  t.rxPackets += written;
  t.rxBytes += bytes;
  // The host often answers within the write (an echo reply, an acknowledgement): read it now, not after
  // another turn of the loop and a poll().
  if (written > 0 && mayReadTun()) {
    const reading = stageClock();
    readTun();
    answered += stageClock() - reading;
  }
}

/** Lets go, in order, of what waited too long for a message before it. */
function release(now: number): void {
  for (const held of [...waiting]) settle(held, held.reorder.expire(now));
}

/** Time spent reading the device from within a receive (counted as reading and sending, not receiving). */
let answered = 0;

/** Whether the device may be read: nothing congested, and the main thread keeping up with what it was given. */
function mayReadTun(): boolean {
  if (!tun || slowOutstanding >= SLOW_WINDOW) return false;
  for (const link of links.values()) if (link.congested) return false;
  return true;
}

// ---- Sending -----------------------------------------------------------------------------------------------------

/** Takes a route out; says so unless the main thread asked (`quiet`). */
function unroute(route: Route, reason: string, quiet = false): void {
  if (routesByPeer.get(route.peer) !== route) return;
  routesByPeer.delete(route.peer);
  for (const key of route.keys) if (routes.get(key) === route) routes.delete(key);
  if (!quiet) post({ t: "unrouted", peer: route.peer, stream: toHex(route.sealer.secrets.id), reason });
}

function seal(route: Route): void {
  if (route.builder.count === 0) return;
  const started = stageClock();
  const count = route.builder.count;
  const plaintext = route.builder.plaintext();
  let length;
  try {
    length = route.sealer.sealInto(plaintext, frame.subarray(4));
  } catch (error) {
    drop("send-failed", count);
    route.builder.reset();
    return unroute(route, (error as Error).message);
  }
  const bytes = plaintext.length - 2 * count - count * OFFLOAD_HEADER_BYTES;
  route.builder.reset();
  const sending = stageClock();
  stages.seal += sending - started;
  frameView.setUint32(0, length);
  // Behind: what waits here and what the kernel holds unacknowledged (a path's queue is mostly in the network).
  // A small batch with nothing waiting here (a ping, an acknowledgement) does not ask: bulk traffic's batches show
  // a backlog, and the question is a system call before the send on every round trip's way.
  const backlogged = (route.link.queued > 0 || bytes > SMALL_PACKET_BYTES) &&
    route.link.queued + unacknowledged(route.link.fd) >= SPILL_BYTES;
  sendBytes(route.link, frame.subarray(0, 4 + length), 0);
  stages.linkSend += stageClock() - sending;
  const t = trafficOf(route.peer);
  t.txBytes += bytes;
  t.txPackets += count;
  t.batches++;
  if (backlogged) {
    t.backlogged++;
    backlogs++;
  }
}

function readTun(): void {
  const { fd, offload, slot } = tun!;
  const started = stageClock();
  const sealedBefore = stages.seal + stages.linkSend;
  let routing = 0;
  for (let i = 0; i < PACKETS_PER_READ; i++) {
    const n = Number(c.read(fd, slot, BigInt(slot.length)));
    if (n <= 0) break;
    active = true;
    readPackets++;
    const routed = stageClock();
    const sealing = stages.seal + stages.linkSend; // a full batch is sealed on the way: counted there, not here
    const data = slot.subarray(0, n);
    const header = offload ? data.subarray(0, OFFLOAD_HEADER_BYTES) : undefined;
    const packet = offload ? data.subarray(OFFLOAD_HEADER_BYTES) : data;
    const destination = destinationOf(packet);
    const route = destination && routes.get(addressKey(destination));
    if (route && !route.sealer.expired()) {
      if (route.builder.full(packet.length)) seal(route);
      route.builder.push(packet, header);
      // A small packet read first (a ping, a keystroke, an acknowledgement) leaves before the device is read
      // again: it waits for no company, not even for the read that finds the device empty.
      if (i === 0 && n <= SMALL_PACKET_BYTES) seal(route);
      else touched.add(route);
    } else {
      if (route) unroute(route, "its stream expired");
      slow.push(data.slice());
    }
    routing += stageClock() - routed - (stages.seal + stages.linkSend - sealing);
  }
  stages.tunRead += stageClock() - started - routing - (stages.seal + stages.linkSend - sealedBefore);
  stages.batch += routing;
  for (const route of touched) seal(route);
  touched.clear();
}

// ---- Commands ----------------------------------------------------------------------------------------------------

function handle(command: Command): void {
  switch (command.t) {
    case "tun":
      selfId = command.self;
      tun = { fd: command.fd, offload: command.offload, slot: new Uint8Array(command.readBytes) };
      return;
    case "tun-off":
      tun = undefined;
      for (const route of [...routesByPeer.values()]) unroute(route, "the TUN closed");
      openers.clear();
      waiting.clear();
      return post({ t: "tun-off" });
    case "adopt": {
      const link: Link = {
        id: command.link,
        fd: command.fd,
        buffer: new Uint8Array(2 * (4 + MAX_DATA_MESSAGE_BYTES)),
        filled: 0,
        queue: [],
        queued: 0,
        congested: false,
        progress: clock(),
      };
      try {
        setNoDelay(link.fd);
      } catch { /* not fatal: only slower */ }
      links.set(link.id, link);
      link.buffer.set(command.first);
      link.filled = command.first.length;
      return takeFrames(link);
    }
    case "send": {
      const link = links.get(command.link);
      if (!link) return;
      for (const m of command.messages) sendFrame(link, m);
      return;
    }
    case "close": {
      const link = links.get(command.link);
      if (link) closeLink(link, command.reason);
      return;
    }
    case "route": {
      const link = links.get(command.link);
      const old = routesByPeer.get(command.peer);
      if (old) unroute(old, "replaced", true);
      if (!link) {
        const stream = toHex(command.sealer.id);
        return post({ t: "unrouted", peer: command.peer, stream, reason: "its connection closed" });
      }
      const route: Route = {
        peer: command.peer,
        link,
        sealer: StreamSealer.fromHandover(command.sealer, Date.now, aesFor(command.sealer.raw)),
        builder: new BatchBuilder(),
        keys: command.addresses.map(addressKey),
      };
      routesByPeer.set(route.peer, route);
      for (const key of route.keys) routes.set(key, route);
      return;
    }
    case "unroute": {
      const route = routesByPeer.get(command.peer);
      if (route) unroute(route, "asked", true);
      return;
    }
    case "opener": {
      const s = command.state;
      const opener = StreamOpener.fromHandover(s, { self: selfId, clock: Date.now, aes: aesFor(s.raw) });
      const reorder = new Reorder<Opened>(REORDER_HOLD_MS, REORDER_MAX_HELD);
      openers.set(toHex(s.id), { opener, peer: toHex(s.peer), reorder });
      return;
    }
    case "drop-opener": {
      const held = openers.get(command.id);
      openers.delete(command.id);
      if (held) settle(held, held.reorder.flush()); // what it held back goes now, in order
      return;
    }
    case "facts":
      selfFacts = command.self;
      for (const [peer, f] of command.peers) {
        if (f) facts.set(peer, f);
        else facts.delete(peer);
      }
      return;
    case "open": {
      const held = tun && ownStream(command.message);
      if (held) openAndWrite(held, command.message);
      else drop("unknown-stream");
      answered = 0;
      return;
    }
    case "stop":
      stopping = true;
      return;
    case "init":
      return;
  }
}

/** Waits until `expected` commands in all have come through the event loop into the inbox. */
async function arrivedUpTo(expected: number): Promise<void> {
  while (received < expected) await new Promise<void>((resolve) => arrived = resolve);
  arrived = undefined;
}

/** Reads the wake counter (commands posted since the last read) and handles that many, waiting for them. */
async function takeCommands(expected: number): Promise<void> {
  await arrivedUpTo(expected);
  for (const command of inbox.splice(0)) {
    try {
      handle(command);
    } catch (error) {
      post({ t: "log", message: `command ${command.t}: ${(error as Error).stack ?? error}` });
    }
  }
}

// ---- Warm-up ------------------------------------------------------------------------------------------------------

/** Rounds of made-up traffic at start (see warmUp): one small packet each, then a batch of full-size ones. */
const WARM_UP_SMALL = 1_000;
const WARM_UP_BULK = 300;

/**
 * Carries made-up traffic through this thread's own loop (turn, endTurn) before the first real packet: a socket
 * pair stands in for the device, another for a connection, and a throwaway stream seals what is read and opens it
 * again (this node sending to itself). Until V8 has compiled that code, each packet costs several times more: a
 * fresh tunnel's pings took twice as long as after bulk traffic, the first one 4-5 ms. Every path the first real
 * traffic takes runs here too (a packet for the main thread and its acknowledgement, a command's wake-up, an idle
 * turn after a report): compiled code that meets a path it has never seen is thrown away, and light traffic is
 * slow to compile it again. Wake and acknowledgement counters of its own stand in for the real ones, and what it
 * would post is dropped (see post). It costs ~140 ms of this thread's CPU, while the node logs in (src/conflux.ts
 * starts the worker first), but seconds on a busy host: it ends early once real traffic waits (realWorkWaits).
 * Everything made here is taken down and every counter zeroed before the first command.
 */
async function warmUp(): Promise<void> {
  const [device, host] = packetPair();
  const [out, back] = packetPair("stream");
  const [self, peer] = [new Uint8Array(16).fill(1), new Uint8Array(16).fill(2)];
  const peerHex = toHex(peer);
  const [from, to] = [Uint8Array.of(10, 255, 255, 1), Uint8Array.of(10, 255, 255, 2)];
  const [from6, to6] = [new Uint8Array(16).fill(1), new Uint8Array(16).fill(2)];
  const factsOf = (ipv4: Uint8Array, ipv6: Uint8Array): AddressFacts => ({
    ipv4,
    ipv6,
    portal: 0,
    subnets: [],
  });
  const createdAt = Date.now();
  const readBytes = OFFLOAD_HEADER_BYTES + 65_535;
  // Cloned as postMessage clones: the objects take the shapes the real commands' will have.
  const command = (cmd: Command) => handle(structuredClone(cmd));
  // Swapped only here, with nothing that can throw before the `finally` that swaps them back: a warm-up that
  // failed earlier must leave the loop its real counters, and its posts.
  const [realWake, realAck] = [wakeFd, ackFd];
  [wakeFd, ackFd, warming] = [eventfd(), eventfd(), true];
  let round = 0;
  try {
    command({ t: "tun", self, fd: device, offload: true, readBytes });
    command({ t: "adopt", link: -1, fd: out, first: new Uint8Array(0) });
    command({ t: "adopt", link: -2, fd: back, first: new Uint8Array(0) });
    command({ t: "facts", self: factsOf(to, to6), peers: [[peerHex, factsOf(from, from6)]] });
    // A throwaway stream, renewed at once (rounds 0 and 1), before V8 compiles anything: it takes a field only one
    // object, or objects of one shape, ever had for a constant, and a second stream later (the real one) would
    // throw the compiled code away (--trace-deopt: "dependent field type changed").
    let stream: { id: Uint8Array; raw: Uint8Array } | undefined;
    const renew = () => {
      if (stream) command({ t: "drop-opener", id: toHex(stream.id) });
      stream = {
        id: crypto.getRandomValues(new Uint8Array(8)),
        raw: crypto.getRandomValues(new Uint8Array(32)),
      };
      const sealer = { ...stream, peer: self, createdAt, first: 0 };
      command({ t: "route", peer: peerHex, addresses: [to, to6], link: -1, sealer });
      command({ t: "opener", state: { ...stream, peer, createdAt, window: new ReplayWindow().snapshot() } });
    };
    // A message of no stream this thread holds (the main thread's): as the connection's control messages are.
    const stray = crypto.getRandomValues(new Uint8Array(100));
    const packet = (size: number, protocol = 6) => {
      const p = new Uint8Array(OFFLOAD_HEADER_BYTES + size);
      const ip = p.subarray(OFFLOAD_HEADER_BYTES);
      ip[0] = 0x45;
      new DataView(ip.buffer, ip.byteOffset).setUint16(2, size);
      ip[9] = protocol;
      ip.set(from, 12);
      ip.set(to, 16);
      return p;
    };
    const packet6 = (size: number) => {
      const p = new Uint8Array(OFFLOAD_HEADER_BYTES + size);
      const ip = p.subarray(OFFLOAD_HEADER_BYTES);
      ip[0] = 0x60;
      new DataView(ip.buffer, ip.byteOffset).setUint16(4, size - 40);
      ip[6] = 58;
      ip.set(from6, 8);
      ip.set(to6, 24);
      return p;
    };
    const [small, small6, full, superPacket] = [packet(84, 1), packet6(104), packet(1_400), packet(16_000)];
    superPacket.set([1, 1, 52, 0, 168, 5], 0); // NEEDS_CSUM, TCPv4, a 52-byte header, 1448-byte segments
    // A packet for an address no route has: the main thread's to carry.
    const stranger = packet(84, 1);
    stranger[OFFLOAD_HEADER_BYTES + 19] = 9;
    const drain = new Uint8Array(readBytes);
    for (round = 0; round < WARM_UP_SMALL + 2 * WARM_UP_BULK; round++) {
      if (round % 50 === 49 && await realWorkWaits(realWake)) break;
      const bulk = round - WARM_UP_SMALL;
      if (round % 100 === 0) {
        // A report falls due, then a turn with nothing to do: as an idle loop's.
        lastReport -= STATS_IDLE_MS;
        for (let idle = 0; idle < 2; idle++) {
          turn(0);
          endTurn();
        }
      }
      if (round < 2) renew();
      if (round % 100 === 50) command({ t: "send", link: -1, messages: [stray] });
      if (round % 50 === 25) {
        c.write(host, stranger, BigInt(stranger.length));
        addTo(ackFd); // the main thread took it
        addTo(wakeFd); // a command came
      }
      const [p, batch] = bulk < 0
        ? [round % 2 ? small6 : small, 1]
        : bulk < WARM_UP_BULK
        ? [full, PACKETS_PER_READ / 4]
        : [superPacket, 2];
      for (let i = 0; i < batch; i++) c.write(host, p, BigInt(p.length));
      // As the loop does, until nothing is ready. The first turn of a round may wait (though something is ready):
      // the real loop's timeouts are fractions of a millisecond, and code compiled for whole ones only is thrown
      // away at the first real turn ("lost precision").
      for (let turns = 0; turns < 8 && turn(turns === 0 ? 0.5 : 0) > 0; turns++) {
        if (woken) {
          woken = false;
          takeFrom(wakeFd);
        }
        endTurn();
      }
      while (Number(c.read(host, drain, BigInt(drain.length))) > 0) { /* what was written to the device */ }
      // The busy wait, with nothing to find: its yield, which the turns above never reach, is then compiled too.
      if (round % 50 === 10) spin(BigInt(order.length), clock(), clock() + 0.02);
    }
  } finally {
    command({ t: "unroute", peer: peerHex });
    openers.clear();
    waiting.clear();
    for (const id of [-1, -2]) links.delete(id);
    for (const fd of [device, host, out, back]) closeFd(fd);
    for (const fd of [wakeFd, ackFd]) closeFd(fd);
    wakeFd = realWake;
    ackFd = realAck;
    warming = woken = trimmed = false;
    slowOutstanding = 0;
    tun = undefined;
    selfId = new Uint8Array(0);
    facts.delete(peerHex);
    selfFacts = undefined;
    slow.length = 0; // the same array: a new one would have another shape than the one the code was compiled for
    forMain.clear();
    flushed.clear();
    touched.clear();
    traffic = new Map();
    drops = new Map();
    for (const stage of Object.keys(stages) as (keyof typeof stages)[]) stages[stage] = 0;
    backlogs =
      readPackets =
      writtenPackets =
      writeErrors =
      reportedPackets =
      answered =
        0;
    active = false;
    lastReport = lastActivity = clock(); // what it made is given back once quiet (see TRIM_QUIET_MS)
    warmUpRounds = round;
  }
}

/** How long the event loop may run after the warm-up (see installCompiled), in turns of 10 ms. */
const INSTALL_MS = 50;

/**
 * Lets V8 install what it compiled during the warm-up: its optimizing compiler works on background threads, and
 * this thread takes the finished code in only from its event loop, which the data-plane loop enters only when a
 * command comes. Without this, the warm-up's last compilations (--trace-opt: readLink, the batch builder's
 * plaintext and reset) were installed seconds later, during bulk traffic, and a fresh tunnel's pings ran on the
 * code before. Up to INSTALL_MS of event-loop turns, ending early once real work waits (see realWorkWaits).
 */
async function installCompiled(): Promise<void> {
  for (let waited = 0; waited < INSTALL_MS; waited += 10) {
    if (await realWorkWaits(wakeFd)) return;
    await new Promise((done) => setTimeout(done, 10));
  }
}

/** Rounds the warm-up ran, for the first report (fewer than all when real traffic came first). */
let warmUpRounds = 0;

/** Commands the warm-up counted on the real wake counter and let in (realWorkWaits), for the loop's first turn. */
let announced = 0;

/**
 * Whether real work waits while the warm-up runs: commands posted meanwhile are let in (not handled) and looked
 * at, and the device among them, if any, is asked whether a packet waits. Without it, the first packets on a busy
 * host waited seconds for the warm-up's end (4.3-4.7 s seen for a warm-up with twelve nodes starting at once).
 */
async function realWorkWaits(realWake: number): Promise<boolean> {
  if (readable(realWake)) {
    announced += takeFrom(realWake);
    await arrivedUpTo(announced);
  }
  return inbox.some((command) =>
    command.t === "send" || command.t === "open" || command.t === "stop" ||
    (command.t === "tun" && readable(command.fd))
  );
}

const probe = new Uint8Array(8);
const probeView = new DataView(probe.buffer);

/** Whether `fd` has something to read now (a poll() that does not wait). */
function readable(fd: number): boolean {
  probeView.setInt32(0, fd, true);
  probeView.setInt32(4, LINUX.POLLIN, true); // events, and revents zeroed
  return c.pollSync(probe, 1n, 0) > 0 && (probeView.getInt16(6, true) & LINUX.POLLIN) !== 0;
}

// ---- The loop ----------------------------------------------------------------------------------------------------

function flushPosts(): void {
  if (slow.length > 0) {
    post({ t: "packets", packets: slow }, slow.map((p) => p.buffer as ArrayBuffer));
    slow = [];
    slowOutstanding++;
  }
  for (const [link, messages] of forMain) {
    post(
      { t: "messages", link, messages },
      messages.map((m) => m.buffer as ArrayBuffer),
    );
  }
  forMain.clear();
  for (const [link, bytes] of flushed) post({ t: "flushed", link, bytes });
  flushed.clear();
}

function report(): void {
  for (const [id, held] of openers) {
    if (!held.opener.expired()) continue;
    openers.delete(id);
    settle(held, held.reorder.flush());
  }
  const now = clock();
  post({
    t: "stats",
    stats: {
      traffic: [...traffic],
      drops: [...drops],
      periodMs: now - lastReport,
      stages: Object.fromEntries(
        Object.entries(stages).map(([stage, ms]) => [stage, ms * STAGE_SAMPLE]),
      ) as typeof stages,
      readPackets,
      writtenPackets,
      writeErrors,
      warmUpRounds,
    },
  });
  warmUpRounds = 0;
  traffic = new Map();
  drops = new Map();
  backlogs = 0;
  lastReport = now;
  reportedPackets = readPackets + writtenPackets + writeErrors;
}

/** Fills poll()'s array for `order`: each entry's descriptor, to read, and to write a connection's queue. */
function describePoll(view: DataView, order: (Link | "tun" | "wake" | "ack")[]): void {
  order.forEach((entry, i) => {
    const fd = entry === "wake" ? wakeFd : entry === "ack" ? ackFd : entry === "tun" ? tun!.fd : entry.fd;
    const events = typeof entry === "object"
      ? LINUX.POLLIN | (entry.queue.length > 0 ? LINUX.POLLOUT : 0)
      : LINUX.POLLIN;
    view.setInt32(8 * i, fd, true);
    view.setInt16(8 * i + 4, events, true);
    view.setInt16(8 * i + 6, 0, true);
  });
}

/** Handles what poll() found ready (the wake counter: sets `woken`). */
function handleReady(view: DataView, order: (Link | "tun" | "wake" | "ack")[]): void {
  for (let i = 0; i < order.length; i++) {
    const revents = view.getInt16(8 * i + 6, true);
    if (revents === 0) continue;
    const entry = order[i]!;
    if (entry === "wake") woken = true;
    else if (entry === "ack") slowOutstanding = Math.max(0, slowOutstanding - takeFrom(ackFd));
    else if (entry === "tun") {
      if (tun) readTun();
    } else if (links.has(entry.id)) {
      if (revents & LINUX.POLLOUT) writeLink(entry);
      if (revents & (LINUX.POLLIN | LINUX.POLLHUP | LINUX.POLLERR)) readLink(entry);
      if (revents & LINUX.POLLNVAL) closeLink(entry, "its descriptor is gone");
    }
  }
}

/**
 * For SPIN_MS after traffic, the loop waits for more without sleeping: it polls, and between polls gives the CPU
 * to any other thread that wants it (sched_yield). An answer that comes soon (a ping's reply, a TCP
 * acknowledgement) then finds this thread awake, where waking a sleeping one took 50-80 us here, about a tenth of
 * a round trip through the tunnel: pings took 0.85-0.97 of the time without (in-realm A/B, three realms). It
 * costs CPU only under traffic, at most SPIN_SHARE of this thread's time (a budget that refills with the clock):
 * pinging 20 times a second, each node used 2.2-2.9% of a core against 1.5-1.6% without.
 */
const SPIN_MS = 1;
const SPIN_SHARE = 0.02;
const SPIN_BUDGET_MAX_MS = 20;
let spinBudget = 0;
let spinBudgetAt = 0;

/**
 * Polls poll()'s array (`n` entries) without sleeping until something is ready or `until` (ms), within the
 * budget; returns poll()'s count.
 */
function spin(n: bigint, now: number, until: number): number {
  spinBudget = Math.min(SPIN_BUDGET_MAX_MS, spinBudget + (now - spinBudgetAt) * SPIN_SHARE);
  spinBudgetAt = now;
  const end = Math.min(until, now + spinBudget);
  let ready = 0;
  while ((ready = c.pollSync(pollfds, n, 0)) === 0 && clock() < end) c.sched_yield();
  spinBudget -= clock() - now;
  return ready;
}

let woken = false;
/** Whether this turn carried traffic, and when a turn last did (ms). */
let active = false;
let lastActivity = 0;
/**
 * After this long without traffic, the C allocator gives what it holds free back to the system, once: the
 * buffers of a burst of traffic, freed when V8 collects them, otherwise stay in the process's RSS.
 */
const TRIM_QUIET_MS = 5_000;
let trimmed = false;

/** What the loop polls, in order, and poll()'s array for it (and a view of that, both made again only to grow). */
const order: (Link | "tun" | "wake" | "ack")[] = [];
let pollfds = new Uint8Array(0);
let pollView = new DataView(pollfds.buffer);
/** Connections a turn found stalled. */
const stalled: Link[] = [];
/** When the last turn's poll() returned (ms). */
let polledAt = 0;

/**
 * One turn of the loop, up to the commands: poll (for at most `longest` ms), handle what is ready, post what was
 * gathered; returns poll()'s count of ready descriptors. The wake counter's being ready is left in `woken`. A
 * function of its own, not the loop's body, so that V8 compiles it as a whole from the warm-up on (a loop entered
 * once is compiled only on stack, and late).
 */
function turn(longest: number): number {
  order.length = 0;
  order.push("wake");
  if (mayReadTun()) order.push("tun");
  if (slowOutstanding > 0) order.push("ack");
  for (const link of links.values()) order.push(link);
  if (pollfds.length < 8 * order.length) {
    pollfds = new Uint8Array(16 * order.length);
    pollView = new DataView(pollfds.buffer);
  }
  describePoll(pollView, order);
  const now = clock();
  const dirty = counted();
  const reportAt = dirty
    ? Math.min(lastReport + STATS_MS, lastActivity + STATS_QUIET_MS)
    : lastReport + STATS_IDLE_MS;
  let timeout = Math.min(longest, Math.max(0, reportAt - now));
  for (const link of links.values()) {
    if (link.queue.length > 0) timeout = Math.min(timeout, Math.max(0, link.progress + STALL_MS - now));
  }
  for (const held of waiting) timeout = Math.min(timeout, Math.max(0, held.reorder.deadline! - now));
  if (!trimmed) timeout = Math.min(timeout, Math.max(0, lastActivity + TRIM_QUIET_MS - now));
  const n = BigInt(order.length);
  let ready = 0;
  if (timeout > 0 && now < lastActivity + SPIN_MS) {
    ready = spin(n, now, Math.min(lastActivity + SPIN_MS, now + timeout));
  }
  if (ready === 0) ready = c.pollSync(pollfds, n, Math.ceil(timeout));
  timed = Math.random() * STAGE_SAMPLE < 1;
  try {
    handleReady(pollView, order);
  } catch (error) {
    // A defect here must not stop the data plane: it is said, and the loop goes on.
    post({ t: "log", message: `${(error as Error).stack ?? error}` });
  }
  const after = polledAt = clock();
  if (waiting.size > 0) release(after);
  // Gathered first (closing one takes it out of `links`); in an array kept, not one made every turn.
  for (const link of links.values()) {
    if (link.queue.length > 0 && after - link.progress >= STALL_MS) stalled.push(link);
  }
  if (stalled.length > 0) {
    for (const link of stalled) closeLink(link, `write failed: stalled for ${STALL_MS} ms`);
    stalled.length = 0;
  }
  flushPosts();
  return ready;
}

/** The end of a turn, after the commands: gives memory back once quiet, reports the counters when due. */
function endTurn(): void {
  const done = clock();
  if (active) {
    lastActivity = polledAt;
    trimmed = false;
  } else if (!trimmed && done - lastActivity >= TRIM_QUIET_MS) {
    c.malloc_trim?.(0n);
    trimmed = true;
  }
  active = false;
  const pending = counted();
  const quiet = pending && done - lastActivity >= STATS_QUIET_MS;
  // A connection that is the bottleneck is said soon: the main thread may spread its traffic over more paths.
  const backlogged = backlogs >= BACKLOG_REPORT_BATCHES && done - lastReport >= STATS_QUIET_MS;
  if (quiet || backlogged || done - lastReport >= (pending ? STATS_MS : STATS_IDLE_MS)) report();
}

async function run(): Promise<void> {
  // What the warm-up let in is handled first; the wake counter holds only what was posted since.
  let expected = announced;
  if (inbox.length > 0) await takeCommands(expected);
  while (!stopping) {
    turn(Infinity);
    if (woken) {
      woken = false;
      expected += takeFrom(wakeFd);
      await takeCommands(expected);
      flushPosts();
    }
    endTurn();
  }
  for (const link of [...links.values()]) closeLink(link, "shutting down");
  flushPosts();
  report();
  post({ t: "stopped" });
}

scope.onmessage = (e: MessageEvent<Command>) => {
  const command = e.data;
  if (command.t !== "init") return post({ t: "error", message: "the first command must be init" });
  wakeFd = command.wake;
  ackFd = command.ack;
  scope.onmessage = (next: MessageEvent<Command>) => {
    inbox.push(next.data);
    received++;
    arrived?.();
  };
  const loaded = hasHostAes() ? Promise.resolve() : import("../crypto/node_aes.ts").then((m) => {
    nodeAes = m.nodeAesGcm;
  });
  loaded.then(async () => {
    // Said before the warm-up: this thread's first postMessage changes prototypes that compiled code depends on,
    // which would throw the warm-up's work away.
    post({ t: "ready" });
    try {
      await warmUp();
      await installCompiled();
    } catch (error) {
      post({ t: "log", message: `warm-up: ${(error as Error).stack ?? error}` }); // only slower
    }
    // No forced collection here to shed the warm-up's garbage: one made a fresh tunnel's pings take 0.62-0.66 ms
    // against 0.38-0.41 (most likely V8 drops code compiled against shapes only the warm-up's objects had).
    return run();
  }).catch((error) => post({ t: "error", message: String(error?.stack ?? error) }));
};
