/**
 * Tunnel benchmark: TCP throughput (iperf3) and ping RTT between two network namespaces, through veilnet, through
 * wireguard-go and through nebula, on the same testbed in the same run, side by side.
 * @module
 */

import { run } from "../tests/netns.ts";
import { Proc, waitFor } from "../tests/harness.ts";
import { realmOnTestbed, Testbed } from "../tests/testbed.ts";
import { netnsUnavailable } from "../tests/netns.ts";
import type { Figure } from "./crypto.ts";

const TOOLS = ["iperf3", "wireguard-go", "wg", "nebula", "nebula-cert", "ping"];

interface Measured {
  mbits: number;
  rttMs: number;
}

async function missingTools(): Promise<string[]> {
  const missing: string[] = [];
  for (const t of TOOLS) {
    if (!(await run("sh", ["-c", `command -v ${t}`], { allowFailure: true })).success) missing.push(t);
  }
  return missing;
}

/** iperf3 from a to b's `address` for `seconds`, and 20 pings. */
async function measure(bed: Testbed, address: string, seconds: number): Promise<Measured> {
  const a = bed.host("a").ns;
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
  const client = await a.exec("iperf3", ["-c", address, "-t", String(seconds), "-J"]);
  const mbits = JSON.parse(client.text).end.sum_received.bits_per_second / 1e6;
  const ping = await a.exec("ping", ["-c", "20", "-i", "0.05", address]);
  const rttMs = Number(/= [\d.]+\/([\d.]+)\//.exec(ping.text)?.[1]);
  return { mbits, rttMs };
}

async function veilnet(seconds: number): Promise<Measured> {
  await using realm = await realmOnTestbed(["a", "b"]);
  const a = realm.node("a");
  // Nodes learn each other on demand: a looks b up by name, as its first packet or DNS question would.
  const peer = await waitFor("a to find b", 15_000, async () => (await a.resolve("b"))[0]);
  const address = peer.ips[0]!;
  await waitFor(
    "the tunnel",
    20_000,
    async () =>
      (await realm.bed.host("a").ns.exec("ping", ["-c", "1", "-W", "1", address], { allowFailure: true }))
        .success,
  );
  return await measure(realm.bed, address, seconds);
}

async function wireguard(seconds: number): Promise<Measured> {
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
    return await measure(bed, "10.99.1.2", seconds);
  } finally {
    for (const p of procs) await p.stop();
  }
}

async function nebula(seconds: number): Promise<Measured> {
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
    return await measure(bed, "10.99.2.2", seconds);
  } finally {
    for (const p of procs) await p.stop();
  }
}

/**
 * veilnet with no tether possible: UDP is dropped in a's namespace, so everything rides the backup pipeline (the
 * Master, over TCP). With the underlay's own ping for comparison.
 */
async function veilnetBackup(seconds: number): Promise<Measured & { underlayRttMs: number; path: string }> {
  await using realm = await realmOnTestbed(["a", "b"]);
  const ns = realm.bed.host("a").ns;
  await ns.exec("nft", ["add", "table", "inet", "noudp"]);
  await ns.exec("nft", ["add", "chain", "inet", "noudp", "out", "{ type filter hook output priority 0; }"]);
  await ns.exec("nft", ["add", "rule", "inet", "noudp", "out", "meta", "l4proto", "udp", "drop"]);
  const a = realm.node("a");
  // Nodes learn each other on demand: a looks b up by name, as its first packet or DNS question would.
  const peer = await waitFor("a to find b", 15_000, async () => (await a.resolve("b"))[0]);
  const address = peer.ips[0]!;
  await waitFor(
    "the backup pipeline",
    20_000,
    async () => (await ns.exec("ping", ["-c", "1", "-W", "1", address], { allowFailure: true })).success,
  );
  const measured = await measure(realm.bed, address, seconds);
  const underlay = await ns.exec("ping", ["-c", "20", "-i", "0.05", realm.bed.host("b").address]);
  const path = (await a.peers()).find((p) => p.ips[0] === address) as { path?: string } | undefined;
  return {
    ...measured,
    underlayRttMs: Number(/= [\d.]+\/([\d.]+)\//.exec(underlay.text)?.[1]),
    path: path?.path ?? "?",
  };
}

/** The three tunnels, measured one after another on fresh testbeds, and veilnet's backup pipeline alone. */
export async function tunnelBench(options: { seconds?: number } = {}): Promise<Figure[]> {
  const seconds = options.seconds ?? 8;
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
  const w = await wireguard(seconds);
  const n = await nebula(seconds);
  return [
    { name: "TCP through veilnet", value: v.mbits, unit: "Mbit/s", note: `ping ${v.rttMs.toFixed(3)} ms` },
    {
      name: "TCP through veilnet, backup pipeline only",
      value: bk.mbits,
      unit: "Mbit/s",
      note: `ping ${bk.rttMs.toFixed(3)} ms (underlay ${bk.underlayRttMs.toFixed(3)} ms), path ${bk.path}`,
    },
    {
      name: "TCP through wireguard-go",
      value: w.mbits,
      unit: "Mbit/s",
      note: `ping ${w.rttMs.toFixed(3)} ms`,
    },
    { name: "TCP through nebula", value: n.mbits, unit: "Mbit/s", note: `ping ${n.rttMs.toFixed(3)} ms` },
    {
      name: "veilnet / wireguard-go",
      value: v.mbits / w.mbits,
      unit: "x",
      note: `RTT ${(v.rttMs / w.rttMs).toFixed(2)}x`,
    },
    {
      name: "veilnet / nebula",
      value: v.mbits / n.mbits,
      unit: "x",
      note: `RTT ${(v.rttMs / n.rttMs).toFixed(2)}x`,
    },
  ];
}
