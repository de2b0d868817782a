/**
 * The soak (issue 19): three nodes in namespaces, a and c unable to form a tether (UDP between them cut), so b
 * relays them. In cycles of 40 s of traffic and 15 s of quiet, a sends c a paced TCP transfer (1 MB/s, one
 * connection for the whole run, checked by hash), 100 numbered UDP datagrams a second and 5 pings a second, and b
 * pings a twice a second. Tethers dissolve after 5 s idle, so every quiet part ends them and every busy part
 * forms them again (churn); streams are replaced every two minutes (rekeys) under the transfer.
 *
 * What must hold: every TCP byte delivered intact, every datagram and ping answered, RSS and open file
 * descriptors of every process (nodes, Guardian, nats-server) flat from the end of the warm-up to the end, and
 * no error in any log.
 *
 *   deno task soak [--minutes 60]      (tests/soak_test.ts runs 5 minutes in CI)
 * @module
 */

import { parseArgs } from "node:util";
import { Proc, waitFor } from "./harness.ts";
import { type Realm, realmOnTestbed } from "./testbed.ts";
import { pingFigures } from "./faults.ts";

const ON_S = 40;
const OFF_S = 15;
const TCP_RATE = 1_000_000;
const UDP_RATE = 100;
const TCP_PORT = 5310;
const UDP_PORT = 5311;
/** Resource samples, one a second, at the end of each quiet part (after its tethers dissolved). */
const QUIET_SAMPLES = 10;
const HERE = (file: string) => new URL(file, import.meta.url).pathname;

/** One process's resources at one time. */
interface Resources {
  rssMiB: number;
  fds: number;
  /** The descriptors by kind ("socket", "pipe", "anon_inode:[eventfd]", a file's path...), for a failure's line. */
  kinds: Record<string, number>;
}

/** What the soak measured, and whether it held. */
export interface SoakReport {
  minutes: number;
  tcp: { sent: number; received?: number; intact: boolean };
  udp: { sent: number; received: number; duplicates: number; corrupt: number };
  pings: { sent: number; answered: number };
  /** Per process: after the warm-up and at the end (fewest descriptors over two cycles, see fewest()). */
  resources: Record<string, { start: Resources; end: Resources }>;
  tetherOpens: number;
  streamsFormed: number;
  /** What each node dropped, by reason (status --json `dropped`): where a lost datagram went. */
  dropped: Record<string, Record<string, number>>;
  errors: string[];
  /** What did not hold, one line each; empty when the soak passed. */
  failures: string[];
}

function resources(pid: number): Resources {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  const kinds: Record<string, number> = {};
  for (const fd of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target = "gone";
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`).replace(/:\[\d+\]$/, "");
    } catch { /* closed while listed */ }
    kinds[target] = (kinds[target] ?? 0) + 1;
  }
  return { rssMiB: rssKiB / 1024, fds: Object.values(kinds).reduce((a, b) => a + b, 0), kinds };
}

/** Per process, the sample with the fewest descriptors, with the RSS of the first or last sample. */
function fewest(samples: Record<string, Resources>[], rssOf: "first" | "last"): Record<string, Resources> {
  const out: Record<string, Resources> = {};
  for (const name of Object.keys(samples[0] ?? {})) {
    const all = samples.map((s) => s[name]!);
    const least = all.reduce((a, b) => b.fds < a.fds ? b : a);
    out[name] = { ...least, rssMiB: (rssOf === "first" ? all[0] : all.at(-1))!.rssMiB };
  }
  return out;
}

/** The processes the soak watches: each node, the Guardian, and the Master (the Guardian's nats-server). */
async function processes(realm: Realm): Promise<Record<string, number>> {
  const pids: Record<string, number> = { guardian: realm.guardian.proc!.pid };
  for (const [name, node] of realm.nodes) pids[`node ${name}`] = node.proc!.pid;
  const nats = await new Deno.Command("pgrep", { args: ["-f", `${realm.guardian.dataDir}/nats.conf`] })
    .output();
  pids["nats-server"] = Number(new TextDecoder().decode(nats.stdout).trim().split("\n")[0]);
  return pids;
}

/**
 * Lines of a log that report an error. The Guardian's log holds its nats-server's too, whose levels are marked:
 * there, only [ERR] and [FTL] lines are errors (its warnings name errors they are not, like an account's JetStream
 * that this server does not run).
 */
function errorLines(name: string, log: string): string[] {
  const leveled = /\[(INF|WRN|DBG|TRC)\]/;
  return log.split("\n")
    .filter((l) =>
      /\[(ERR|FTL)\]/.test(l) || (!leveled.test(l) && /error|fail|uncaught|panic|exception/i.test(l))
    )
    .map((l) => `${name}: ${l}`);
}

/** Runs the soak for about `minutes` (whole cycles), logging progress with `log`. */
export async function soak(minutes: number, log: (line: string) => void = console.log): Promise<SoakReport> {
  const cycles = Math.max(2, Math.round(minutes * 60 / (ON_S + OFF_S)));
  const warm = Math.max(1, Math.round(cycles / 6));
  const seconds = cycles * (ON_S + OFF_S);
  await using realm = await realmOnTestbed(["a", "b", "c"], ["--tether-idle", "5s"]);
  await realm.bed.cutUdp("a", "c");
  const [a, b] = [realm.node("a"), realm.node("b")];
  const ns = (host: string) => realm.bed.host(host).ns;
  const c = (await waitFor("a to find c", 15_000, async () => (await a.resolve("c"))[0]))!.ips[0]!;
  const aAddress = (await waitFor("b to find a", 15_000, async () => (await b.resolve("a"))[0]))!.ips[0]!;
  for (const [from, to] of [["a", c], ["b", aAddress]] as const) {
    await waitFor(
      `${from}'s first ping`,
      30_000,
      async () => (await ns(from).exec("ping", ["-c", "1", "-W", "1", to], { allowFailure: true })).success,
    );
  }
  // Quiet, so the tethers of the first pings dissolve and the first cycle starts like every other.
  await new Promise((r) => setTimeout(r, OFF_S * 1000));

  const inNs = (host: string, cmd: string[]) => ["netns", "exec", ns(host).name, ...cmd];
  const deno = (
    file: string,
    ...args: string[]
  ) => [Deno.execPath(), "run", "-A", "--quiet", HERE(file), ...args];
  await using tcpSink = new Proc(
    "tcp sink",
    "ip",
    inNs("c", deno("tcp_transfer.ts", "serve", String(TCP_PORT))),
  );
  await using udpSink = new Proc("udp sink", "ip", inNs("c", deno("udp_flow.ts", "serve", String(UDP_PORT))));
  await waitFor(
    "the sinks",
    10_000,
    () => tcpSink.output.includes("listening") && udpSink.output.includes("listening"),
  );
  const tcpBytes = TCP_RATE * ON_S * cycles;
  const cycle = [String(ON_S), String(OFF_S)];
  await using tcp = new Proc(
    "tcp",
    "ip",
    inNs(
      "a",
      deno("tcp_transfer.ts", "send", c, String(TCP_PORT), String(tcpBytes), String(TCP_RATE), ...cycle),
    ),
  );
  await using udp = new Proc(
    "udp",
    "ip",
    inNs("a", deno("udp_flow.ts", "send", c, String(UDP_PORT), String(UDP_RATE), String(seconds), ...cycle)),
  );
  const started = Date.now();
  const pings = { sent: 0, answered: 0 };
  /** Pingers that did not send what they were asked to (they failed to start, or died): a line each. */
  const pingerFailures: string[] = [];
  /** Per cycle, each process's resources at the end of its quiet part. */
  const seen: Record<string, Resources>[] = [];
  for (let i = 0; i < cycles; i++) {
    const pingers = [
      new Proc(
        "ping a-c",
        "ip",
        inNs("a", ["ping", "-D", "-i", "0.2", "-W", "2", "-c", String(ON_S * 5), c]),
      ),
      new Proc(
        "ping b-a",
        "ip",
        inNs("b", ["ping", "-D", "-i", "0.5", "-W", "2", "-c", String(ON_S * 2), aAddress]),
      ),
    ];
    for (const [p, count] of [[pingers[0]!, ON_S * 5], [pingers[1]!, ON_S * 2]] as const) {
      await p.finished();
      const f = pingFigures(p.output);
      pings.sent += f.sent;
      pings.answered += f.answered;
      if (f.sent !== count) {
        pingerFailures.push(
          `cycle ${i + 1}: ${p.name} sent ${f.sent} of ${count}: ${p.output.trim().slice(-300)}`,
        );
      }
    }
    // The last seconds of the quiet part, sampled each second: a leaked descriptor is in every sample, one
    // still closing (a tether's sockets, a report's connection) is not, so each process counts its fewest.
    const cycleEnd = started + (i + 1) * (ON_S + OFF_S) * 1000;
    const pids = await processes(realm);
    const now: Record<string, Resources> = {};
    for (let s = QUIET_SAMPLES; s > 0; s--) {
      await new Promise((r) => setTimeout(r, cycleEnd - (s - 1) * 1000 - Date.now()));
      for (const [name, pid] of Object.entries(pids)) {
        const r = resources(pid);
        const fewest = now[name] && now[name].fds <= r.fds ? now[name] : r;
        now[name] = { ...fewest, rssMiB: r.rssMiB };
      }
    }
    log(
      `cycle ${i + 1}/${cycles}: pings ${pings.answered}/${pings.sent}; ` +
        Object.entries(now).map(([n, r]) => `${n} ${r.rssMiB.toFixed(0)} MiB ${r.fds} fds`).join(", "),
    );
    seen.push(now);
  }
  // Flat means the same at the end as after the warm-up, compared over two cycles at each end: a tether kept
  // open through a quiet part holds its sockets at that cycle's samples, a leak holds them at every cycle's.
  const span = Math.max(1, Math.min(2, Math.floor((cycles - warm) / 2)));
  const start = fewest(seen.slice(warm - 1, warm - 1 + span), "first");
  const end = fewest(seen.slice(-span), "last");
  await waitFor("the transfer to end", 120_000, async () => (await tcp.finished(), true));
  await waitFor("the udp flow to end", 30_000, async () => (await udp.finished(), true));
  await tcpSink.finished().catch(() => {});
  await udpSink.stop("SIGTERM");

  const [sentBytes, sentHash] = tcp.output.trim().split(" ");
  const got = /^(\d+) ([0-9a-f]{64})/m.exec(tcpSink.output);
  const [udpReceived, duplicates, corrupt] =
    (/^(\d+) (\d+) (\d+)$/m.exec(udpSink.output) ?? [, NaN, NaN, NaN])
      .slice(1).map(Number);
  const status = (await a.status()).json as { streamsFormed?: number };
  const logs = [...realm.nodes].map(([name, n]) => [`node ${name}`, n.proc!.output] as const);
  const report: SoakReport = {
    minutes: seconds / 60,
    tcp: {
      sent: Number(sentBytes),
      received: got ? Number(got[1]) : undefined,
      intact: got !== null && got[1] === sentBytes && got[2] === sentHash && Number(sentBytes) === tcpBytes,
    },
    udp: {
      sent: Number(udp.output.trim()),
      received: udpReceived!,
      duplicates: duplicates!,
      corrupt: corrupt!,
    },
    pings,
    resources: Object.fromEntries(
      Object.keys(end).map((n) => [n, { start: start[n] ?? end[n]!, end: end[n]! }]),
    ),
    tetherOpens: logs.reduce((sum, [, l]) => sum + l.split(/tether to \S+ open/).length - 1, 0),
    streamsFormed: status.streamsFormed ?? 0,
    dropped: Object.fromEntries(
      await Promise.all(
        [...realm.nodes].map(async (
          [name, n],
        ) => [name, (await n.status()).json.dropped as Record<string, number>]),
      ),
    ),
    errors: [...logs, ["guardian", realm.guardian.proc!.output] as const].flatMap(([n, l]) =>
      errorLines(n, l)
    ),
    failures: [],
  };
  const fail = (line: string) => report.failures.push(line);
  if (!report.tcp.intact) fail(`TCP: ${report.tcp.received}/${report.tcp.sent} bytes, not intact`);
  const u = report.udp;
  if (u.received !== u.sent || u.duplicates || u.corrupt) {
    fail(`UDP: ${u.received}/${u.sent} datagrams, ${u.duplicates} duplicated, ${u.corrupt} corrupt`);
  }
  if (pings.answered !== pings.sent) fail(`pings: ${pings.answered}/${pings.sent} answered`);
  for (const f of pingerFailures) fail(f);
  for (const [name, { start, end }] of Object.entries(report.resources)) {
    // Flat: within what a garbage-collected heap wanders by, and not one descriptor more than a handful.
    if (end.rssMiB > start.rssMiB * 1.2 + 10) fail(`${name}: RSS ${start.rssMiB} -> ${end.rssMiB} MiB`);
    if (end.fds > start.fds + 4) {
      fail(
        `${name}: ${start.fds} -> ${end.fds} open file descriptors (${JSON.stringify(start.kinds)} -> ${
          JSON.stringify(end.kinds)
        })`,
      );
    }
  }
  // Each busy part forms the tethers again; each stream lives two minutes.
  if (report.tetherOpens < cycles) fail(`only ${report.tetherOpens} tethers formed in ${cycles} cycles`);
  const rekeys = Math.floor(cycles * ON_S / 120);
  if (report.streamsFormed < 1 + rekeys) {
    fail(`a formed ${report.streamsFormed} streams (${rekeys} rekeys due)`);
  }
  for (const e of report.errors) fail(`log: ${e}`);
  return report;
}

/** The report as lines for a person. */
export function describeSoak(r: SoakReport): string {
  const lines = [
    `soak, ${r.minutes.toFixed(1)} minutes: TCP ${r.tcp.received}/${r.tcp.sent} bytes ${
      r.tcp.intact ? "intact" : "NOT intact"
    }; ` +
    `UDP ${r.udp.received}/${r.udp.sent} datagrams (${r.udp.duplicates} duplicated, ${r.udp.corrupt} corrupt); ` +
    `pings ${r.pings.answered}/${r.pings.sent}; ${r.tetherOpens} tethers formed; a formed ${r.streamsFormed} streams`,
    `  dropped by the nodes: ${JSON.stringify(r.dropped)}`,
    ...Object.entries(r.resources).map(([n, { start, end }]) =>
      `  ${n}: RSS ${start.rssMiB.toFixed(1)} -> ${end.rssMiB.toFixed(1)} MiB, fds ${start.fds} -> ${end.fds}`
    ),
    r.failures.length === 0 ? "held" : `did NOT hold:\n${r.failures.map((f) => `  ${f}`).join("\n")}`,
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { minutes: { type: "string", default: "60" } } });
  const report = await soak(Number(values.minutes));
  console.log(describeSoak(report));
  Deno.exit(report.failures.length === 0 ? 0 : 1);
}
