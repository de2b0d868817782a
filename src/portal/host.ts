/**
 * Portal mode on the host, and the routes to other portals' subnets.
 *
 * A portal forwards what arrives on its TUN device to the subnets it offers, masqueraded behind its own address,
 * and nothing else: its own nftables table (`inet veilnet_portal_<ifname>`) accepts forwarding from the TUN only
 * to those subnets and drops the rest, so the portal is never an exit to the internet or to other networks of
 * the host. IP forwarding is switched on for the families it offers. Closing puts the forwarding settings back as
 * they were and deletes the table. (The data plane refuses such packets first: see Agent's admit check.)
 *
 * A node using portals routes their subnets into its TUN device with a high metric, so a network the host
 * already reaches directly keeps its own route; and it reads what those subnets must never cover (UnderlayReader:
 * its own addresses, its gateways, the Guardian and the Master).
 * @module
 */

import { lookup } from "node:dns/promises";
import { readKernelFile, writeKernelFile } from "../../ffi/loader.ts";
import { runHost, type RunResult } from "../service/systemd.ts";
import { type Cidr, parseAddress, parseCidr } from "../tun/ip.ts";
import { formatCidr } from "./subnets.ts";
import {
  addressesFromLinks,
  gatewaysFromRoutes,
  hostOfUrl,
  type UnderlayAddress,
  type UnderlayKind,
  uniqueUnderlay,
} from "./underlay.ts";

/** The metric of routes to portal subnets: above the kernel's connected and usual static routes. */
export const PORTAL_ROUTE_METRIC = 1000;

/** Host commands and kernel settings, replaced in tests. */
export interface PortalHost {
  run: (command: string, args: string[], input?: string) => Promise<RunResult>;
  readSetting: (path: string) => string;
  writeSetting: (path: string, value: string) => void;
  /** The addresses a host name resolves to (as getaddrinfo answers: /etc/hosts, then DNS). */
  resolve: (hostname: string) => Promise<string[]>;
  log: (line: string) => void;
}

/** The real host. */
export const portalHost = (log: (line: string) => void): PortalHost => ({
  run: runHost,
  readSetting: readKernelFile,
  writeSetting: writeKernelFile,
  resolve: async (hostname) => (await lookup(hostname, { all: true })).map((a) => a.address),
  log,
});

const FORWARDING = {
  4: "/proc/sys/net/ipv4/ip_forward",
  6: "/proc/sys/net/ipv6/conf/all/forwarding",
} as const;

/** The nftables table name for a TUN device (nft identifiers: letters, digits, underscores). */
export function portalTable(ifname: string): string {
  return `veilnet_portal_${ifname.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

/** The nftables script that creates the portal's table (after deleting any left by an earlier run). */
export function portalRuleset(ifname: string, subnets: Cidr[]): string {
  const table = portalTable(ifname);
  if (/["\\]/.test(ifname)) throw new RangeError(`portal: interface name ${ifname} has a quote or backslash`);
  const dev = JSON.stringify(ifname);
  const lines = [`table inet ${table}`, `delete table inet ${table}`, `table inet ${table} {`];
  const families = ([[4, "ip", "ipv4_addr"], [6, "ip6", "ipv6_addr"]] as const)
    .map(([v, match, type]) => ({
      v,
      match,
      type,
      nets: subnets.filter((c) => c.version === v).map(formatCidr),
    }))
    .filter((f) => f.nets.length > 0);
  // auto-merge: offered subnets may overlap (10.0.0.0/8 and 10.50.0.0/16), which an interval set refuses.
  for (const f of families) {
    const elements = f.nets.join(", ");
    lines.push(
      `  set offered${f.v} { type ${f.type}; flags interval; auto-merge; elements = { ${elements} }; }`,
    );
  }
  lines.push(
    "  chain forward {",
    "    type filter hook forward priority filter; policy accept;",
    ...families.map((f) => `    iifname ${dev} ${f.match} daddr @offered${f.v} accept`),
    `    iifname ${dev} counter drop comment "a portal forwards only to the subnets it offers"`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    ...families.map((f) => `    iifname ${dev} ${f.match} daddr @offered${f.v} masquerade`),
    "  }",
    "}",
  );
  return lines.join("\n") + "\n";
}

/**
 * Turns this host into a portal for `subnets` behind `ifname`: the nftables table, then IP forwarding. The result
 * undoes both (forwarding first). Throws, having undone what it did, if either step fails.
 */
export async function openPortal(
  host: PortalHost,
  ifname: string,
  subnets: string[],
): Promise<AsyncDisposable> {
  const cidrs = subnets.map((s) => parseCidr(s));
  const applied = await host.run("nft", ["-f", "-"], portalRuleset(ifname, cidrs));
  if (!applied.ok) throw new Error(`portal: nft refused the portal's rules: ${applied.stderr.trim()}`);
  const table = portalTable(ifname);
  const restore: [path: string, value: string][] = [];
  const close = async () => {
    for (const [path, value] of restore.reverse()) {
      try {
        host.writeSetting(path, value);
      } catch (error) {
        host.log(`portal: could not put ${path} back to ${value.trim()}: ${(error as Error).message}`);
      }
    }
    restore.length = 0;
    const deleted = await host.run("nft", ["delete", "table", "inet", table]);
    if (!deleted.ok) host.log(`portal: could not delete nftables table ${table}: ${deleted.stderr.trim()}`);
  };
  try {
    for (const v of [4, 6] as const) {
      if (!cidrs.some((c) => c.version === v)) continue;
      const before = host.readSetting(FORWARDING[v]);
      if (before.trim() !== "1") {
        host.writeSetting(FORWARDING[v], "1\n");
        restore.push([FORWARDING[v], before]);
      }
    }
  } catch (error) {
    await close();
    throw new Error(`portal: could not switch IP forwarding on: ${(error as Error).message}`);
  }
  host.log(`portal: forwarding to ${subnets.join(", ")} (nftables table inet ${table})`);
  return { [Symbol.asyncDispose]: close };
}

/**
 * The kernel routes for portal subnets into the TUN device, kept equal to the latest list given. One pass at a time,
 * each with the latest list (lists given meanwhile are skipped but the last), and one `ip -batch` process per
 * pass whatever the number of changes: a peer table that changes often costs no process per change.
 */
export class KernelRoutes implements AsyncDisposable {
  #installed = new Set<string>();
  #wanted: string[] = [];
  #pass: Promise<void> = Promise.resolve();
  #next: Promise<void> | undefined;

  constructor(readonly host: PortalHost, readonly ifname: string) {}

  /** Makes the routes equal to `subnets` (in the background); resolves once a pass with this list (or a later one) ran. */
  sync(subnets: string[]): Promise<void> {
    this.#wanted = subnets;
    return this.#next ??= this.#pass.then(() => {
      this.#next = undefined;
      return this.#pass = this.#run();
    });
  }

  async #run(): Promise<void> {
    try {
      const wanted = new Set(this.#wanted);
      const changes = [
        ...[...this.#installed].filter((s) => !wanted.has(s)).map((s) => ["del", s] as const),
        ...[...wanted].filter((s) => !this.#installed.has(s)).map((s) => ["replace", s] as const),
      ];
      if (changes.length === 0) return;
      const lines = changes.map(([action, subnet]) =>
        `route ${action} ${subnet} dev ${this.ifname} metric ${PORTAL_ROUTE_METRIC}`
      );
      const r = await this.host.run("ip", ["-force", "-batch", "-"], lines.join("\n") + "\n");
      // `ip -force -batch` goes on after a failed line and names it: "Command failed -:N".
      const failed = new Set([...r.stderr.matchAll(/Command failed -:(\d+)/g)].map((m) => Number(m[1]) - 1));
      if (!r.ok && failed.size === 0) { for (let i = 0; i < changes.length; i++) failed.add(i); }
      changes.forEach(([action, subnet], i) => {
        if (action === "del") {
          this.#installed.delete(subnet);
          this.host.log(`portal: removed route ${subnet} dev ${this.ifname}`);
        } else if (failed.has(i)) {
          this.host.log(`portal: no route to ${subnet}: ${r.stderr.trim().split("\n")[0]}`);
        } else {
          this.#installed.add(subnet);
          this.host.log(`portal: added route ${subnet} dev ${this.ifname}`);
        }
      });
    } catch (error) {
      this.host.log(`portal: routes: ${(error as Error).message}`);
    }
  }

  /** Removes every route it installed. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.sync([]);
  }
}

/**
 * Reads the addresses portal subnets must not cover (see underlay.ts): this host's own and its gateways with `ip`,
 * and the hosts of the Guardian's and the Master's URLs, resolved. A name that fails to resolve keeps its last
 * answer, so a passing DNS failure does not unprotect it. Throws when `ip` fails (the caller keeps what it had).
 */
export class UnderlayReader {
  readonly #names = new Map<string, Uint8Array[]>();

  constructor(readonly host: PortalHost, readonly ifname: string) {}

  async read(endpoints: { guardian: string; master: string[] }): Promise<UnderlayAddress[]> {
    const list: UnderlayAddress[] = [];
    const links = await this.host.run("ip", ["-j", "addr", "show"]);
    if (!links.ok) throw new Error(`could not read this host's addresses: ip addr: ${links.stderr.trim()}`);
    for (const address of addressesFromLinks(links.stdout, this.ifname)) {
      list.push({ kind: "own-address", address });
    }
    for (const family of ["-4", "-6"]) {
      const r = await this.host.run("ip", ["-j", family, "route", "show", "table", "all"]);
      if (!r.ok) throw new Error(`could not read the routing table: ip ${family} route: ${r.stderr.trim()}`);
      for (const address of gatewaysFromRoutes(r.stdout)) list.push({ kind: "gateway", address });
    }
    // The Guardian may be several, comma-separated (agent/guardian_client.ts).
    const guardians = endpoints.guardian.split(",").map((u) => u.trim()).filter((u) => u !== "");
    const named: [UnderlayKind, string[]][] = [["guardian", guardians], [
      "master",
      endpoints.master,
    ]];
    for (const [kind, urls] of named) {
      for (const url of urls) {
        const name = hostOfUrl(url);
        if (name) { for (const address of await this.#resolve(name)) list.push({ kind, address }); }
      }
    }
    return uniqueUnderlay(list);
  }

  async #resolve(name: string): Promise<Uint8Array[]> {
    const literal = parseAddress(name);
    if (literal) return [literal];
    try {
      const found = (await this.host.resolve(name)).map(parseAddress).filter((a) => a !== undefined);
      this.#names.set(name, found);
      return found;
    } catch (error) {
      const last = this.#names.get(name) ?? [];
      this.host.log(
        `portal: could not resolve ${name} (${(error as Error).message}); ` +
          (last.length ? "keeping its last addresses" : "no portal subnet is refused for covering it"),
      );
      return last;
    }
  }
}
