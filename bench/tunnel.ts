/**
 * Tunnel benchmark: TCP throughput (iperf3) and ping RTT between two network namespaces, through veilnet, through
 * wireguard-go and through nebula, on the same testbed in the same run, side by side.
 * `VEILNET_BENCH_PING_ROUNDS=5` sets how many times each tunnel is set up again for its pings (see pingRounds).
 * @module
 */

import { run } from "../tests/netns.ts";
import { cpuSecondsOf, NodeProc, Proc, waitFor } from "../tests/harness.ts";
import { type Realm, realmOnTestbed, Testbed } from "../tests/testbed.ts";
import { netnsUnavailable } from "../tests/netns.ts";
import { clockTick, processUsage, startNodes } from "./control.ts";
import type { Figure } from "./crypto.ts";

const TOOLS = ["iperf3", "wireguard-go", "wg", "nebula", "nebula-cert", "ping"];

interface Measured {
  /** One TCP stream, then 4 in parallel, then one again with 1% of what each host sends on its underlay dropped. */
  mbits: number;
  parallelMbits: number;
  lossMbits: number;
  /** Pings after the single stream (see pingMs). */
  rtt: Rtt;
  /** The same before any bulk traffic: a tunnel as it is when it has just formed. */
  freshRtt: Rtt;
}

/** Round trips in ms (see pingMs). */
interface Rtt {
  median: number;
  mean: number;
}

/** What the single-stream run carried, for the stage breakdown: bytes and wall time. */
interface Window {
  bytes: number;
  ms: number;
}

async function missingTools(): Promise<string[]> {
  const missing: string[] = [];
  for (const t of TOOLS) {
    if (!(await run("sh", ["-c", `command -v ${t}`], { allowFailure: true })).success) missing.push(t);
  }
  return missing;
}

/** iperf3 from a to b's `address` for `seconds` with `streams` parallel streams: Mbit/s received, and bytes. */
async function iperf(
  bed: Testbed,
  address: string,
  seconds: number,
  streams: number,
): Promise<Window & { mbits: number }> {
  await using server = new Proc("iperf3", "ip", [
    "netns",
    "exec",
    bed.host("b").ns.name,
    "iperf3",
    "-s",
    "-1",
    "--forceflush",
  ]);
  await waitFor("iperf3 to listen", 5_000, () => server.output.includes("Server listening"));
  const started = performance.now();
  const client = await bed.host("a").ns.exec("iperf3", [
    "-c",
    address,
    "-t",
    String(seconds),
    "-P",
    String(streams),
    "-J",
  ]);
  const received = JSON.parse(client.text).end.sum_received;
  return { mbits: received.bits_per_second / 1e6, bytes: received.bytes, ms: performance.now() - started };
}

/**
 * Drops `percent` % of every packet each host sends on its underlay (`eth0`: UDP and TCP alike; not the tunnel's
 * own device), as a lossy network would.
 */
async function dropOnUnderlay(bed: Testbed, percent: number): Promise<void> {
  for (const name of ["a", "b"]) {
    const ns = bed.host(name).ns;
    await ns.exec("nft", ["add", "table", "inet", "loss"]);
    await ns.exec("nft", ["add", "chain", "inet", "loss", "out", "{ type filter hook output priority 0; }"]);
    await ns.exec("nft", [
      "add",
      "rule",
      "inet",
      "loss",
      "out",
      "oifname",
      "eth0",
      "numgen",
      "random",
      "mod",
      "100",
      "<",
      String(percent),
      "drop",
    ]);
  }
}

/** The middle value (the upper of the two middle ones for an even count); NaN for none. */
function median(values: number[]): number {
  return [...values].sort((x, y) => x - y)[values.length >> 1] ?? NaN;
}

/** Between two pings through one tunnel (ms). */
const PING_INTERVAL_MS = 50;

/**
 * The round trip of 100 pings from a to `address`, 50 ms apart (ms): their median, and their mean. The bench took
 * the mean of 20 before, which one 2 ms ping among 0.5 ms ones moves by 15%.
 */
async function pingMs(bed: Testbed, address: string): Promise<Rtt> {
  const ping = await bed.host("a").ns.exec("ping", [
    "-c",
    "100",
    "-i",
    String(PING_INTERVAL_MS / 1000),
    address,
  ]);
  const times = [...ping.text.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  return {
    median: median(times),
    mean: times.reduce((sum, t) => sum + t, 0) / times.length,
  };
}

/**
 * Pings, one stream (inside `around`, which may look at the nodes before and after), pings again, 4 streams,
 * then one stream again with 1% loss on the underlay (`loss: false` skips that).
 */
async function measure(
  bed: Testbed,
  address: string,
  seconds: number,
  o: { around?: (run: () => Promise<Window>) => Promise<void>; loss?: boolean } = {},
): Promise<Measured> {
  const freshRtt = await pingMs(bed, address);
  let single = { mbits: 0, bytes: 0, ms: 0 };
  const run = async () => single = await iperf(bed, address, seconds, 1);
  await (o.around ? o.around(run) : run());
  const rtt = await pingMs(bed, address);
  const parallel = await iperf(bed, address, seconds, 4);
  let lossMbits = NaN;
  if (o.loss !== false) {
    await dropOnUnderlay(bed, 1);
    lossMbits = (await iperf(bed, address, seconds, 1)).mbits;
  }
  return { mbits: single.mbits, parallelMbits: parallel.mbits, lossMbits, rtt, freshRtt };
}

/**
 * CPU seconds of a process by group of threads (JavaScript's: the main thread and the data-plane worker;
 * libdatachannel's, Deno's runtime, V8's), from /proc.
 */
function cpuByThreads(pid: number): Record<string, number> {
  const groups: Record<string, number> = { javascript: 0, webrtc: 0, runtime: 0, v8: 0, other: 0 };
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    let comm, seconds;
    try {
      comm = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/comm`).trim();
      seconds = cpuSecondsOf(`/proc/${pid}/task/${task.name}/stat`);
    } catch {
      continue; // the thread ended meanwhile
    }
    // The main thread and the data-plane worker's ("worker-N") run JavaScript.
    const group = task.name === String(pid) || /^worker-\d/.test(comm)
      ? "javascript"
      : /^(RTC|SCTP|juice)/.test(comm)
      ? "webrtc"
      : comm.startsWith("tokio")
      ? "runtime"
      : comm.startsWith("V8")
      ? "v8"
      : "other";
    groups[group]! += seconds;
  }
  return groups;
}

/**
 * What a single-stream run cost one node: per stage of its data plane, the time its JavaScript threads spent there
 * (wall clock, so waiting for a core counts too), and the CPU of each group of its threads, per 64 KiB carried.
 */
async function stageFigures(
  role: string,
  node: { status(): Promise<{ json: Record<string, unknown> }>; proc?: { pid: number } },
  run: () => Promise<Window>,
): Promise<() => Figure[]> {
  const stages = async () => ((await node.status()).json.stages ?? {}) as Record<string, number>;
  const pid = node.proc!.pid;
  const [before, cpuBefore] = [await stages(), cpuByThreads(pid)];
  const window = await run();
  const [after, cpuAfter] = [await stages(), cpuByThreads(pid)];
  const per64k = (ms: number) => ms * 1000 / (window.bytes / 65_536);
  const share = (ms: number) => `${(ms / window.ms * 100).toFixed(1)}%`;
  return () => [
    ...Object.keys(after).map((stage) => {
      const ms = after[stage]! - (before[stage] ?? 0);
      return {
        name: `veilnet ${role}: ${stage}`,
        value: per64k(ms),
        unit: "us/64KiB",
        note: `${share(ms)} of the run's time (on the main thread or the worker's)`,
      };
    }),
    ...Object.keys(cpuAfter).map((group) => {
      const ms = (cpuAfter[group]! - cpuBefore[group]!) * 1000;
      return {
        name: `veilnet ${role}: CPU, ${group} threads`,
        value: per64k(ms),
        unit: "us/64KiB",
        note: `${share(ms)} of a core`,
      };
    }),
  ];
}

/** b's overlay address, once a's pings reach it (`what` names the path, for the timeout's message). */
async function reachB(realm: Realm, what: string): Promise<string> {
  const a = realm.node("a");
  // Nodes learn each other on demand: a looks b up by name, as its first packet or DNS question would.
  const address = (await waitFor("a to find b", 15_000, async () => (await a.resolve("b"))[0])).ips[0]!;
  await waitFor(
    what,
    20_000,
    async () =>
      (await realm.bed.host("a").ns.exec("ping", ["-c", "1", "-W", "1", address], { allowFailure: true }))
        .success,
  );
  return address;
}

/** veilnet on a fresh realm, once b's direct TCP connection carries a's pings: `use` measures it. */
async function onVeilnet<T>(use: (bed: Testbed, address: string, realm: Realm) => Promise<T>): Promise<T> {
  await using realm = await realmOnTestbed(["a", "b"]);
  const address = await reachB(realm, "the tunnel");
  // The first packets take the backup pipeline while the tether forms, then its WebRTC channel until its direct
  // TCP connection is made: the fresh pings wait for that connection.
  await waitFor("the tether's direct TCP connection", 10_000, async () => {
    const b = (await realm.node("a").peers()).find((p) => p.ips[0] === address) as
      | { link?: string }
      | undefined;
    return b?.link === "tcp";
  });
  return await use(realm.bed, address, realm);
}

function veilnet(seconds: number): Promise<Measured & { stages: Figure[] }> {
  return onVeilnet(async (bed, address, realm) => {
    const stages: Figure[] = [];
    const measured = await measure(bed, address, seconds, {
      around: async (run) => {
        let sender: () => Figure[] = () => [];
        const receiver = await stageFigures("receiver b", realm.node("b"), async () => {
          let w: Window = { bytes: 0, ms: 0 };
          sender = await stageFigures("sender a", realm.node("a"), async () => w = await run());
          return w;
        });
        stages.push(...sender(), ...receiver());
      },
    });
    return { ...measured, stages };
  });
}

/** Peers of the idle node: b, and control-plane nodes (`--no-tun`) that look it up (issue 18, goal 4). */
const IDLE_PEERS = 20;

/**
 * A node with its TUN and IDLE_PEERS peers, idle (issue 18, goal 4): one ping forms a tether to b, which dissolves
 * after 3 s without traffic, and the other peers look the node up; 30 s later, the node's CPU over 30 s (all its
 * threads, from /proc) and its RSS.
 */
async function veilnetIdle(): Promise<Figure[]> {
  await using realm = await realmOnTestbed(["a", "b"], ["--tether-idle", "3s"]);
  const a = realm.node("a");
  await reachB(realm, "the tunnel");
  const token = await realm.guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
  const dir = await Deno.makeTempDir({ prefix: "vc-idle-" });
  const others: NodeProc[] = [];
  try {
    await startNodes(others, { n: IDLE_PEERS - 1, prefix: "p", dir, guardian: realm.guardian.url, token });
    for (const node of others) {
      await waitFor(`${node.tag} to find a`, 15_000, async () => (await node.resolve("a")).length > 0);
    }
    const peers = (await a.peers()).length;
    await waitFor("the tether to dissolve", 20_000, async () => (await a.status()).json.tethers === 0);
    // A node settles for a while after it starts (V8's collector, the first reports): idle is later.
    await new Promise((resolve) => setTimeout(resolve, 30_000));
    const [pid, tick, seconds] = [a.proc!.pid, await clockTick(), 30];
    const before = await processUsage(pid, tick);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const after = await processUsage(pid, tick);
    const cpu = (after.cpu - before.cpu) / seconds * 100;
    const rss = after.rss / 2 ** 20;
    return [
      {
        name: "veilnet node with its TUN, idle: CPU",
        value: cpu,
        unit: "%",
        note:
          `of one core over ${seconds} s, ${peers} peers, after its tether dissolved (all threads; 10 ms ticks)`,
      },
      {
        name: "veilnet node with its TUN, idle: RSS",
        value: rss,
        unit: "MiB",
        note: `the same node, then: ${(after.rssAnon / 2 ** 20).toFixed(1)} MiB its own (heaps, stacks), ${
          (after.rssFile / 2 ** 20).toFixed(1)
        } MiB of files it maps (the executable, libraries)`,
      },
    ];
  } finally {
    for (const node of others) await node[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** wireguard-go on a fresh testbed, a to b (10.99.1.2): `use` measures it. */
async function onWireguard<T>(use: (bed: Testbed, address: string) => Promise<T>): Promise<T> {
  await using bed = await Testbed.create(["a", "b"]);
  const keys: Record<string, { priv: string; pub: string }> = {};
  for (const n of ["a", "b"]) {
    const priv = (await run("wg", ["genkey"])).text.trim();
    keys[n] = { priv, pub: (await run("wg", ["pubkey"], { stdin: priv })).text.trim() };
  }
  const env = { WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: "1", WG_PROCESS_FOREGROUND: "1" };
  const dir = await Deno.makeTempDir();
  const procs: Proc[] = [];
  try {
    for (
      const [n, other, ip, otherIp] of [["a", "b", "10.99.1.1", "10.99.1.2"], [
        "b",
        "a",
        "10.99.1.2",
        "10.99.1.1",
      ]]
    ) {
      const ns = bed.host(n!).ns;
      // Each device needs its own name: wireguard-go's control socket (/var/run/wireguard/NAME.sock) is shared.
      const dev = `wg${n}${Deno.pid}`;
      procs.push(new Proc(`wireguard-go-${n}`, "ip", ["netns", "exec", ns.name, "wireguard-go", dev], env));
      await waitFor(
        dev,
        5_000,
        async () => (await ns.exec("ip", ["link", "show", dev], { allowFailure: true })).success,
      );
      await Deno.writeTextFile(`${dir}/${n}.key`, keys[n!]!.priv);
      await ns.exec("wg", [
        "set",
        dev,
        "private-key",
        `${dir}/${n}.key`,
        "listen-port",
        "51820",
        "peer",
        keys[other!]!.pub,
        "allowed-ips",
        `${otherIp}/32`,
        "endpoint",
        `${bed.host(other!).address}:51820`,
      ]);
      await ns.exec("ip", ["addr", "add", `${ip}/24`, "dev", dev]);
      await ns.exec("ip", ["link", "set", dev, "up"]);
    }
    return await use(bed, "10.99.1.2");
  } finally {
    for (const p of procs) await p.stop();
  }
}

/** nebula on a fresh testbed, a to b (10.99.2.2): `use` measures it. */
async function onNebula<T>(use: (bed: Testbed, address: string) => Promise<T>): Promise<T> {
  await using bed = await Testbed.create(["a", "b"]);
  const dir = await Deno.makeTempDir();
  await run("nebula-cert", [
    "ca",
    "-name",
    "bench",
    "-out-crt",
    `${dir}/ca.crt`,
    "-out-key",
    `${dir}/ca.key`,
  ]);
  const procs: Proc[] = [];
  try {
    for (
      const [n, other, ip, otherIp] of [["a", "b", "10.99.2.1", "10.99.2.2"], [
        "b",
        "a",
        "10.99.2.2",
        "10.99.2.1",
      ]]
    ) {
      await run("nebula-cert", [
        "sign",
        "-ca-crt",
        `${dir}/ca.crt`,
        "-ca-key",
        `${dir}/ca.key`,
        "-name",
        n!,
        "-ip",
        `${ip}/24`,
        "-out-crt",
        `${dir}/${n}.crt`,
        "-out-key",
        `${dir}/${n}.key`,
      ]);
      await Deno.writeTextFile(
        `${dir}/${n}.yml`,
        [
          `pki: { ca: ${dir}/ca.crt, cert: ${dir}/${n}.crt, key: ${dir}/${n}.key }`,
          `static_host_map: { "${otherIp}": ["${bed.host(other!).address}:4242"] }`,
          "lighthouse: { am_lighthouse: false, hosts: [] }",
          "listen: { host: 0.0.0.0, port: 4242 }",
          "tun: { dev: nebula1 }",
          "logging: { level: warning }",
          "firewall:",
          "  outbound: [{ port: any, proto: any, host: any }]",
          "  inbound: [{ port: any, proto: any, host: any }]",
        ].join("\n") + "\n",
      );
      procs.push(
        new Proc(`nebula-${n}`, "ip", [
          "netns",
          "exec",
          bed.host(n!).ns.name,
          "nebula",
          "-config",
          `${dir}/${n}.yml`,
        ]),
      );
    }
    await waitFor(
      "nebula to connect",
      20_000,
      async () =>
        (await bed.host("a").ns.exec("ping", ["-c", "1", "-W", "1", "10.99.2.2"], { allowFailure: true }))
          .success,
    );
    return await use(bed, "10.99.2.2");
  } finally {
    for (const p of procs) await p.stop();
  }
}

/**
 * veilnet with no tether possible: UDP is dropped in a's namespace, so everything rides the backup pipeline (the
 * Master, over TCP). With the underlay's own ping for comparison.
 */
async function veilnetBackup(seconds: number): Promise<Measured & { underlay: Rtt; path: string }> {
  await using realm = await realmOnTestbed(["a", "b"]);
  const ns = realm.bed.host("a").ns;
  await ns.exec("nft", ["add", "table", "inet", "noudp"]);
  await ns.exec("nft", ["add", "chain", "inet", "noudp", "out", "{ type filter hook output priority 0; }"]);
  await ns.exec("nft", ["add", "rule", "inet", "noudp", "out", "meta", "l4proto", "udp", "drop"]);
  const a = realm.node("a");
  const address = await reachB(realm, "the backup pipeline");
  const measured = await measure(realm.bed, address, seconds, { loss: false });
  // Read while the pipeline is still shown as the path (BACKUP_SHOWN_MS after its last traffic).
  const path = (await a.peers()).find((p) => p.ips[0] === address) as { path?: string } | undefined;
  const underlay = await pingMs(realm.bed, realm.bed.host("b").address);
  return {
    ...measured,
    underlay,
    path: path?.path ?? "?",
  };
}

/** One set-up's ping medians: on the fresh tunnel, and after 3 s of one TCP stream (see pingRounds). */
interface PingRound {
  fresh: number;
  bulk: number;
  /** The CPU the tunnel's two ends used during the pings after bulk traffic (% of one core, both summed). */
  cpu: number;
}

/**
 * Runs `work` and says how much CPU the processes that were in hosts a and b before it used meanwhile: a tunnel's
 * two ends (the ping `work` starts is not among them), in % of one core.
 */
async function endsCpu<T>(bed: Testbed, work: () => Promise<T>): Promise<{ value: T; cpu: number }> {
  const tick = await clockTick();
  const pids = (await Promise.all(["a", "b"].map((host) => bed.host(host).ns.pids()))).flat();
  // A process that ended meanwhile counts nothing (NaN, skipped).
  const cpuOf = (pid: number) => {
    try {
      return cpuSecondsOf(`/proc/${pid}/stat`, tick);
    } catch {
      return NaN;
    }
  };
  const before = pids.map(cpuOf);
  const started = performance.now();
  const value = await work();
  const seconds = (performance.now() - started) / 1000;
  const used = pids.map((pid, i) => cpuOf(pid) - before[i]!).filter((t) => !Number.isNaN(t));
  return { value, cpu: 100 * used.reduce((sum, t) => sum + t, 0) / seconds };
}

/**
 * `work` for each item, all at once, the starts spread evenly over one ping interval (PING_INTERVAL_MS): pings
 * from several processes then take turns, and no two round trips overlap.
 */
function staggered<I, T>(items: I[], work: (item: I) => Promise<T>): Promise<T[]> {
  return Promise.all(items.map(async (item, i) => {
    await new Promise((done) => setTimeout(done, i * PING_INTERVAL_MS / items.length));
    return await work(item);
  }));
}

/**
 * The three tunnels set up side by side, `rounds` times, each on its own testbed: pings through all three at once
 * on the fresh tunnels (their round trips taking turns, see staggered), 3 s of one TCP stream through each in turn
 * (the order rotating each round), pings through all three again. Measured one tunnel after another, set-up
 * medians varied by about ±20% from minute to minute on the same code, more than the tunnels differ (README,
 * "Figures"); taking turns within the same seconds, the machine's drift weighs on all three alike, and each
 * round's ratio of two tunnels' medians is one paired draw.
 */
async function pingRounds(rounds: number): Promise<Record<string, PingRound[]>> {
  const names = ["veilnet", "wireguard-go", "nebula"];
  const results: Record<string, PingRound[]> = Object.fromEntries(names.map((name) => [name, []]));
  for (let round = 0; round < rounds; round++) {
    // veilnet's last: its tether, made just before its first pings, is not left idle while the others start.
    await onNebula((nbed, naddress) =>
      onWireguard((wbed, waddress) =>
        onVeilnet(async (vbed, vaddress) => {
          const all: [string, Testbed, string][] = [
            ["veilnet", vbed, vaddress],
            ["wireguard-go", wbed, waddress],
            ["nebula", nbed, naddress],
          ];
          const up = [...all.slice(round % 3), ...all.slice(0, round % 3)];
          const fresh = await staggered(up, ([, bed, address]) => pingMs(bed, address));
          for (const [, bed, address] of up) await iperf(bed, address, 3, 1);
          const bulk = await staggered(up, ([, bed, address]) => endsCpu(bed, () => pingMs(bed, address)));
          up.forEach(([name], i) => {
            results[name]!.push({ fresh: fresh[i]!.median, bulk: bulk[i]!.value.median, cpu: bulk[i]!.cpu });
          });
        })
      )
    );
  }
  return results;
}

/**
 * The three tunnels, measured one after another on fresh testbeds, and veilnet's backup pipeline alone; then their
 * pings over `pingRounds` set-ups each (env VEILNET_BENCH_PING_ROUNDS, default 5).
 */
export async function tunnelBench(options: { seconds?: number } = {}): Promise<Figure[]> {
  const seconds = options.seconds ?? 8;
  const roundsText = Deno.env.get("VEILNET_BENCH_PING_ROUNDS") ?? "5";
  const rounds = Number(roundsText);
  if (!Number.isInteger(rounds) || rounds < 1) {
    throw new RangeError(
      `VEILNET_BENCH_PING_ROUNDS must be a whole number of at least 1, like "5"; got "${roundsText}"`,
    );
  }
  const why = netnsUnavailable();
  if (why) return [{ name: "tunnel benchmark skipped", value: 0, unit: "", note: why }];
  const missing = await missingTools();
  if (missing.length > 0) {
    return [{
      name: "tunnel benchmark skipped",
      value: 0,
      unit: "",
      note: `missing: ${missing.join(" ")} (apt-get install iperf3 wireguard-go wireguard-tools nebula)`,
    }];
  }
  const v = await veilnet(seconds);
  const bk = await veilnetBackup(seconds);
  const idle = await veilnetIdle();
  const w = await onWireguard((bed, address) => measure(bed, address, seconds));
  const n = await onNebula((bed, address) => measure(bed, address, seconds));
  const pings = await pingRounds(rounds);
  const rtt = (r: Rtt) => `median ${r.median.toFixed(3)} ms (mean ${r.mean.toFixed(3)})`;
  const tunnel = (name: string, m: Measured): Figure[] => [
    {
      name: `TCP through ${name}`,
      value: m.mbits,
      unit: "Mbit/s",
      note: `ping ${rtt(m.rtt)} after it, ${rtt(m.freshRtt)} before any bulk traffic`,
    },
    { name: `TCP through ${name}, 4 streams`, value: m.parallelMbits, unit: "Mbit/s", note: "" },
    ...(Number.isNaN(m.lossMbits) ? [] : [{
      name: `TCP through ${name}, 1% loss`,
      value: m.lossMbits,
      unit: "Mbit/s",
      note: "1% of what each host sends on its underlay dropped (nftables)",
    }]),
  ];
  const ratio = (name: string, peer: Measured): Figure[] => [
    {
      name: `veilnet / ${name}`,
      value: v.mbits / peer.mbits,
      unit: "x",
      note: `4 streams ${(v.parallelMbits / peer.parallelMbits).toFixed(2)}x, 1% loss ${
        (v.lossMbits / peer.lossMbits).toFixed(2)
      }x, RTT ${(v.rtt.median / peer.rtt.median).toFixed(2)}x (before bulk traffic ${
        (v.freshRtt.median / peer.freshRtt.median).toFixed(2)
      }x; medians)`,
    },
  ];
  const ms = (values: number[]) => values.map((t) => t.toFixed(3)).join(" ");
  const over = `${rounds} set-ups`;
  const pingFigures: Figure[] = [
    ...Object.entries(pings).map(([name, r]) => ({
      name: `ping RTT through ${name}, over ${over}`,
      value: median(r.map((x) => x.bulk)),
      unit: "ms",
      note:
        `median of the set-ups' medians after 3 s of TCP (${
          ms(r.map((x) => x.bulk))
        }); on the fresh tunnel ` +
        `${median(r.map((x) => x.fresh)).toFixed(3)} (${ms(r.map((x) => x.fresh))}); CPU of its two ends ` +
        `while pinging after TCP ${median(r.map((x) => x.cpu)).toFixed(2)}% of a core (${
          r.map((x) => x.cpu.toFixed(2)).join(" ")
        })`,
    })),
    ...["wireguard-go", "nebula"].map((name) => {
      // Each round's two medians were taken in the same seconds (see pingRounds): its ratio is one paired draw.
      const ratios = (pick: (x: PingRound) => number) =>
        pings.veilnet!.map((x, i) => pick(x) / pick(pings[name]![i]!));
      const paired = (pick: (x: PingRound) => number) => median(ratios(pick));
      const each = (pick: (x: PingRound) => number) => ratios(pick).map((r) => r.toFixed(2)).join(" ");
      const ratioOfMedians = (pick: (x: PingRound) => number) =>
        median(pings.veilnet!.map(pick)) / median(pings[name]!.map(pick));
      const fresh = `${paired((x) => x.fresh).toFixed(2)}x`;
      const ofMedians = `${ratioOfMedians((x) => x.bulk).toFixed(2)}x and ${
        ratioOfMedians((x) => x.fresh).toFixed(2)
      }x`;
      return {
        name: `veilnet / ${name} ping RTT, over ${over}`,
        value: paired((x) => x.bulk),
        unit: "x",
        note: `after bulk traffic (${each((x) => x.bulk)}); on the fresh tunnel ${fresh} (${
          each((x) => x.fresh)
        }): medians of the rounds' ratios; the ratios of the medians: ${ofMedians}`,
      };
    }),
  ];
  return [
    ...tunnel("veilnet", v),
    {
      name: "TCP through veilnet, backup pipeline only",
      value: bk.mbits,
      unit: "Mbit/s",
      note: `ping ${rtt(bk.rtt)} (underlay ${rtt(bk.underlay)}), path ${bk.path}; ` +
        `4 streams ${bk.parallelMbits.toFixed(0)} Mbit/s`,
    },
    ...idle,
    ...tunnel("wireguard-go", w),
    ...tunnel("nebula", n),
    ...ratio("wireguard-go", w),
    ...ratio("nebula", n),
    ...pingFigures,
    ...v.stages,
  ];
}
