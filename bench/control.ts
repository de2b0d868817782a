/**
 * Control-plane benchmark: what an idle realm costs. A Guardian, its Master (a nats-server configured by
 * `guardian nats-config`, run with its monitoring port open) and N real nodes (`veilnet-conflux run --no-tun`:
 * the control plane only) that may all talk to each other. Once every node lists the N-1 others, the realm idles
 * for a window and we read the Master's egress (`/varz` deltas) and each node's CPU and memory (`/proc`).
 * Issue 16 asks the per-node figures to stay flat as N grows.
 *
 * `VEILNET_BENCH_SIZES=8,32` picks the realm sizes (default 8, 32, 64); `VEILNET_BENCH_WINDOW=20` the idle
 * window in seconds.
 * @module
 */

import { socketPath } from "../src/agent/config.ts";
import {
  freePort,
  GuardianProc,
  natsServer,
  NodeProc,
  type Proc,
  tempDir,
  waitFor,
} from "../tests/harness.ts";
import type { Figure } from "./crypto.ts";

const DEFAULT_SIZES = [8, 32, 64];
const DEFAULT_WINDOW_SECONDS = 20;
/** Nodes started at once: each is a Deno process that compiles and logs in, on a machine of a few cores. */
const START_GROUP = 4;
/** How long every node may take to list every other, after the last one started. */
const convergeMs = (n: number) => 20_000 + n * 500;

/** The Master's counters, from nats-server's `/varz`. */
interface Varz {
  out_bytes: number;
  out_msgs: number;
  in_bytes: number;
  in_msgs: number;
}

/** CPU time (seconds) and resident memory (bytes) of one process, from /proc. */
async function processUsage(pid: number, tick: number): Promise<{ cpu: number; rss: number }> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the command name (which may hold spaces) start at field 3; utime is 14 and stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpu = (Number(fields[11]) + Number(fields[12])) / tick;
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  return { cpu, rss };
}

/** Clock ticks per second for /proc CPU times. */
async function clockTick(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    const tick = Number(new TextDecoder().decode(out.stdout).trim());
    return tick > 0 ? tick : 100;
  } catch {
    return 100;
  }
}

/**
 * How many peers a node lists, asked over its local API (not the CLI: 64 Deno processes per poll would skew the
 * measurement). Retried: now and then a request over the socket gets no answer (1 in a few hundred, at 32 nodes),
 * while curl on the same socket right after answers at once.
 */
async function peerCount(node: NodeProc): Promise<number | undefined> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const client = Deno.createHttpClient(
      { proxy: { transport: "unix", path: socketPath(node.configDir) } } as Deno.CreateHttpClientOptions,
    );
    try {
      const res = await fetch(
        "http://conflux/peers",
        { client, signal: AbortSignal.timeout(2_000) } as RequestInit,
      );
      return (await res.json() as unknown[]).length;
    } catch {
      // not running, or no answer this time: try again
    } finally {
      client.close();
    }
  }
  return undefined;
}

async function peerCounts(nodes: NodeProc[]): Promise<number[]> {
  const counts: number[] = [];
  for (const node of nodes) counts.push(await peerCount(node) ?? -1);
  return counts;
}

/** Says on stderr which nodes fall short, and what the first of them logged, so a timeout can be looked into. */
function reportShortfall(nodes: NodeProc[], counts: number[], want: number): void {
  const short = nodes.flatMap((node, i) =>
    counts[i]! < want ? [`${node.tag}: ${counts[i]! < 0 ? "no answer" : counts[i]}`] : []
  );
  if (short.length === 0) return;
  console.error(`control ${nodes.length} nodes: short of ${want} peers: ${short.join(", ")}`);
  const first = nodes[counts.findIndex((c) => c < want)]!;
  console.error(`--- ${first.tag}, last lines:\n${first.proc?.output.split("\n").slice(-15).join("\n")}`);
}

/** One realm of `n` nodes, measured idle for `windowSeconds`. */
async function measureRealm(n: number, windowSeconds: number, tick: number): Promise<Figure[]> {
  await using tmp = await tempDir("vc-bench-control-");
  const dir = tmp.path;
  const natsPort = freePort();
  const monitorPort = freePort();
  const guardian = new GuardianProc(`${dir}/guardian`, { master: [`nats://127.0.0.1:${natsPort}`] });
  let master: Proc | undefined;
  const nodes: NodeProc[] = [];
  try {
    // nats-config makes the Guardian's keys, so the Master's config comes first (as an operator would do it).
    master = await natsServer(guardian.dataDir, "master", natsPort, {
      serverFlags: ["-a", "127.0.0.1", "-m", String(monitorPort)],
    });
    const varz = async (): Promise<Varz> =>
      await (await fetch(`http://127.0.0.1:${monitorPort}/varz`)).json();
    await waitFor("the Master's monitoring port", 10_000, varz);
    await guardian.start();
    await guardian.admin(["realm", "create", "home"]);
    const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);

    const startedAt = Date.now();
    for (let i = 0; i < n; i += START_GROUP) {
      const group: NodeProc[] = [];
      for (let j = i; j < Math.min(n, i + START_GROUP); j++) {
        group.push(new NodeProc(`n${j}`, `${dir}/n${j}`));
      }
      nodes.push(...group); // before starting, so a failed start is still stopped below
      // allSettled: a failure must not leave another member of the group starting after the cleanup below.
      const started = await Promise.allSettled(group.map(async (node) => {
        await node.register(guardian.url, token, ["--taints", "lab"]);
        await node.start();
      }));
      const failed = started.find((s) => s.status === "rejected");
      if (failed) throw failed.reason;
    }
    const startSeconds = (Date.now() - startedAt) / 1000;

    const convergeStart = Date.now();
    const deadline = convergeStart + convergeMs(n);
    let counts = await peerCounts(nodes);
    while (counts.some((c) => c < n - 1) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1_000));
      counts = await peerCounts(nodes);
    }
    const converged = counts.every((c) => c >= n - 1);
    reportShortfall(nodes, counts, n - 1);
    const convergeSeconds = (Date.now() - convergeStart) / 1000;

    const pids = nodes.map((node) => node.proc!.pid);
    const before = { varz: await varz(), at: performance.now() };
    const usageBefore = await Promise.all(pids.map((pid) => processUsage(pid, tick)));
    const masterBefore = await processUsage(master.pid, tick);
    await new Promise((r) => setTimeout(r, windowSeconds * 1000));
    const after = { varz: await varz(), at: performance.now() };
    const usageAfter = await Promise.all(pids.map((pid) => processUsage(pid, tick)));
    const masterAfter = await processUsage(master.pid, tick);
    const countsAfter = await peerCounts(nodes);

    const seconds = (after.at - before.at) / 1000;
    const rate = (k: keyof Varz) => (after.varz[k] - before.varz[k]) / seconds;
    const cpu = usageAfter.map((u, i) => (u.cpu - usageBefore[i]!.cpu) / seconds * 100);
    const rss = usageAfter.map((u) => u.rss / 2 ** 20);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const full = (cs: number[]) => cs.filter((c) => c >= n - 1).length;
    const label = `control ${n} nodes:`;
    return [
      {
        name: `${label} all peers listed after`,
        value: convergeSeconds,
        unit: "s",
        note: converged
          ? `${n}/${n} nodes list ${n - 1} peers; ${n} nodes started in ${startSeconds.toFixed(0)} s`
          : `timed out after ${convergeMs(n) / 1000} s: ${full(counts)}/${n} nodes list ${
            n - 1
          } peers, fewest ` +
            `${Math.max(0, Math.min(...counts))}${
              counts.includes(-1) ? " (some did not answer)" : ""
            }; ${n} nodes started in ${startSeconds.toFixed(0)} s`,
      },
      {
        name: `${label} Master egress`,
        value: rate("out_bytes") / 1024,
        unit: "KiB/s",
        note: `${rate("out_msgs").toFixed(0)} msg/s out; in ${(rate("in_bytes") / 1024).toFixed(1)} KiB/s, ` +
          `${rate("in_msgs").toFixed(0)} msg/s; Master CPU ` +
          `${((masterAfter.cpu - masterBefore.cpu) / seconds * 100).toFixed(0)}% of a core`,
      },
      {
        name: `${label} Master egress per node`,
        value: rate("out_bytes") / 1024 / n,
        unit: "KiB/s",
        note: `over ${seconds.toFixed(0)} s idle; issue 16 wants under 2 KiB/s at any size`,
      },
      {
        name: `${label} messages per node`,
        value: rate("out_msgs") / n,
        unit: "msg/s",
        note: `received from the Master; each sends ${(rate("in_msgs") / n).toFixed(2)} msg/s`,
      },
      {
        name: `${label} node CPU`,
        value: mean(cpu),
        unit: "%",
        note: `of one core, mean; max ${Math.max(...cpu).toFixed(1)}%`,
      },
      {
        name: `${label} node RSS`,
        value: mean(rss),
        unit: "MiB",
        note: `mean; max ${Math.max(...rss).toFixed(0)} MiB; after the window ${full(countsAfter)}/${n} ` +
          `nodes list ${n - 1} peers`,
      },
    ];
  } finally {
    // Nodes first (each says goodbye over the Master), then the Guardian and the Master; the directory last.
    await Promise.all(nodes.map((node) => node.stop()));
    await guardian.stop();
    await master?.stop();
  }
}

/** The realm sizes from `VEILNET_BENCH_SIZES` (comma-separated), else 8, 32 and 64. */
function sizesFromEnv(): number[] {
  const raw = Deno.env.get("VEILNET_BENCH_SIZES");
  if (!raw) return DEFAULT_SIZES;
  const sizes = raw.split(",").map((s) => Number(s.trim()));
  if (sizes.some((s) => !Number.isInteger(s) || s < 2)) {
    throw new RangeError(
      `VEILNET_BENCH_SIZES must be whole numbers of at least 2, like "8,32"; got "${raw}"`,
    );
  }
  return sizes;
}

/** Idle realms of each size, one after another; a size that fails is reported and the next one still runs. */
export async function controlBench(
  options: { sizes?: number[]; windowSeconds?: number } = {},
): Promise<Figure[]> {
  const sizes = options.sizes ?? sizesFromEnv();
  const windowSeconds = options.windowSeconds ??
    Number(Deno.env.get("VEILNET_BENCH_WINDOW") ?? DEFAULT_WINDOW_SECONDS);
  if (!(windowSeconds > 0)) {
    throw new RangeError(
      `VEILNET_BENCH_WINDOW must be a number of seconds above 0, like 20; got ${windowSeconds}`,
    );
  }
  const tick = await clockTick();
  const figures: Figure[] = [];
  for (const n of sizes) {
    const startedAt = Date.now();
    try {
      figures.push(...await measureRealm(n, windowSeconds, tick));
    } catch (error) {
      console.error(`control ${n} nodes failed:`, error);
      figures.push({
        name: `control ${n} nodes: failed`,
        value: 0,
        unit: "",
        note: (error as Error).message.split("\n")[0],
      });
    }
    figures.push({
      name: `control ${n} nodes: whole run`,
      value: (Date.now() - startedAt) / 1000,
      unit: "s",
    });
  }
  return figures;
}
