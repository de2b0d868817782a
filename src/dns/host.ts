/**
 * The host side of DNS: which resolvers the host used before we touched anything, and a split-DNS route for
 * `~veilnet` through systemd-resolved when it runs. Nothing else on the host changes: without systemd-resolved,
 * /etc/resolv.conf is left alone and the log says the one line a user may add.
 * @module
 */

import { parseIPv4, parseIPv6 } from "../tun/ip.ts";
import { ZONE } from "./message.ts";
import type { Upstream } from "./server.ts";

/** Present while systemd-resolved runs. */
export const RESOLVED_SOCKET = "/run/systemd/resolve/io.systemd.Resolve";

/**
 * The `nameserver` lines of a resolv.conf, minus addresses `skip` rejects (our own listener: forwarding to
 * ourselves would loop). Malformed lines are ignored, as the C library does.
 */
export function upstreamsFrom(resolvConf: string, skip: (address: string) => boolean): Upstream[] {
  const out: Upstream[] = [];
  for (const line of resolvConf.split("\n")) {
    const [keyword, address] = line.trim().split(/\s+/);
    if (keyword !== "nameserver" || !address) continue;
    const plain = address.replace(/%.*$/, ""); // a scoped IPv6 address: fe80::1%eth0
    if (!parseIPv4(plain) && !parseIPv6(plain)) continue;
    if (!skip(plain)) out.push({ hostname: plain, port: 53 });
  }
  return out;
}

/** What host integration runs; replaced in tests. */
export interface HostTools {
  exists: (path: string) => boolean;
  run: (command: string, args: string[]) => Promise<{ ok: boolean; stderr: string }>;
  log: (line: string) => void;
}

/**
 * Routes `*.veilnet` on this host to our server: with systemd-resolved, DNS server and routing domain
 * `~veilnet` on the overlay link (and never the default route, so other names keep their resolvers). Returns
 * the undo, which reverts the link's settings; without systemd-resolved, logs the line to add and changes nothing.
 */
export async function routeZone(
  ifname: string,
  server: { hostname: string; port: number },
  tools: HostTools,
): Promise<() => Promise<void>> {
  const address = server.port === 53
    ? server.hostname
    : server.hostname.includes(":")
    ? `[${server.hostname}]:${server.port}`
    : `${server.hostname}:${server.port}`;
  if (!tools.exists(RESOLVED_SOCKET)) {
    tools.log(
      server.port === 53
        ? `DNS: systemd-resolved is not running, so the host does not send *.${ZONE} here by itself. To resolve ` +
          `them on this host, add "nameserver ${server.hostname}" as the first nameserver line of /etc/resolv.conf ` +
          `(other names are forwarded to the resolvers listed there now).`
        : `DNS: systemd-resolved is not running; *.${ZONE} resolves with: dig @${server.hostname} -p ${server.port}`,
    );
    return () => Promise.resolve();
  }
  const revert = async () => {
    const r = await tools.run("resolvectl", ["revert", ifname]);
    if (!r.ok) tools.log(`DNS: resolvectl revert ${ifname} failed: ${r.stderr.trim()}`);
  };
  for (
    const args of [
      ["dns", ifname, address],
      ["domain", ifname, `~${ZONE}`],
      ["default-route", ifname, "false"],
    ]
  ) {
    const r = await tools.run("resolvectl", args);
    if (!r.ok) {
      tools.log(
        `DNS: resolvectl ${args.join(" ")} failed (${r.stderr.trim()}); *.${ZONE} is not routed here`,
      );
      await revert();
      return () => Promise.resolve();
    }
  }
  tools.log(`DNS: systemd-resolved sends *.${ZONE} to ${address} (link ${ifname})`);
  return revert;
}

/** The real tools. */
export const hostTools = (log: (line: string) => void): HostTools => ({
  exists: (path) => {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  },
  run: async (command, args) => {
    try {
      const r = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
      return { ok: r.success, stderr: new TextDecoder().decode(r.stderr) };
    } catch (error) {
      return { ok: false, stderr: (error as Error).message };
    }
  },
  log,
});
