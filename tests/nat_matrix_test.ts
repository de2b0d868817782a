/**
 * The NAT matrix: pairs of nodes, each node behind its own NAT router in namespaces, the Guardian and its Master
 * (and, with TURN, a real coturn with a shared secret) on the testbed's bridge, the "internet". Three kinds of
 * router: endpoint-independent masquerade, port-randomising ("symmetric") masquerade, and one that drops all UDP.
 * Every pair of kinds, once with the Guardian's own STUN alone (zero configuration) and once with TURN. Each pair
 * pings as soon as a has found b (one lookup); the test prints and checks its path, its first-reply time and its
 * loss, and which underlay carried the tether (peer to peer, or through coturn), from counters on the routers.
 *
 * Each node also reports its NAT's kind to the Guardian, from its own STUN check: the test holds each report to
 * its router's kind and public address.
 *
 * Pairs are isolated by taints (each pair its own), so no node can relay for another pair; the six pairs of a
 * configuration start and ping at once, and the two configurations run one after the other (twelve nodes at a
 * time on a 2-core machine).
 */

import type { PeerStatus } from "../src/agent/status.ts";
import { assert } from "./assert.ts";
import { freePort, GuardianProc, NodeProc, tempDir, waitFor } from "./harness.ts";
import {
  behindNat,
  coturn,
  freeUdpPair,
  type NatHost,
  type NatKind,
  turnserverMissing,
} from "./nat_router.ts";
import { type Netns, netnsUnavailable, run } from "./netns.ts";
import { Testbed } from "./testbed.ts";

/** What carried a pair's traffic: a tether router to router, a tether through coturn, or no tether. */
type Carrier = "p2p" | "turn" | "none";

/** What a pair shows and what carries it: `direct` over a tether, or `backup` over the Master (TCP). */
interface Expected {
  path: "direct" | "backup";
  carrier: Carrier;
}

const DIRECT: Expected = { path: "direct", carrier: "p2p" };
const THROUGH_TURN: Expected = { path: "direct", carrier: "turn" };
const BACKUP: Expected = { path: "backup", carrier: "none" };

/**
 * Every unordered pair of router kinds, and what must hold without and with TURN. Why:
 * - masquerade keeps one public port per socket and lets in answers from wherever its host sent: two such routers
 *   punch through with the Guardian's STUN alone, and with TURN too ICE prefers that pair to a relayed one;
 * - a port-randomising router gives the packets towards the peer a port STUN never saw, and the peer's router lets
 *   in only answers from where its host sent, while its own packets go to the port opened for STUN alone: no
 *   tether without TURN (so "may or may not" is "does not" here), one through coturn with it. A TURN-relayed
 *   tether is a direct tether at our level: `peers` shows "direct", and the routers' counters show coturn;
 * - a router that drops UDP leaves only TCP: no tether with any peer (TURN is UDP only), the backup pipeline
 *   carries everything, and `peers` shows "backup" while it does.
 */
const PAIRS: [n: number, a: NatKind, b: NatKind, withoutTurn: Expected, withTurn: Expected][] = [
  [1, "masquerade", "masquerade", DIRECT, DIRECT],
  [2, "masquerade", "random", BACKUP, THROUGH_TURN],
  [3, "masquerade", "drop-udp", BACKUP, BACKUP],
  [4, "random", "random", BACKUP, THROUGH_TURN],
  [5, "random", "drop-udp", BACKUP, BACKUP],
  [6, "drop-udp", "drop-udp", BACKUP, BACKUP],
];

/** The NAT kind each router shows to a node's STUN check, as the node reports it to the Guardian. */
const REPORTED_NAT: Record<NatKind, string> = {
  "masquerade": "endpoint-independent",
  "random": "endpoint-dependent",
  "drop-udp": "unknown",
};

const KIND_LABEL: Record<NatKind, string> = {
  "masquerade": "EIM",
  "random": "symmetric",
  "drop-udp": "UDP dropped",
};

/**
 * Pings per pair, 100 ms apart: 4 s, long enough to see the first packets on the backup pipeline and the move to
 * the tether (which opens within a second here, or tries for 5 s and fails). Each ping has 2 s to be answered, as
 * with `ping -W 2`: a reply later than that counts as lost.
 */
const PINGS = 40;
const PING_INTERVAL_MS = 100;
const REPLY_DEADLINE_MS = 2_000;
/**
 * The target is a first reply within 300 ms of both nodes being up; the test prints each pair's figure
 * (on an otherwise idle 2-core machine 65-400 ms, the other ten nodes of the configuration starting meanwhile; a
 * pair alone ~55 ms; 130-740 ms since each node's data-plane worker warms up as it starts). It asserts a bound a
 * loaded CI machine meets: before this work the first reply behind NAT took 5.5-10.6 s, waiting for tether
 * attempts, so 2 s still catches a batch that waits for a tether. With the multi-link test running alongside (as
 * CI's two parallel jobs may pair them), the first replies took 0.3-1.1 s, and 0.36-1.0 s in a CI run; up to 2.8 s
 * before the warm-up ended early for real traffic, the answering node started its own stream at the asker's
 * request, and tethers started forming only after the first batch left.
 */
const FIRST_REPLY_BOUND_MS = 2_000;

/** What one pair measured. */
interface Row {
  pair: number;
  kinds: string;
  turn: boolean;
  expected: Expected;
  /** What `peers` showed on each side while pinging, each change in order ("none>backup>direct"). */
  pathAB: string;
  pathBA: string;
  /** From when both nodes listed each other (the ping starts then) to the first reply. */
  firstReplyMs: number;
  /** The round trip of the first ping answered (the first reply less the ping's start-up). */
  firstRttMs: number;
  /** Pings not answered within REPLY_DEADLINE_MS, before and after the first reply. */
  lostBefore: number;
  lostAfter: number;
  /** UDP packets the pair's two routers forwarded towards the other router (peer to peer) and towards coturn. */
  p2p: number;
  viaTurn: number;
  carrier: Carrier;
  /** The ping's output and both nodes' logs, printed when the pair fails. */
  logs: string;
}

/**
 * A node's peer table through its local API (what `peers --json` prints), read from this process over the unix
 * socket with one plain HTTP/1.1 request: cheap enough to poll every few milliseconds, which `peers --json` (a
 * Deno process each time) is not. (fetch with a unix-socket `Deno.createHttpClient` got no answer within 2 s now
 * and then here, while the same node answered curl at once.)
 */
async function peersOf(node: NodeProc): Promise<PeerStatus[]> {
  const conn = await Deno.connect({ transport: "unix", path: `${node.configDir}/conflux.sock` });
  const timer = setTimeout(() => conn.close(), 2_000);
  try {
    await conn.write(
      new TextEncoder().encode("GET /peers HTTP/1.1\r\nHost: conflux\r\nConnection: close\r\n\r\n"),
    );
    const text = await new Response(conn.readable).text();
    const body = text.slice(text.indexOf("\r\n\r\n") + 4);
    if (!text.startsWith("HTTP/1.1 200")) throw new Error(`local API of ${node.tag}: ${text.slice(0, 200)}`);
    return JSON.parse(body);
  } finally {
    clearTimeout(timer);
  }
}

/** Counts what a router forwards from its LAN: UDP to coturn (on the hub, not its STUN ports) and UDP elsewhere. */
async function countUdp(router: Netns, hub: string): Promise<void> {
  await run("ip", ["netns", "exec", router.name, "nft", "-f", "-"], {
    stdin: [
      "table ip vc_matrix {",
      "  chain counted {",
      // After the router's own filter (priority 0): counts only what actually left.
      "    type filter hook forward priority 10; policy accept;",
      `    iifname "lan0" ip daddr ${hub} udp dport != { 3478, 3479 } counter comment "turn"`,
      `    iifname "lan0" ip daddr != ${hub} meta l4proto udp counter comment "p2p"`,
      "  }",
      "}",
    ].join("\n"),
  });
}

async function readUdp(router: Netns): Promise<{ p2p: number; viaTurn: number }> {
  const text = (await router.exec("nft", ["list", "table", "ip", "vc_matrix"])).text;
  const count = (what: string) => Number(text.match(new RegExp(`packets (\\d+) .*comment "${what}"`))?.[1]);
  return { p2p: count("p2p"), viaTurn: count("turn") };
}

/** Ends every process left in `ns` (SIGTERM, then SIGKILL), so the namespace can be deleted; says what it found. */
async function emptyNamespace(ns: Netns): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const pids = await ns.pids();
    if (pids.length === 0) return;
    if (round === 0) console.log(`nat matrix: ${pids.length} process(es) left in ${ns.name}: ${pids}`);
    for (const pid of pids) {
      try {
        Deno.kill(pid, round < 10 ? "SIGTERM" : "SIGKILL");
      } catch { /* gone meanwhile */ }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`processes in ${ns.name} would not end`);
}

/**
 * Pings `to` from `from`'s LAN host `PINGS` times, starting now; samples both sides' paths meanwhile. The first
 * reply time is counted from `since` (when a had found b) to the reply's arrival.
 */
async function measure(
  from: { node: NodeProc; host: NatHost },
  to: { node: NodeProc; tag: string; address: string },
  since: number,
) {
  const tagOf = from.node.tag;
  const paths: { ab: string[]; ba: string[] } = { ab: [], ba: [] };
  let done = false;
  const ping = from.host.ns.exec("ping", [
    "-n",
    "-D",
    "-i",
    String(PING_INTERVAL_MS / 1000),
    "-c",
    String(PINGS),
    "-W",
    String(REPLY_DEADLINE_MS / 1000),
    to.address,
  ], { allowFailure: true }).finally(() => done = true);
  // A sample that fails shows as "error" in the path, and fails the pair.
  const probe = (n: NodeProc, tag: string) =>
    peersOf(n).then((ps) => ps.find((p) => p.tag === tag)?.path ?? "unlisted", () => "error");
  const sampling = (async () => {
    const pingEnds = since + PINGS * PING_INTERVAL_MS;
    while (!done && Date.now() < pingEnds) {
      const [ab, ba] = await Promise.all([probe(from.node, to.tag), probe(to.node, tagOf)]);
      paths.ab.push(ab);
      paths.ba.push(ba);
      await new Promise((r) => setTimeout(r, 150));
    }
  })();
  const out = await ping;
  await sampling;
  // "[1700000000.123456] 64 bytes from 10.x.y.z: icmp_seq=3 ttl=64 time=1.23 ms"
  const replies = new Map<number, { at: number; rtt: number }>();
  for (const m of out.text.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+) .*time=([\d.]+) ms/gm)) {
    const seq = Number(m[2]);
    if (!replies.has(seq)) replies.set(seq, { at: Number(m[1]) * 1000, rtt: Number(m[3]) });
  }
  const answered = (seq: number) => (replies.get(seq)?.rtt ?? Infinity) <= REPLY_DEADLINE_MS;
  const seqs = Array.from({ length: PINGS }, (_, i) => i + 1);
  const first = seqs.find(answered);
  return {
    output: out.text + out.errors,
    paths,
    firstReplyMs: first === undefined ? Infinity : replies.get(first)!.at - since,
    firstRttMs: first === undefined ? Infinity : replies.get(first)!.rtt,
    lostBefore: first === undefined ? PINGS : first - 1,
    lostAfter: first === undefined ? 0 : seqs.filter((s) => s > first && !answered(s)).length,
  };
}

/**
 * Waits for all of `work` (so nothing still runs when cleanup starts), then returns the values or throws the first
 * failure.
 */
async function allOf<T>(work: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(work);
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/** "backup", "backup", "direct" -> "backup>direct". */
const transitions = (seen: string[]) => seen.filter((p, i) => p !== seen[i - 1]).join(">");

/** One configuration: a Guardian (with coturn and `--turn` if `turn`) and the six pairs, run at once. */
async function matrix(turn: boolean): Promise<Row[]> {
  const began = performance.now();
  const names = PAIRS.flatMap(([n]) => [`p${n}a`, `p${n}b`]);
  await using stack = new AsyncDisposableStack();
  const bed = stack.use(await Testbed.create(names));
  // Routers hold no processes; if one does, it ends before its namespace goes (disposal runs in reverse order).
  stack.defer(async () => {
    for (const h of bed.hosts.values()) await emptyNamespace(h.ns);
  });
  const dir = stack.use(await tempDir("vc-natmatrix-"));
  const hub = bed.hub;
  const flags: string[] = [];
  let turnServer: { output: string } | undefined;
  if (turn) {
    const secret = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))));
    await Deno.writeTextFile(`${dir.path}/turn.secret`, secret + "\n", { mode: 0o600 });
    const port = await freeUdpPair(hub);
    turnServer = stack.use(await coturn(dir.path, hub, port, secret));
    flags.push("--turn", `turn:${hub}:${port}`, "--turn-secret-file", `${dir.path}/turn.secret`);
  }
  const guardian = stack.use(
    new GuardianProc(`${dir.path}/guardian`, {
      embeddedMaster: true,
      listenHost: hub,
      natsPort: freePort(),
      flags,
    }),
  );
  await guardian.start();
  await guardian.admin(["realm", "create", "home"]);
  const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);

  // One LAN host behind each router, the node on it registered with its pair's own taint.
  const hosts = new Map<string, NatHost>();
  const kindOf = (name: string) => {
    const [, a, b] = PAIRS.find(([n]) => name.startsWith(`p${n}`))!;
    return name.endsWith("a") ? a : b;
  };
  await allOf(names.map(async (name, i) => {
    const host = await behindNat(bed.host(name), kindOf(name), 10 + i);
    hosts.set(name, host);
    stack.defer(async () => {
      await emptyNamespace(host.ns);
      await host[Symbol.asyncDispose]();
    });
    await countUdp(bed.host(name).ns, hub);
  }));
  const nodes = new Map<string, NodeProc>();
  await allOf(names.map(async (name) => {
    const node = new NodeProc(name, `${dir.path}/${name}`, { netns: hosts.get(name)!.ns.name });
    await node.register(guardian.url, token, ["--taints", name.slice(0, -1)]);
    nodes.set(name, node);
  }));
  // Nodes stop first (each waits for its own tethers and sessions to close).
  stack.defer(() => Promise.all([...nodes.values()].map((n) => n.stop())).then(() => {}));

  const setup = performance.now() - began;

  const rows = await allOf(PAIRS.map(async ([n, kindA, kindB, withoutTurn, withTurn]): Promise<Row> => {
    const a = nodes.get(`p${n}a`)!;
    const b = nodes.get(`p${n}b`)!;
    await Promise.all([a.start(), b.start()]);
    // Both up: a looks b up (as its first packet would), and from that exchange each knows the other.
    const found = await a.resolve(b.tag);
    const since = Date.now();
    if (found.length !== 1) {
      throw new Error(`pair ${n}: a could not find b\n--- a:\n${a.proc?.output}\n--- b:\n${b.proc?.output}`);
    }
    const m = await measure(
      { node: a, host: hosts.get(a.tag)! },
      { node: b, tag: b.tag, address: found[0]!.ips[0]! },
      since,
    );
    const [ra, rb] = await Promise.all([readUdp(bed.host(a.tag).ns), readUdp(bed.host(b.tag).ns)]);
    const p2p = ra.p2p + rb.p2p;
    const viaTurn = ra.viaTurn + rb.viaTurn;
    return {
      pair: n,
      kinds: `${KIND_LABEL[kindA]} - ${KIND_LABEL[kindB]}`,
      turn,
      expected: turn ? withTurn : withoutTurn,
      pathAB: transitions(m.paths.ab),
      pathBA: transitions(m.paths.ba),
      firstReplyMs: Math.round(m.firstReplyMs),
      firstRttMs: Math.round(m.firstRttMs),
      lostBefore: m.lostBefore,
      lostAfter: m.lostAfter,
      p2p,
      viaTurn,
      // A tether carrying the pings forwards 2 x PINGS packets (requests one way, replies the other): at least
      // PINGS is the pings; fewer is signalling (ICE checks, TURN allocations and permissions).
      carrier: p2p >= PINGS ? "p2p" : viaTurn >= PINGS ? "turn" : "none",
      logs: `--- ping:\n${m.output}\n--- ${a.tag}:\n${a.proc?.output}\n--- ${b.tag}:\n${b.proc?.output}`,
    };
  }));
  const pinged = performance.now() - began - setup;
  // What each node reports to the Guardian: its NAT's kind, and (where UDP passes) its router's public address.
  if (!turn) {
    type Listed = { tag: string; report?: { nat?: string; publicAddress?: string } };
    const wrong = (nodes: Listed[]) =>
      names.map((name) => {
        const r = nodes.find((n) => n.tag === name)?.report;
        const address = kindOf(name) === "drop-udp" ? undefined : bed.host(name).address;
        const ok = r?.nat === REPORTED_NAT[kindOf(name)] && r.publicAddress?.split(":")[0] === address;
        return ok ? "" : `${name} reported ${JSON.stringify(r && { nat: r.nat, at: r.publicAddress })}`;
      }).filter(Boolean);
    let last: string[] = [];
    await waitFor("every node's NAT kind in its report", 15_000, async () => {
      // Reports live in the serving Guardian: asked through its API, not its data directory.
      last = wrong(JSON.parse(await guardian.viaApi(["node", "list", "--json"])));
      return last.length === 0;
    }).catch((e) => {
      throw new Error(`${e.message}: ${last.join("; ")}`);
    });
  }
  if (Deno.env.get("VEILNET_DEBUG") && turnServer) console.log(`--- coturn:\n${turnServer.output}`);
  const disposing = performance.now();
  await stack.disposeAsync();
  console.log(
    `NAT matrix, TURN ${turn ? "on" : "off"}: setup ${seconds(setup)}, pairs ${seconds(pinged)}, cleanup ${
      seconds(performance.now() - disposing)
    }`,
  );
  return rows;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** What is wrong with a pair's row; nothing if it is as expected. */
function faults(r: Row): string[] {
  const found: string[] = [];
  if (!(r.firstReplyMs < FIRST_REPLY_BOUND_MS)) found.push(`first reply after ${r.firstReplyMs} ms`);
  if (r.lostAfter > 0) found.push(`${r.lostAfter} pings lost after the first reply`);
  // From the first traffic on, each side shows the backup pipeline until the tether opens, then the tether:
  // never "none" while traffic flows, never back.
  const shape = r.expected.path === "direct" ? /^(none>)?(backup>)?direct$/ : /^(none>)?backup$/;
  for (const [side, seen] of [["a>b", r.pathAB], ["b>a", r.pathBA]]) {
    if (!shape.test(seen!)) found.push(`path ${side} went ${seen}, expected ${r.expected.path}`);
  }
  if (r.carrier !== r.expected.carrier) {
    found.push(
      `carried by ${r.carrier} (udp p2p ${r.p2p}, turn ${r.viaTurn}), expected ${r.expected.carrier}`,
    );
  }
  return found;
}

function table(rows: Row[]): string {
  const head = [
    "pair",
    "kinds",
    "TURN",
    "path a>b",
    "path b>a",
    "carried by",
    "first reply (rtt)",
    "lost",
    "udp p2p/turn",
  ];
  const body = rows.map((r) => [
    String(r.pair),
    r.kinds,
    r.turn ? "on" : "off",
    r.pathAB,
    r.pathBA,
    r.carrier === "none" ? "Master (TCP)" : r.carrier === "p2p" ? "UDP p2p" : "coturn",
    `${r.firstReplyMs} ms (${r.firstRttMs})`,
    `${r.lostBefore}+${r.lostAfter}/${PINGS}`,
    `${r.p2p}/${r.viaTurn}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((cells) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join(
    "\n",
  );
}

Deno.test({
  name:
    "NAT matrix: every pair of masquerade, port-randomising and UDP-dropping routers connects, with and without TURN, with the expected path, an early first reply and no loss",
  ignore: netnsUnavailable() !== undefined || turnserverMissing(),
  async fn() {
    const started = performance.now();
    const rows = [...await matrix(false), ...await matrix(true)];
    console.log(
      `NAT matrix in ${
        seconds(performance.now() - started)
      } (${PINGS} pings ${PING_INTERVAL_MS} ms apart from ` +
        `when a had found b; path = what peers --json showed on each side while pinging; lost = ` +
        `before + after the first reply; udp = packets the two routers forwarded router to router / to coturn):\n` +
        table(rows),
    );
    const failed = rows.map((r) => ({ r, found: faults(r) })).filter(({ found }) => found.length > 0);
    for (const { r, found } of failed) {
      console.log(
        `=== pair ${r.pair} (${r.kinds}, TURN ${r.turn ? "on" : "off"}): ${found.join("; ")}\n${r.logs}`,
      );
    }
    assert(
      failed.length === 0,
      failed.map(({ r, found }) =>
        `pair ${r.pair} (${r.kinds}, TURN ${r.turn ? "on" : "off"}): ${found.join("; ")}`
      )
        .join("\n"),
    );
  },
});
