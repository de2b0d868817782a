/**
 * `deno task demo`: a whole realm on one machine. A Guardian with its Master (an embedded nats-server) on a bridge,
 * and three nodes, a, b and c, each a real `veilnet-conflux run` in its own network namespace with a TUN device and
 * a DNS server. UDP between a and c is cut, so a and c reach each other only through b, which relays what it cannot
 * read. The demo shows the peers, the paths, names, a ping by name and a throughput figure, then removes
 * everything: on success, on failure (exit 1 with the reason) and on Ctrl-C or SIGTERM (exit 130).
 *
 * Node logs stay quiet; with VEILNET_DEBUG=1 they are printed as they come, prefixed with the node's name.
 * @module
 */

import type { NodeStatus, PeerStatus } from "../src/agent/status.ts";
import { cli, type NodeProc, type Proc } from "../tests/harness.ts";
import { type Netns, netnsUnavailable } from "../tests/netns.ts";
import { type Realm, realmOnTestbed } from "../tests/testbed.ts";

const NAMES = ["a", "b", "c"];
const THROUGHPUT_SECONDS = 4;
const THROUGHPUT_PORT = 5201;
const DEBUG = Boolean(Deno.env.get("VEILNET_DEBUG"));
const PROBE = new URL("./throughput.ts", import.meta.url).pathname;
const MAIN = new URL("../main.ts", import.meta.url).pathname;

const started = performance.now();
const elapsed = (since = started) => `${((performance.now() - since) / 1000).toFixed(1)} s`;
const log = (line = "") => console.log(line);
const indent = (text: string, prefix = "   ") => text.trimEnd().split("\n").map((l) => prefix + l).join("\n");

let stepNumber = 0;
let nodesStarted = false;
function step(what: string): void {
  log();
  log(`${++stepNumber}. ${what}`);
}

/** A failure the user can act on: printed as one line, without a stack. */
class DemoError extends Error {}

// ---------------------------------------------------------------------------------------------------------------
// Ctrl-C and SIGTERM: the first one aborts whatever is running and lets the disposals below run; the demo then
// exits 130. Further signals while cleaning up are ignored (a terminal's Ctrl-C reaches every process of the group,
// and `deno task` forwards it too, so several arrive at once).

class Interrupted extends Error {}
/** Aborted (SIGTERM to the commands the demo runs) on interruption and when cleanup starts. */
const children = new AbortController();
let interruptedBy: Deno.Signal | undefined;
const interrupted = Promise.withResolvers<never>();
interrupted.promise.catch(() => {});

function onSignal(signal: Deno.Signal): void {
  if (interruptedBy) return;
  interruptedBy = signal;
  log();
  log(`${signal}: stopping the demo and cleaning up (a few seconds)...`);
  children.abort();
  interrupted.reject(new Interrupted(signal));
}
const onInt = () => onSignal("SIGINT");
const onTerm = () => onSignal("SIGTERM");

/** `promise`, or the interruption if it comes first. */
function unlessInterrupted<T>(promise: Promise<T>): Promise<T> {
  return Promise.race([promise, interrupted.promise]);
}

function sleep(ms: number): Promise<void> {
  return unlessInterrupted(new Promise((r) => setTimeout(r, ms)));
}

/** Polls `check` until it returns a value (not undefined/false); throws after `ms` naming `what`. */
async function until<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined | false>,
): Promise<T> {
  const deadline = performance.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await unlessInterrupted(check());
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      if (error instanceof Interrupted) throw error;
      last = error;
    }
    if (performance.now() > deadline) {
      const why = last instanceof Error ? ` (last error: ${last.message.split("\n")[0]})` : "";
      throw new DemoError(`timed out after ${ms / 1000} s waiting for ${what}${why}`);
    }
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Commands

interface Output {
  ok: boolean;
  code: number;
  text: string;
  errors: string;
}

/**
 * Runs a command in `ns` (or here, without one). Killed when the demo is interrupted or starts cleaning up, unless
 * it is part of the cleanup itself (`cleanup: true`).
 */
async function exec(
  ns: Netns | undefined,
  cmd: string,
  args: string[],
  options: { allowFailure?: boolean; cleanup?: boolean } = {},
): Promise<Output> {
  const [program, argv] = ns ? ["ip", ["netns", "exec", ns.name, cmd, ...args]] : [cmd, args];
  const command = new Deno.Command(program, {
    args: argv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: options.cleanup ? undefined : children.signal,
  });
  const out = await (options.cleanup ? command.output() : unlessInterrupted(command.output()));
  const result = {
    ok: out.success,
    code: out.code,
    text: new TextDecoder().decode(out.stdout),
    errors: new TextDecoder().decode(out.stderr),
  };
  if (!result.ok && !options.allowFailure) {
    throw new DemoError(
      `${cmd} ${args.join(" ")} exited ${out.code}: ${result.errors.trim() || result.text.trim()}`,
    );
  }
  return result;
}

function onPath(command: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${command}`).isFile;
    } catch {
      return false;
    }
  });
}

/** Runs the node CLI against `node`'s local API; its stdout, or a DemoError with its stderr. */
async function nodeCli(node: NodeProc, args: string[]): Promise<string> {
  const r = await unlessInterrupted(cli(args, node.env));
  if (r.code !== 0) {
    throw new DemoError(`veilnet-conflux ${args.join(" ")} on ${node.tag}: ${r.stderr.trim()}`);
  }
  return r.stdout;
}

const peersOf = async (node: NodeProc) =>
  JSON.parse(await nodeCli(node, ["peers", "--json"])) as PeerStatus[];
const statusOf = async (node: NodeProc) =>
  JSON.parse(await nodeCli(node, ["status", "--json"])) as NodeStatus;

// ---------------------------------------------------------------------------------------------------------------
// The pieces of the demo

/** Everything the demo needs, checked before anything is made, so that a missing piece is one clear line. */
async function checkMachine(): Promise<{ nft: boolean }> {
  if (Deno.build.os !== "linux") {
    throw new DemoError("the demo needs Linux (network namespaces, TUN devices)");
  }
  let why: string | undefined;
  try {
    why = netnsUnavailable();
  } catch (error) {
    why = (error as Error).message;
  }
  if (why === "needs root") {
    throw new DemoError("not running as root: the demo creates network namespaces, a bridge and TUN devices");
  }
  if (why) {
    const fix = why.includes("iproute2") ? ": 'bash setup.sh deno task demo' (as root) installs it" : "";
    throw new DemoError(`the demo cannot create network namespaces here: ${why}${fix}`);
  }
  const missing = ["nats-server", "ping", "dig"].filter((c) => !onPath(c));
  if (missing.length > 0) {
    throw new DemoError(
      `missing ${missing.join(", ")}: 'bash setup.sh deno task demo' (as root) installs it`,
    );
  }
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    throw new DemoError(
      "/dev/net/tun is missing: load the tun module (modprobe tun) or give the container the device",
    );
  }
  // `ip` exists; make sure namespaces really work here (a container may forbid them).
  const probe = `vc-probe-${Deno.pid}`;
  const made = await exec(undefined, "ip", ["netns", "add", probe], { allowFailure: true });
  await exec(undefined, "ip", ["netns", "del", probe], { allowFailure: true, cleanup: true });
  if (!made.ok) throw new DemoError(`'ip netns' does not work here: ${made.errors.trim()}`);
  return { nft: onPath("nft") };
}

/**
 * Drops all UDP between hosts `a` and `b` (both directions), as a firewall between them would: with nftables in
 * a's namespace when `nft` is there (as tests/relay_test.ts does), otherwise with a policy-routing rule on each side.
 */
async function cutUdp(realm: Realm, a: string, b: string, nft: boolean): Promise<string> {
  const [ha, hb] = [realm.bed.host(a), realm.bed.host(b)];
  if (nft) {
    const run = (...args: string[]) => exec(ha.ns, "nft", args);
    await run("add", "table", "inet", "cut");
    await run("add", "chain", "inet", "cut", "out", "{ type filter hook output priority 0; policy accept; }");
    await run("add", "chain", "inet", "cut", "in", "{ type filter hook input priority 0; policy accept; }");
    await run(...`add rule inet cut out ip daddr ${hb.address} meta l4proto udp drop`.split(" "));
    await run(...`add rule inet cut in ip saddr ${hb.address} meta l4proto udp drop`.split(" "));
    return `nftables in ${a}'s namespace: UDP to and from ${hb.address} (${b}) dropped`;
  }
  await exec(ha.ns, "ip", ["rule", "add", "to", hb.address, "ipproto", "udp", "prohibit"]);
  await exec(hb.ns, "ip", ["rule", "add", "to", ha.address, "ipproto", "udp", "prohibit"]);
  return `no nft here, so policy routing: ${a} cannot send UDP to ${hb.address}, nor ${b} to ${ha.address}`;
}

/** Prints the nodes' (and the Guardian's) output as it comes, prefixed with their names (VEILNET_DEBUG only). */
function tailLogs(procs: Proc[]): Disposable {
  const seen = new Map<Proc, number>();
  const flush = () => {
    for (const p of procs) {
      const out = p.output;
      const from = seen.get(p) ?? 0;
      const end = out.lastIndexOf("\n") + 1;
      if (end <= from) continue;
      seen.set(p, end);
      for (const line of out.slice(from, end - 1).split("\n")) console.error(`      [${p.name}] ${line}`);
    }
  };
  const timer = setInterval(flush, 250);
  return {
    [Symbol.dispose]() {
      clearInterval(timer);
      flush();
    },
  };
}

/** What the cleanup must have removed: checked afterwards, and anything still there is named. */
interface Footprint {
  workDir: string;
  namespaces: string[];
  links: string[];
}

async function leftovers(f: Footprint): Promise<string[]> {
  const left: string[] = [];
  const netns = (await exec(undefined, "ip", ["netns", "list"], { allowFailure: true, cleanup: true })).text;
  for (const ns of f.namespaces) {
    if (netns.split("\n").some((l) => l.split(" ")[0] === ns)) left.push(`netns ${ns}`);
  }
  for (const link of f.links) {
    if ((await exec(undefined, "ip", ["link", "show", link], { allowFailure: true, cleanup: true })).ok) {
      left.push(`link ${link}`);
    }
  }
  // Every process the demo started (nodes, Guardian, nats-server, probes) inherited TMPDIR=workDir.
  const mark = new TextEncoder().encode(`TMPDIR=${f.workDir}\0`);
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    let environ: Uint8Array;
    try {
      environ = Deno.readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue;
    }
    if (!contains(environ, mark)) continue;
    let cmdline = "";
    try {
      cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim();
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone meanwhile */ }
    left.push(`process ${pid} (${cmdline.slice(0, 60)}; killed)`);
  }
  return left;
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

function bytes(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/** The average of ping's summary line, in ms. */
function pingAverage(text: string): string {
  const avg = /= [\d.]+\/([\d.]+)\//.exec(text)?.[1];
  return avg ? `${Number(avg).toFixed(1)} ms` : "?";
}

// ---------------------------------------------------------------------------------------------------------------
// The demo

/** A realm running, with what the steps need to know about it. */
interface Stage {
  realm: Realm;
  status: Map<string, NodeStatus>;
  /** A node's overlay IPv4 address. */
  ip: (name: string) => string;
}

/** Starts the realm; everything it makes is removed by `cleanup` and recorded in `footprint` for the final check. */
async function startRealm(cleanup: AsyncDisposableStack, footprint: Footprint): Promise<Stage> {
  step("Starting the Guardian and its Master (nats-server) on a bridge, and nodes a, b, c in namespaces.");
  const t0 = performance.now();
  let tail: Disposable | undefined; // stopped after the realm, so that the nodes' last words are shown too
  cleanup.defer(() => tail?.[Symbol.dispose]());
  nodesStarted = true;
  const starting = realmOnTestbed(NAMES);
  let realm: Realm;
  try {
    realm = await unlessInterrupted(starting);
  } catch (error) {
    // Interrupted while starting: let the start finish (it cleans up after itself if it fails), then stop it.
    await starting.then((r) => r[Symbol.asyncDispose](), () => {});
    throw error;
  }
  cleanup.use(realm);
  if (DEBUG) tail = tailLogs([realm.guardian.proc!, ...NAMES.map((n) => realm.node(n).proc!)]);
  cleanup.defer(() => {
    children.abort();
    log();
    log("Cleaning up: stopping the nodes, the Guardian and the Master; removing namespaces, veths, bridge.");
  });

  footprint.namespaces = [...realm.bed.hosts.values()].map((h) => h.ns.name);
  const hub = await exec(undefined, "ip", ["-o", "-4", "addr", "show", "to", `${realm.bed.hub}/32`]);
  const bridge = hub.text.split(/\s+/)[1] ?? "?";
  const ports = await exec(undefined, "ip", ["-o", "link", "show", "master", bridge], { allowFailure: true });
  footprint.links = [bridge, ...[...ports.text.matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]!)];

  const status = new Map<string, NodeStatus>();
  for (const name of NAMES) status.set(name, await statusOf(realm.node(name)));
  const ip = (name: string) => status.get(name)!.ips[0]!;
  log(`   Guardian ${realm.guardian.url} (realm "${status.get("a")!.realm}"), bridge ${bridge}`);
  log(indent(table([
    ["NODE", "NAMESPACE", "UNDERLAY", "OVERLAY", "", "CERTIFICATE"],
    ...NAMES.map((n) => {
      const s = status.get(n)!;
      const h = realm.bed.host(n);
      const cert = s.connected.guardian ? "valid" : "none";
      return [n, h.ns.name, h.address, s.ips[0] ?? "", s.ips[1] ?? "", cert];
    }),
  ])));
  log(`   (up in ${elapsed(t0)})`);
  return { realm, status, ip };
}

/** The steps that show the realm at work; returns the summary lines. */
async function tour({ realm, status, ip }: Stage, nft: boolean): Promise<string[]> {
  const a = realm.node("a");
  const nsA = realm.bed.host("a").ns;

  step("Cutting all UDP between a and c, so that they cannot form a direct tether.");
  log(`   ${await cutUdp(realm, "a", "c", nft)}`);

  step("Nobody announces itself to everyone: until a node needs another, it knows none (`peers` on a).");
  log(indent((await nodeCli(a, ["peers"])).trim() || "(no peers)", "     "));

  step(
    "Names: a's DNS server looks each tag up on demand (a lookup only its owner hears) and answers from the",
  );
  log("   certificate that comes back, verified.");
  const t1 = performance.now();
  for (const name of ["c.veilnet", "b.veilnet"]) {
    const dig = await exec(nsA, "dig", [`@${ip("a")}`, name, "+short", "+tries=2", "+time=3"]);
    log(`   $ dig @${ip("a")} ${name} +short        (in a's namespace)`);
    log(indent(dig.text || "(no answer)", "     "));
    const expected = ip(name[0]!);
    if (!dig.text.split("\n").includes(expected)) {
      throw new DemoError(`dig ${name} answered "${dig.text.trim()}", expected ${expected}`);
    }
  }
  log(`   (both found in ${elapsed(t1)}; each owner learned a from the same exchange)`);

  step("First packets: a forms a direct tether to b; to c (no UDP) it goes through the relay b.");
  const t2 = performance.now();
  const warm = async (tag: string, want: PeerStatus["path"]) => {
    const peer = await until(`a's path to ${tag} to become ${want}`, 30_000, async () => {
      await exec(nsA, "ping", ["-c", "1", "-W", "1", ip(tag)], { allowFailure: true });
      const p = (await peersOf(a)).find((p) => p.tag === tag);
      return p?.path === want && p;
    });
    return `a → ${tag}: ${peer.path}${peer.via ? ` via ${peer.via}` : ""} after ${elapsed(t2)}`;
  };
  for (const line of await Promise.all([warm("b", "direct"), warm("c", "relay")])) log(`   ${line}`);

  step(`Ping by name from a, whose namespace's resolv.conf says \`nameserver ${ip("a")}\` (its own node).`);
  await nsA.resolvConf(`nameserver ${ip("a")}\n`);
  const pings = new Map<string, string>();
  // -n: no reverse lookups of the replies' addresses (they would wait for an upstream these namespaces lack).
  for (const [tag, path] of [["b", "direct"], ["c", "through the relay b"]]) {
    log(`   $ ping -c 3 -4 -n -W 2 ${tag}.veilnet        (${path})`);
    const ping = await exec(nsA, "ping", ["-c", "3", "-4", "-n", "-W", "2", `${tag}.veilnet`], {
      allowFailure: true,
    });
    // The replies and the summary, verbatim (not the banner, whose name iputils leaves blank for IPv4 here).
    const lines = (ping.text + ping.errors).split("\n").filter((l) => l.trim() && !/^(PING|---)/.test(l));
    log(indent(lines.join("\n"), "     "));
    if (!ping.ok || !ping.text.includes(`from ${ip(tag)}: `)) {
      throw new DemoError(`ping ${tag}.veilnet from a failed (exit ${ping.code}): ${lines.at(-1) ?? ""}`);
    }
    pings.set(tag, pingAverage(ping.text));
  }

  step("Paths as each node sees them (`veilnet-conflux peers --json`: path, via, round trip, bytes).");
  const rows = [["NODE", "PEER", "PATH", "VIA", "RTT", "SENT", "RECEIVED"]];
  for (const name of NAMES) {
    for (const p of (await peersOf(realm.node(name))).sort((x, y) => x.tag.localeCompare(y.tag))) {
      const rtt = p.rttMs === undefined ? "-" : `${p.rttMs.toFixed(1)} ms`;
      rows.push([name, p.tag, p.path, p.via ?? "-", rtt, bytes(p.txBytes), bytes(p.rxBytes)]);
    }
  }
  log(indent(table(rows)));
  const carried = (await statusOf(realm.node("b"))).relayed;
  const relayed = `${carried.messages} sealed messages (${bytes(carried.bytes)})`;
  log(`   b relayed ${relayed} between a and c, without a key to open any of them.`);

  step(`Throughput: ${THROUGHPUT_SECONDS} s of one TCP stream from a to b over the overlay (direct).`);
  const probe = async (ns: Netns, ...args: string[]) => {
    const r = await exec(ns, Deno.execPath(), ["run", "-A", "--quiet", PROBE, ...args], {
      allowFailure: true,
    });
    const who = args[0] === "send" ? "sender on a" : "receiver on b";
    if (!r.ok) throw new DemoError(`throughput ${who}: ${r.errors.trim() || `exit ${r.code}`}`);
    return r;
  };
  const sink = probe(realm.bed.host("b").ns, "serve", String(THROUGHPUT_PORT));
  sink.catch(() => {}); // awaited below; the sender's failure, if any, is the one to report
  const sender = await probe(nsA, "send", ip("b"), String(THROUGHPUT_PORT), String(THROUGHPUT_SECONDS));
  const sent = JSON.parse(sender.text) as { bytes: number };
  const got = JSON.parse((await sink).text) as { bytes: number; seconds: number };
  if (got.bytes !== sent.bytes) throw new DemoError(`a sent ${sent.bytes} bytes but b received ${got.bytes}`);
  const mbits = (got.bytes * 8 / got.seconds / 1e6).toFixed(0);
  const figure = `${bytes(got.bytes)} in ${got.seconds.toFixed(1)} s`;
  log(`   ${mbits} Mbit/s (${figure}; b received every byte a sent)`);

  return [
    `realm "${status.get("a")!.realm}": a Guardian with its Master; a, b, c at ${NAMES.map(ip).join(", ")}`,
    `a ↔ b direct; a ↔ c through the relay b (UDP between a and c cut)`,
    `c.veilnet → ${ip("c")}; ping b.veilnet ${pings.get("b")}, c.veilnet ${pings.get("c")} on average`,
    `a → b: ${mbits} Mbit/s of TCP over the overlay`,
  ];
}

/** On failure: each node's paths and what its data plane dropped, as evidence for whoever looks into it. */
async function showState(realm: Realm): Promise<void> {
  log();
  log("State of the nodes when it failed (peer: path, via; data messages dropped, by reason):");
  for (const name of NAMES) {
    const node = realm.node(name);
    const paths = (await peersOf(node)).map((p) => `${p.tag}: ${p.path}${p.via ? ` via ${p.via}` : ""}`);
    const drops = Object.entries((await statusOf(node)).dropped).map(([why, n]) => `${why} ${n}`);
    log(`   ${name}  ${paths.join(", ")}; dropped: ${drops.join(", ") || "nothing"}`);
  }
}

/** The error the demo failed with, when it was not a consequence of Ctrl-C or SIGTERM. */
let failure: unknown;

async function demo(): Promise<void> {
  const { nft } = await unlessInterrupted(checkMachine());
  log("veilnet-conflux demo: a realm of three nodes on this machine, each in its own network namespace.");
  log(`Ctrl-C stops it and removes everything.${DEBUG ? "" : " VEILNET_DEBUG=1 shows the node logs."}`);

  step("Checking this machine (root, namespaces, /dev/net/tun, nats-server, ping, dig); caching the code.");
  // A fresh checkout fetches its npm packages here, once, rather than in three nodes starting at the same time.
  await exec(undefined, Deno.execPath(), ["cache", "--quiet", MAIN, PROBE]);
  log(`   ok${nft ? "" : " (no nft here: UDP will be cut with ip rules instead of nftables)"}`);

  // All the demo's files go in one directory, removed at the end; its processes inherit TMPDIR, which is also how
  // the final check finds any of them still running.
  const workDir = await Deno.makeTempDir({ prefix: "veilnet-demo-" });
  Deno.env.set("TMPDIR", workDir);
  const footprint: Footprint = { workDir, namespaces: [], links: [] };
  await using cleanup = new AsyncDisposableStack();
  cleanup.defer(async () => {
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
    const left = await leftovers(footprint);
    const where = "no namespace, bridge, veth, process or file of this demo";
    log(
      left.length > 0
        ? `   left behind (remove by hand): ${left.join(", ")}`
        : `   nothing left: ${where}; ${elapsed()} in all`,
    );
  });
  let stage: Stage | undefined;
  try {
    stage = await startRealm(cleanup, footprint);
    const summary = await tour(stage, nft);
    log();
    log(`Summary (${elapsed()})`);
    for (const line of summary) log(`   ${line}`);
  } catch (error) {
    if (!interruptedBy) {
      failure = error;
      if (stage) await showState(stage.realm).catch(() => {});
    }
    throw error;
  }
}

Deno.addSignalListener("SIGINT", onInt);
Deno.addSignalListener("SIGTERM", onTerm);
let code = 0;
try {
  await demo();
} catch (error) {
  if (interruptedBy && error !== failure) {
    code = 130;
  } else {
    code = 1;
    if (DEBUG && !(error instanceof DemoError)) console.error(error);
    const message = (error instanceof Error ? error.message : String(error)).split("\n")[0];
    const hint = nodesStarted && !DEBUG ? " (VEILNET_DEBUG=1 shows the node logs)" : "";
    console.error(`demo failed: ${message}${hint}`);
  }
}
if (interruptedBy && code === 0) code = 130;
Deno.removeSignalListener("SIGINT", onInt);
Deno.removeSignalListener("SIGTERM", onTerm);
Deno.exit(code);
