/**
 * Control-plane benchmark: what an idle realm costs. A Guardian, its Master (a nats-server configured by
 * `guardian nats-config`, run with its monitoring port open) and N real nodes (`veilnet-conflux run --no-tun`:
 * the control plane only) that may all talk to each other. Each node looks up LOOKUPS others by name (as its DNS
 * or first packets would: the time each takes is a figure), then the realm idles for a window and we read the
 * Master's egress (`/varz` deltas) and each node's CPU and memory (`/proc`). Issue 16 asks the per-node figures
 * to stay flat as N grows.
 *
 * `VEILNET_BENCH_SIZES=8,32` picks the realm sizes (default 8, 32, 64); `VEILNET_BENCH_WINDOW=20` the idle
 * window in seconds.
 * @module
 */

import { socketPath } from "../src/agent/config.ts";
import {
  cpuSecondsOf,
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
/**
 * Peers each node looks up. Each is then known both ways, so a node of a realm of 21 or more knows 20 peers: what
 * issue 18 asks of an idle node (under 0.5% of a core, under 100 MB).
 */
const LOOKUPS = 10;

/** The Master's counters, from nats-server's `/varz`. */
interface Varz {
  out_bytes: number;
  out_msgs: number;
  in_bytes: number;
  in_msgs: number;
}

/**
 * CPU time (seconds) and resident memory (bytes) of one process, from /proc; the resident memory also split into
 * the process's own (heaps, stacks: RssAnon) and pages of files it maps (the executable, libraries: RssFile).
 */
export async function processUsage(
  pid: number,
  tick: number,
): Promise<{ cpu: number; rss: number; rssAnon: number; rssFile: number }> {
  const cpu = cpuSecondsOf(`/proc/${pid}/stat`, tick);
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { cpu, rss: kib("VmRSS"), rssAnon: kib("RssAnon"), rssFile: kib("RssFile") };
}

/**
 * Registers and starts `n` control-plane nodes (`run --no-tun`) named `prefix`0, `prefix`1, ... under `dir`,
 * START_GROUP at a time. Each goes into `into` before it starts, so whoever disposes of `into` stops one whose
 * start failed too.
 */
export async function startNodes(
  into: NodeProc[],
  o: { n: number; prefix: string; dir: string; guardian: string; token: string },
): Promise<void> {
  for (let i = 0; i < o.n; i += START_GROUP) {
    const group: NodeProc[] = [];
    for (let j = i; j < Math.min(o.n, i + START_GROUP); j++) {
      group.push(new NodeProc(`${o.prefix}${j}`, `${o.dir}/${o.prefix}${j}`));
    }
    into.push(...group);
    // allSettled: a failure must not leave another member of the group starting after the caller's cleanup.
    const started = await Promise.allSettled(group.map(async (node) => {
      await node.register(o.guardian, o.token, ["--taints", "lab"]);
      await node.start();
    }));
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
  }
}

/** Clock ticks per second for /proc CPU times. */
export async function clockTick(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
    const tick = Number(new TextDecoder().decode(out.stdout).trim());
    return tick > 0 ? tick : 100;
  } catch {
    return 100;
  }
}

/**
 * Asks a node's local API (not the CLI: 64 Deno processes per poll would skew the measurement) for `path`; one
 * plain HTTP/1.1 request over the unix socket, as Deno's fetch over a unix socket now and then gets no answer
 * under many concurrent requests.
 */
async function localGet<T>(node: NodeProc, path: string): Promise<T | undefined> {
  try {
    const conn = await Deno.connect({ transport: "unix", path: socketPath(node.configDir) });
    try {
      await conn.write(
        new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: conflux\r\nConnection: close\r\n\r\n`),
      );
      const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
      const body = text.slice(text.indexOf("\r\n\r\n") + 4);
      // A chunked answer: the JSON sits between the first chunk's size line and its end.
      const json = /^[0-9a-f]+\r\n/i.test(body)
        ? body.slice(body.indexOf("\r\n") + 2, body.lastIndexOf("\r\n0\r\n"))
        : body;
      return JSON.parse(json) as T;
    } finally {
      try {
        conn.close();
      } catch { /* closed by the server */ }
    }
  } catch {
    return undefined;
  }
}

async function peerCounts(nodes: NodeProc[]): Promise<number[]> {
  const counts: number[] = [];
  for (const node of nodes) counts.push((await localGet<unknown[]>(node, "/peers"))?.length ?? -1);
  return counts;
}

/** One realm of `n` nodes, measured idle for `windowSeconds`. */
async function measureRealm(n: number, windowSeconds: number, tick: number): Promise<Figure[]> {
  await using tmp = await tempDir("vc-bench-control-");
  const dir = tmp.path;
  const natsPort = freePort();
  const monitorPort = freePort();
  const guardian = new GuardianProc(`${dir}/guardian`, { master: [`tls://127.0.0.1:${natsPort}`] });
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
    await startNodes(nodes, { n, prefix: "n", dir, guardian: guardian.url, token });
    const startSeconds = (Date.now() - startedAt) / 1000;

    // Each node looks up the next LOOKUPS nodes by name, one lookup at a time across the realm.
    const lookups: number[] = [];
    let unanswered = 0;
    for (let k = 1; k <= Math.min(LOOKUPS, n - 1); k++) {
      for (let i = 0; i < n; i++) {
        const tag = `n${(i + k) % n}`;
        const t = performance.now();
        const owners = await localGet<{ tag: string }[]>(nodes[i]!, `/resolve?tag=${tag}`);
        if (owners?.length === 1) lookups.push(performance.now() - t);
        else unanswered++;
      }
    }
    lookups.sort((a, b) => a - b);
    const counts = await peerCounts(nodes);

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
    const label = `control ${n} nodes:`;
    const pct = (q: number) => lookups[Math.min(lookups.length - 1, Math.floor(q * lookups.length))] ?? NaN;
    return [
      {
        name: `${label} lookup of a peer by name`,
        value: pct(0.5),
        unit: "ms",
        note:
          `median through the local API; p95 ${pct(0.95).toFixed(1)} ms, max ${
            (lookups.at(-1) ?? NaN).toFixed(1)
          } ms; ${lookups.length} found, ${unanswered} not; peers known per node ${
            mean(counts).toFixed(1)
          }; ` +
          `${n} nodes started in ${startSeconds.toFixed(0)} s`,
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
        note: `mean; max ${Math.max(...rss).toFixed(0)} MiB; after the window, peers known per node ` +
          `${mean(countsAfter).toFixed(1)} (before: ${mean(counts).toFixed(1)})`,
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
