/**
 * NAT routers for the namespace testbed: a testbed host turned into a router (nftables masquerade on its bridge
 * side) with a LAN behind it, and one namespace on that LAN whose only way out is through the router, as an edge
 * host behind a home or office router. The LAN namespace is deleted on dispose; the router is the testbed's.
 * Also the TURN server such hosts use on the "internet" side: a real coturn with a shared secret.
 * @module
 */

import dgram from "node:dgram";
import { probeStun } from "../src/netcheck/stun_probe.ts";
import { Proc, waitFor } from "./harness.ts";
import { Netns, run } from "./netns.ts";
import type { Host } from "./testbed.ts";

/**
 * What the router does to traffic from its LAN:
 * - `masquerade`: Linux's usual source NAT, which keeps one mapping per local socket (endpoint-independent);
 * - `random`: masquerade with a random source port per connection (port-randomising, "symmetric");
 * - `drop-udp`: masquerade, and every UDP packet it would forward is dropped (a network that allows only TCP).
 */
export type NatKind = "masquerade" | "random" | "drop-udp";

/** A namespace behind a NAT router. */
export interface NatHost extends AsyncDisposable {
  ns: Netns;
  /** Its address on the LAN (192.168.N.2). */
  address: string;
  /** The address the rest of the testbed sees it as: the router's. */
  publicAddress: string;
}

/**
 * The nftables ruleset of a router of `kind` whose outside interface is eth0. Like any home or office router, it
 * refuses connections from outside to itself: an unsolicited packet accepted to the router's own address would
 * leave a connection-tracking entry on that address and port, and the router would then give its LAN host's next
 * outgoing packet to that sender another source port (a "clash"), so hole punching between two such routers
 * would fail for a reason no real router has.
 */
export function natRules(kind: NatKind): string {
  return [
    "table ip veilnet_test_nat {",
    "  chain post {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "eth0" masquerade${kind === "random" ? " random" : ""}`,
    "  }",
    "  chain in {",
    "    type filter hook input priority filter; policy accept;",
    '    iifname "eth0" ct state new drop',
    "  }",
    ...(kind === "drop-udp"
      ? [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    meta l4proto udp drop",
        "  }",
      ]
      : []),
    "}",
  ].join("\n");
}

/**
 * Makes `router` (a testbed host) a NAT router of `kind` for LAN 192.168.`lan`.0/24 and returns a new namespace on
 * that LAN (192.168.`lan`.2, default route through the router).
 */
export async function behindNat(router: Host, kind: NatKind, lan: number): Promise<NatHost> {
  const ns = await Netns.create(`lan${lan}`);
  try {
    const r = (cmd: string, args: string[]) => router.ns.exec(cmd, args);
    await r("ip", ["link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns.name]);
    await r("ip", ["addr", "add", `192.168.${lan}.1/24`, "dev", "lan0"]);
    await r("ip", ["link", "set", "lan0", "up"]);
    await r("sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
    await run("ip", ["netns", "exec", router.ns.name, "nft", "-f", "-"], { stdin: natRules(kind) });
    await ns.exec("ip", ["addr", "add", `192.168.${lan}.2/24`, "dev", "eth0"]);
    await ns.exec("ip", ["link", "set", "eth0", "up"]);
    await ns.exec("ip", ["route", "add", "default", "via", `192.168.${lan}.1`]);
  } catch (error) {
    await ns[Symbol.asyncDispose]();
    throw error;
  }
  return {
    ns,
    address: `192.168.${lan}.2`,
    publicAddress: router.address,
    [Symbol.asyncDispose]: () => ns[Symbol.asyncDispose](),
  };
}

/** Whether coturn's turnserver is installed; in CI it must be (setup.sh installs it). */
export function turnserverMissing(): boolean {
  const found = (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/turnserver`).isFile;
    } catch {
      return false;
    }
  });
  if (!found && Deno.env.get("CI")) {
    throw new Error("TURN tests need coturn (turnserver) in CI: run setup.sh");
  }
  return !found;
}

/** A UDP port free on `host`, with the next one free too (coturn takes both). */
export async function freeUdpPair(host: string): Promise<number> {
  const bindable = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => s.close(() => resolve(false)));
      s.bind(port, host, () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    if (await bindable(port) && await bindable(port + 1)) return port;
  }
  throw new Error(`no free UDP port pair on ${host}`);
}

/**
 * coturn with a shared secret (`use-auth-secret`, as an operator would run it next to the Guardian) on
 * `host:port`, its state in `dir`; resolves once it answers STUN.
 */
export async function coturn(dir: string, host: string, port: number, secret: string): Promise<Proc> {
  const proc = new Proc("coturn", "turnserver", [
    "-n", // no configuration file: everything is on this line
    "--listening-ip",
    host,
    "--relay-ip",
    host,
    "--listening-port",
    String(port),
    "--use-auth-secret",
    `--static-auth-secret=${secret}`,
    "--realm",
    "veilnet.test",
    "--no-tls",
    "--no-dtls",
    "--no-cli",
    "--db",
    `${dir}/turndb`,
    "--pidfile",
    `${dir}/turnserver.pid`,
    "--log-file",
    "stdout",
    "--simple-log",
  ]);
  // coturn answers STUN Binding requests too: once it does, it is ready.
  await waitFor(`coturn on ${host}:${port}`, 10_000, async () => {
    if ((await Promise.race([proc.done, Promise.resolve(undefined)])) !== undefined) {
      throw new Error(`turnserver exited: ${proc.output}`);
    }
    return (await probeStun(host, { ports: [port], timeoutMs: 300 }))[0]!.mapped !== undefined;
  });
  return proc;
}
