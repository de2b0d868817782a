/**
 * The namespace testbed: a bridge in this (the test's) namespace, where the Guardian and the Master run, and one
 * network namespace per host, each joined to the bridge by a veth pair. Hosts reach the hub at 10.201.X.1 and
 * each other at 10.201.X.N, with X different for each testbed so several can run at once. Paths are cut with nftables inside a host's namespace. Everything is removed on
 * dispose, even after a failure.
 * @module
 */

import { freePort, GuardianProc, natsServer, NodeProc, type Proc, waitFor } from "./harness.ts";
import { Netns, run } from "./netns.ts";

/** One host of the testbed. */
export interface Host {
  name: string;
  ns: Netns;
  /** Its underlay address. */
  address: string;
}

/** A bridge and hosts around it. */
export class Testbed implements AsyncDisposable {
  readonly hosts = new Map<string, Host>();
  readonly hub: string;
  readonly #subnet: string;
  readonly #bridge: string;
  readonly #veths: string[] = [];

  private constructor(bridge: string, subnet: number) {
    this.#bridge = bridge;
    this.#subnet = `10.201.${subnet}`;
    this.hub = `${this.#subnet}.1`;
  }

  /**
   * Makes the bridge and one namespace per name. The bridge's name holds its subnet's number, and creating a link
   * is atomic: a number another test (in this process or another) holds is skipped, so testbeds never share one.
   */
  static async create(names: string[]): Promise<Testbed> {
    let bed: Testbed | undefined;
    for (let attempt = 0; !bed; attempt++) {
      const slot = 1 + Math.floor(Math.random() * 250);
      const candidate = new Testbed(`vcbr${slot}`, slot);
      const made = await run("ip", ["link", "add", candidate.#bridge, "type", "bridge"], {
        allowFailure: true,
      });
      if (made.success) bed = candidate;
      else if (!made.errors.includes("File exists") || attempt > 50) {
        throw new Error(`could not make a testbed bridge: ${made.errors.trim()}`);
      }
    }
    try {
      await run("ip", ["addr", "add", `${bed.hub}/24`, "dev", bed.#bridge]);
      await run("ip", ["link", "set", bed.#bridge, "up"]);
      let n = 2;
      for (const name of names) {
        const ns = await Netns.create(name);
        const veth = `${bed.#bridge}h${n}`;
        bed.#veths.push(veth);
        await run("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name]);
        await run("ip", ["link", "set", veth, "master", bed.#bridge, "up"]);
        const address = `${bed.#subnet}.${n++}`;
        await ns.exec("ip", ["addr", "add", `${address}/24`, "dev", "eth0"]);
        await ns.exec("ip", ["link", "set", "eth0", "up"]);
        bed.hosts.set(name, { name, ns, address });
      }
    } catch (error) {
      await bed[Symbol.asyncDispose]();
      throw error;
    }
    return bed;
  }

  /** Drops all UDP between hosts `a` and `b` (both directions), as a firewall between them would. */
  cutUdp(a: string, b: string): Promise<void> {
    return this.cut(a, b, ["meta", "l4proto", "udp"]);
  }

  /**
   * Drops everything between hosts `a` and `b` (both directions), or only what also matches `what` (nftables
   * expressions), in `a`'s namespace (table `inet cut`).
   */
  async cut(a: string, b: string, what: string[] = []): Promise<void> {
    const ns = this.host(a).ns;
    const other = this.host(b).address;
    const nft = (...args: string[]) => ns.exec("nft", args);
    await nft("add", "table", "inet", "cut");
    await nft("add", "chain", "inet", "cut", "out", "{ type filter hook output priority 0; policy accept; }");
    await nft("add", "chain", "inet", "cut", "in", "{ type filter hook input priority 0; policy accept; }");
    await nft("add", "rule", "inet", "cut", "out", "ip", "daddr", other, ...what, "drop");
    await nft("add", "rule", "inet", "cut", "in", "ip", "saddr", other, ...what, "drop");
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const h of this.hosts.values()) await h.ns[Symbol.asyncDispose]();
    for (const v of this.#veths) await run("ip", ["link", "del", v], { allowFailure: true });
    await run("ip", ["link", "del", this.#bridge], { allowFailure: true });
  }
}

/** A testbed with its realm: the Guardian, its Master and the nodes. */
export interface Realm extends AsyncDisposable {
  bed: Testbed;
  guardian: GuardianProc;
  /** The Master's servers when it is a cluster of its own (`masters`), in order; none when embedded. */
  masters: { proc: Proc; port: number }[];
  nodes: Map<string, NodeProc>;
  node(name: string): NodeProc;
}

/**
 * A testbed with a Guardian (and its Master) on the bridge, realm "home", and one registered, running node per
 * name in its namespace (tag = its name, taint "lab"; `registerFlags` per name override them, e.g. a shared tag),
 * plus `bareHosts`: namespaces with no node, for a test to start its own. With `masters`, the Master is a cluster
 * of that many nats-servers on the hub, configured by `guardian nats-config` as an operator would; otherwise
 * the Guardian's embedded one; `guardianFlags` go to its `guardian serve`. Disposing stops everything and removes
 * the testbed.
 */
export async function realmOnTestbed(
  names: string[],
  runFlags: string[] = [],
  registerFlags: Record<string, string[]> = {},
  bareHosts: string[] = [],
  options: { certTtl?: string; masters?: number; guardianFlags?: string[] } = {},
): Promise<Realm> {
  const bed = await Testbed.create([...names, ...bareHosts]);
  const nodes = new Map<string, NodeProc>();
  const dir = await Deno.makeTempDir({ prefix: "vc-realm-" });
  const masters: Realm["masters"] = [];
  const ports = Array.from({ length: options.masters ?? 0 }, () => ({ port: freePort(), route: freePort() }));
  const guardian = new GuardianProc(`${dir}/guardian`, {
    listenHost: bed.hub,
    certTtl: options.certTtl,
    flags: options.guardianFlags,
    ...(ports.length > 0
      ? { master: ports.map((p) => `tls://${bed.hub}:${p.port}`) }
      : { embeddedMaster: true, natsPort: freePort() }),
  });
  const world: Realm = {
    bed,
    guardian,
    masters,
    nodes,
    node: (name: string) => nodes.get(name)!,
    async [Symbol.asyncDispose]() {
      for (const n of nodes.values()) await n[Symbol.asyncDispose]();
      await guardian[Symbol.asyncDispose]();
      for (const m of masters) await m.proc.stop();
      await bed[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  try {
    for (const [i, { port, route }] of ports.entries()) {
      const proc = await natsServer(guardian.dataDir, `nats-${i}`, port, {
        configFlags: [
          "--cluster-name",
          "realm",
          "--cluster-listen",
          `${bed.hub}:${route}`,
          "--routes",
          ports.filter((_, j) => j !== i).map((p) => `nats-route://${bed.hub}:${p.route}`).join(","),
        ],
      });
      masters.push({ proc, port });
      await waitFor(`nats-${i} to listen`, 10_000, async () => {
        (await Deno.connect({ hostname: bed.hub, port })).close();
        return true;
      });
    }
    await guardian.start();
    await guardian.admin(["realm", "create", "home"]);
    // The test realm's administrator grants any taint: each node picks its own ("lab" by default).
    const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
    for (const name of names) {
      const n = new NodeProc(name, `${dir}/${name}`, { netns: bed.host(name).ns.name, runFlags });
      nodes.set(name, n);
      await n.register(guardian.url, token, ["--taints", "lab", ...registerFlags[name] ?? []]);
      await n.start();
    }
  } catch (error) {
    await world[Symbol.asyncDispose]();
    throw error;
  }
  return world;
}
