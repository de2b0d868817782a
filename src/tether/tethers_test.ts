import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { within } from "../../tests/tun_conformance.ts";
import { TetherSignalType } from "../wire/control.ts";
import { type Signal, TETHER_FORM_TRIES, Tethers } from "./tethers.ts";
import { filterCandidates, shutdownWebRtc, WebRtcLink } from "./webrtc.ts";
import { DIRECT_TCP_RENEWALS, DIRECT_TCP_RETRY_MS } from "../tuning.ts";

// libdatachannel calls back from its own threads, even just after a close. This file's isolate must not go away
// while it still can: the last test releases the library (joining its threads) before the file ends. And this
// file runs on its own (see the `test` task): loaded in a --parallel worker beside other test files, the native
// module's callbacks crashed Deno 2.9.6 ("attempt to access Handle hosted by disposed Isolate").

/**
 * Two nodes' tethers wired to each other's signals (asynchronously, as over the control channel). `drop`
 * loses a signal on the way, `alter` changes it.
 */
function pair(
  options: {
    idleMs?: number;
    drop?: (s: Signal) => boolean;
    alter?: (s: Signal) => Signal;
    clock?: () => number;
  } = {},
) {
  const received: Record<string, Uint8Array[]> = { aa: [], bb: [] };
  const nodes: Record<string, Tethers> = {};
  for (const [self, other] of [["aa", "bb"], ["bb", "aa"]] as const) {
    nodes[self] = new Tethers({
      self,
      signal: (peer, s) => {
        const sent = options.alter?.(s) ?? s;
        if (!options.drop?.(s)) setTimeout(() => void nodes[peer]!.onSignal(self, sent), 1);
        return Promise.resolve();
      },
      iceServers: () => [],
      onMessage: (_peer, data) => received[self]!.push(data.slice()),
      idleMs: options.idleMs,
      clock: options.clock,
    });
    void other;
  }
  return {
    a: nodes.aa!,
    b: nodes.bb!,
    received,
    /** Waits (at most `ms`) until bb and aa have received at least `bb` and `aa` messages. */
    delivered: (ms: number, bb: number, aa: number) =>
      within(
        ms,
        "delivery",
        (async () => {
          while (received.bb!.length < bb || received.aa!.length < aa) {
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
      ),
    async [Symbol.asyncDispose]() {
      nodes.aa!.close();
      nodes.bb!.close();
      await new Promise((r) => setTimeout(r, 200)); // let the close callbacks arrive
    },
  };
}

const test = (name: string, fn: () => Promise<void>) =>
  // libdatachannel keeps worker threads and timers of its own: the sanitizers cannot account for them.
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

test("tethers: the first packet forms a tether that carries every message both ways", async () => {
  await using p = pair();
  assert(await within(10_000, "open", p.a.ensure("bb")));
  assert(await within(10_000, "open on the answering side", p.b.ensure("aa")));
  for (let i = 0; i < 500; i++) assert(p.a.send("bb", Uint8Array.of(i & 0xff, 1, 2)));
  for (let i = 0; i < 500; i++) assert(p.b.send("aa", new Uint8Array(1400).fill(i & 0xff)));
  await p.delivered(10_000, 500, 500);
  // Compare what arrived, not in which order: moving to the direct TCP connection midway may reorder a few.
  const firsts = p.received.bb!.map((m) => m[0]!).sort((x, y) => x - y);
  assertEquals(firsts, Array.from({ length: 500 }, (_, i) => i & 0xff).sort((x, y) => x - y));
  assertEquals(p.a.count, 1);
  assertEquals(p.a.info("bb")!.txBytes, 1500);
});

/** Waits (at most `ms`, `what` names it) until both sides' data goes over `link`. */
async function bothOn(
  p: ReturnType<typeof pair>,
  link: "tcp" | "webrtc",
  ms: number,
  what: string,
): Promise<void> {
  await within(
    ms,
    what,
    (async () => {
      while (p.a.info("bb")?.link !== link || p.b.info("aa")?.link !== link) {
        await new Promise((r) => setTimeout(r, 10));
      }
    })(),
  );
}

test("tethers: once open, data moves to a direct TCP connection when the peers reach each other over TCP", async () => {
  await using p = pair();
  assert(await within(10_000, "open", p.a.ensure("bb")));
  await bothOn(p, "tcp", 5_000, "the direct connection");
  for (let i = 0; i < 200; i++) assert(p.a.send("bb", new Uint8Array(60_000).fill(i & 0xff)));
  assert(p.b.send("aa", Uint8Array.of(7)));
  await p.delivered(10_000, 200, 1);
  assertEquals(
    p.received.bb!.map((m) => [m.length, m[0]]),
    Array.from({ length: 200 }, (_, i) => [60_000, i & 0xff]),
  );
  assertEquals(p.received.aa, [Uint8Array.of(7)]);
});

/**
 * Resets this process's established TCP connections (both ends), as a middlebox's reset would; returns how many
 * ends there were. In this file, only the tethers' direct connections are TCP.
 */
async function resetOwnTcp(): Promise<number> {
  const ss = (args: string[]) => new Deno.Command("ss", { args, stderr: "inherit" }).output();
  const listed = new TextDecoder().decode((await ss(["-tnpH", "state", "established"])).stdout);
  const ports = listed.split("\n").filter((line) => line.includes(`pid=${Deno.pid},`))
    .map((line) => line.trim().split(/\s+/)[2]!.split(":").pop()!);
  for (const port of ports) {
    const killed = await ss(["-K", "-tn", "state", "established", `( sport = :${port} )`]);
    assert(killed.success, `ss -K failed for port ${port}`);
  }
  return ports.length;
}

test("tethers: a direct connection that is reset is made again (DIRECT_TCP_RENEWALS times), and data goes back to it", async () => {
  await using p = pair();
  assert(await within(10_000, "open", p.a.ensure("bb")));
  await bothOn(p, "tcp", 5_000, "the direct connection");
  assertEquals(await resetOwnTcp(), 2);
  // Both sides see it gone, and carry on over the data channel meanwhile.
  await bothOn(p, "webrtc", 2_000, "the reset to be seen");
  assert(p.a.send("bb", Uint8Array.of(1)) && p.b.send("aa", Uint8Array.of(2)));
  await p.delivered(5_000, 1, 1);
  // The answering side offers a new connection (DIRECT_TCP_RETRY_MS later), and data goes over it.
  await bothOn(p, "tcp", 10_000, "the direct connection");
  for (let i = 0; i < 50; i++) assert(p.a.send("bb", new Uint8Array(60_000).fill(i & 0xff)));
  assert(p.b.send("aa", Uint8Array.of(3)));
  await p.delivered(10_000, 51, 2);
  assertEquals(
    p.received.bb!.slice(1).map((m) => [m.length, m[0]]),
    Array.from({ length: 50 }, (_, i) => [60_000, i]),
  );
  assertEquals(p.received.aa!.map((m) => m[0]), [2, 3]);
  // Made again DIRECT_TCP_RENEWALS times in all; after that the data channel keeps the data (a path that takes a
  // connection but cannot carry it must not make the tether switch back and forth while it lives).
  for (let renewal = 2; renewal <= DIRECT_TCP_RENEWALS; renewal++) {
    assertEquals(await resetOwnTcp(), 2);
    await bothOn(p, "webrtc", 2_000, "the reset to be seen");
    await bothOn(p, "tcp", 10_000, "the direct connection");
  }
  assertEquals(await resetOwnTcp(), 2);
  await bothOn(p, "webrtc", 2_000, "the reset to be seen");
  await new Promise((r) => setTimeout(r, DIRECT_TCP_RETRY_MS + 3_000));
  assertEquals([p.a.info("bb")?.link, p.b.info("aa")?.link], ["webrtc", "webrtc"]);
  assert(p.a.send("bb", Uint8Array.of(4)));
  await p.delivered(5_000, 52, 2);
});

test("tethers: both sides forming at once end with one working tether", async () => {
  await using p = pair();
  const [x, y] = await within(10_000, "open", Promise.all([p.a.ensure("bb"), p.b.ensure("aa")]));
  assert(x && y);
  assert(p.a.send("bb", Uint8Array.of(1)) && p.b.send("aa", Uint8Array.of(2)));
  await p.delivered(5_000, 1, 1);
});

/**
 * Spoils the first `count` answers, and collects the offers' sessions. A wrong DTLS fingerprint fails the
 * handshake on both sides, as when libdatachannel 0.24.5 loses its race on a busy machine (see
 * Tethers#linkClosed); no fingerprint at all fails it at once, on the offering side.
 */
function spoilAnswers(count: number, how: "wrong fingerprint" | "no fingerprint" = "wrong fingerprint") {
  let spoiled = 0;
  const offers = new Set<string>();
  return {
    offers,
    alter: (s: Signal): Signal => {
      if (s.signal === TetherSignalType.Offer) offers.add(s.session.join());
      if (s.signal !== TetherSignalType.Answer || spoiled++ >= count) return s;
      const payload = how === "no fingerprint"
        ? s.payload.replace(/a=fingerprint:[^\r]*\r\n/, "")
        : s.payload.replace(/(a=fingerprint:sha-256 )(..)/, (_, k, b) => k + (b === "00" ? "01" : "00"));
      return { ...s, payload };
    },
  };
}

test("tethers: a handshake that fails while forming is tried again, and the tether opens", async () => {
  await using p = pair({ alter: spoilAnswers(1).alter });
  assert(await within(10_000, "open", p.a.ensure("bb")));
  assert(p.a.send("bb", Uint8Array.of(1)));
  await p.delivered(5_000, 1, 0);
});

test("tethers: a handshake that fails while both sides form at once is tried again, by both", async () => {
  await using p = pair({ alter: spoilAnswers(1).alter });
  const [x, y] = await within(10_000, "open", Promise.all([p.a.ensure("bb"), p.b.ensure("aa")]));
  assert(x && y);
  assert(p.a.send("bb", Uint8Array.of(1)) && p.b.send("aa", Uint8Array.of(2)));
  await p.delivered(5_000, 1, 1);
});

test("tethers: a handshake that keeps failing is given up after TETHER_FORM_TRIES tries", async () => {
  const spoiler = spoilAnswers(Infinity, "no fingerprint");
  await using p = pair({ alter: spoiler.alter });
  assertEquals(await within(10_000, "given up", p.a.ensure("bb")), false);
  assertEquals(spoiler.offers.size, TETHER_FORM_TRIES);
});

test("tethers: a lost offer is sent again", async () => {
  const offers: string[] = [];
  await using p = pair({
    drop: (s) => s.signal === TetherSignalType.Offer && offers.push(s.session.join()) === 1,
  });
  assert(await within(10_000, "open", p.a.ensure("bb")));
  // The first offer was lost and the same one went again (a handshake tried again would add a new session).
  assertEquals(offers[1], offers[0]);
});

test("tethers: an idle tether dissolves on both sides, and forms again on demand", async () => {
  let looks = 0; // the once-a-second look at the tethers reads the clock
  await using p = pair({ idleMs: 500, clock: () => (looks++, Date.now()) });
  assert(await within(10_000, "open", p.a.ensure("bb")));
  await within(
    5_000,
    "dissolve",
    (async () => {
      while (p.a.count + p.b.count > 0) await new Promise((r) => setTimeout(r, 50));
    })(),
  );
  // With no tether left, nothing looks (an idle node does not wake for them) after the look that found none.
  await new Promise((r) => setTimeout(r, 1_100));
  const before = looks;
  await new Promise((r) => setTimeout(r, 1_500));
  assertEquals(looks, before, "the clock was read with no tether");
  assertEquals(p.a.send("bb", Uint8Array.of(1)), false);
  assert(await within(10_000, "re-open", p.a.ensure("bb")));
  assert(p.a.send("bb", Uint8Array.of(1)));
});

test("webrtc: a malformed offer is refused, and the peer connection made for it is closed", async () => {
  const closed: string[] = [];
  const events = {
    onOpen() {},
    onMessage() {},
    onAlive() {},
    onClose: (reason: string) => closed.push(reason),
  };
  const config = { iceServers: [], channels: 1, mtu: 1500 };
  // A hostile peer's signed garbage: kept open, each such offer would hold a peer connection (and libdatachannel's
  // threads) for as long as the node runs.
  await assertRejects(
    () => WebRtcLink.answer("bad", "v=0\r\n", config, events),
    Error,
    "no ICE user fragment",
  );
  assertEquals(closed, ["bad offer"]);
});

Deno.test("filterCandidates: overlay addresses are never offered; gateway candidates beat host ones", () => {
  const sdp = [
    "v=0",
    "a=candidate:1 1 UDP 2122317823 10.201.0.2 40000 typ host",
    "a=candidate:2 1 UDP 2122317823 10.128.0.1 40001 typ host",
    "a=candidate:3 1 UDP 1686052607 203.0.113.9 40002 typ srflx raddr 10.201.0.2 rport 40000",
    "a=end-of-candidates",
  ].join("\r\n");
  const overlay = (a: string) => a.startsWith("10.128.");
  assertEquals(filterCandidates(sdp, overlay).split("\r\n"), [
    "v=0",
    "a=candidate:3 1 UDP 1686052607 203.0.113.9 40002 typ srflx raddr 10.201.0.2 rport 40000",
    "a=end-of-candidates",
  ]);
  const hostOnly = sdp.split("\r\n").filter((l) => !l.includes("srflx")).join("\r\n");
  assertEquals(filterCandidates(hostOnly, overlay).split("\r\n"), [
    "v=0",
    "a=candidate:1 1 UDP 2122317823 10.201.0.2 40000 typ host",
    "a=end-of-candidates",
  ]);
});

test("tethers: libdatachannel is released once every tether is closed", () => {
  shutdownWebRtc();
  return Promise.resolve();
});
