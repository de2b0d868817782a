/**
 * The node commands: `register`, `run`, and the ones that ask a running node (`status`, `peers`, `taint`, `info`).
 * Flags > environment > saved config > defaults; an environment variable never overrides an explicit flag.
 * @module
 */

import { Agent } from "../agent/agent.ts";
import { configDir, readConfig, socketPath, writeConfig } from "../agent/config.ts";
import { guardianClient } from "../agent/guardian_client.ts";
import { serveLocalApi } from "../agent/local_api.ts";
import type { NodeStatus, PeerStatus } from "../agent/status.ts";
import { connectNats } from "../control/nats.ts";
import { parseDuration } from "../guardian/guardian.ts";
import { shutdownWebRtc } from "../tether/webrtc.ts";
import { serveNodeDns } from "../dns/serve.ts";
import { formatAddress, parseIPv4, parseIPv6 } from "../tun/ip.ts";
import { isTag } from "../wire/certificate.ts";
import { checkInterfaceName, LinuxTun } from "../tun/linux_tun.ts";
import { hostPort, list, parse, UsageError } from "./args.ts";
import { localApi } from "./local_client.ts";
import type { Output } from "./main.ts";

const env = (name: string) => Deno.env.get(name) || undefined;

/** `register`: registers with a Guardian and saves conflux.json. */
export async function registerCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, {
    token: { type: "string", short: "t" },
    guardian: { type: "string", short: "g" },
    tag: { type: "string" },
    ip: { type: "string" },
    taints: { type: "string" },
    portal: { type: "boolean", short: "p" },
    subnets: { type: "string" },
    jwt: { type: "string" },
    "jwks-url": { type: "string" },
    issuer: { type: "string" },
    audience: { type: "string" },
    "no-service": { type: "boolean", default: false },
  });
  const token = values.token ?? env("VEILNET_REGISTRATION_TOKEN");
  if (!token) {
    throw new UsageError("register needs a registration token: -t TOKEN or VEILNET_REGISTRATION_TOKEN");
  }
  const guardian = values.guardian ?? env("VEILNET_GUARDIAN");
  if (!guardian) {
    throw new UsageError("register needs the Guardian's URL: --guardian URL or VEILNET_GUARDIAN");
  }
  try {
    new URL(guardian);
  } catch {
    throw new UsageError(`--guardian must be a URL like http://guardian.example:8080, got "${guardian}"`);
  }
  const taints = values.taints ?? env("VEILNET_CONFLUX_TAINTS");
  const oidc = [values.jwt, values["jwks-url"], values.issuer, values.audience];
  if (oidc.some((v) => v !== undefined) && oidc.some((v) => v === undefined)) {
    throw new UsageError("--jwt, --jwks-url, --issuer and --audience go together");
  }
  const body: Record<string, unknown> = {
    tag: values.tag ?? env("VEILNET_CONFLUX_TAG"),
    ip: values.ip ?? env("VEILNET_CONFLUX_IP"),
    taints: taints === undefined ? undefined : list(taints),
    portal: values.portal ?? (env("VEILNET_CONFLUX_PORTAL") === "true" ? true : undefined),
    subnets: values.subnets === undefined ? undefined : list(values.subnets),
    jwt: values.jwt,
    jwks_url: values["jwks-url"],
    issuer: values.issuer,
    audience: values.audience,
  };
  const registered = await guardianClient.register(guardian, token, body);
  const path = writeConfig({ guardian, conflux_id: registered.conflux_id, token: registered.token });
  io.out(`registered as ${registered.conflux_id}; configuration saved to ${path}`);
  if (!values["no-service"]) {
    io.out(
      "installing the system service is not built yet in this version: run `veilnet-conflux run` to start the node",
    );
  }
  return 0;
}

/** `run`: the node in the foreground until SIGINT or SIGTERM. */
export async function runCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, {
    ifname: { type: "string" },
    tag: { type: "string" },
    "no-tun": { type: "boolean", default: false },
    "tether-idle": { type: "string" },
    "dns-listen": { type: "string" },
    "no-dns-forward": { type: "boolean", default: false },
  });
  const ifname = values.ifname ?? env("VEILNET_IFNAME") ?? "veilnet";
  checkInterfaceName(ifname);
  const tag = values.tag ?? env("VEILNET_CONFLUX_TAG");
  if (tag !== undefined && !isTag(tag)) {
    throw new UsageError(`--tag must be a DNS label (a-z, 0-9, inner -, at most 63), got "${tag}"`);
  }
  const dnsListen = values["dns-listen"] ?? env("VEILNET_DNS_LISTEN");
  const dns = dnsListen === undefined || dnsListen === "off"
    ? undefined
    : parseIPv4(dnsListen) || parseIPv6(dnsListen)
    ? { hostname: dnsListen, port: 53 }
    : hostPort(dnsListen, "--dns-listen");
  const idle = values["tether-idle"] ?? env("VEILNET_TETHER_IDLE");
  const tetherIdleMs = idle === undefined ? undefined : parseDuration(idle);
  const saved = readConfig();
  const token = env("VEILNET_CONFLUX_TOKEN") ?? saved?.token;
  const guardian = env("VEILNET_GUARDIAN") ?? saved?.guardian;
  if (!token || !guardian) {
    throw new UsageError(
      `not registered: no ${configDir()}/conflux.json. Run \`veilnet-conflux register -t TOKEN --guardian URL\` ` +
        "(or set VEILNET_CONFLUX_TOKEN and VEILNET_GUARDIAN)",
    );
  }
  const abort = new AbortController();
  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    await using agent = await Agent.start({
      guardian,
      token,
      connect: (o) => connectNats({ ...o, log: Deno.env.get("VEILNET_DEBUG") ? io.err : undefined }),
      log: io.err,
      tag,
      tetherIdleMs,
      openTun: values["no-tun"] ? undefined : (cert) =>
        LinuxTun.open({
          name: ifname,
          addresses: [
            `${formatAddress(cert.ipv4)}/${cert.prefix4}`,
            `${formatAddress(cert.ipv6)}/${cert.prefix6}`,
          ],
        }),
    });
    // DNS: on the overlay address by default (off without a TUN device unless --dns-listen is given).
    const listen = dnsListen === "off" || (values["no-tun"] && !dns)
      ? undefined
      : dns ?? { hostname: formatAddress(agent.certificate.ipv4), port: 53 };
    await using _dns = listen
      ? await serveNodeDns({
        agent,
        ...listen,
        forward: !values["no-dns-forward"],
        ifname: values["no-tun"] ? undefined : ifname,
        log: io.err,
      }).catch((error) => {
        if (dns) throw error; // asked for explicitly: do not run without it
        io.err(`${(error as Error).message}; *.veilnet will not resolve (choose another with --dns-listen)`);
        return undefined;
      })
      : undefined;
    const api = serveLocalApi(agent, socketPath(), abort.signal);
    io.err(`local API on ${socketPath()}`);
    await api.finished;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    shutdownWebRtc();
  }
  return 0;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

/** `status [--json]`: exits 1 when the node is not connected to both the Guardian session and the Master. */
export async function statusCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, { json: { type: "boolean", default: false } });
  const s = await localApi<NodeStatus>("GET", "/status");
  if (values.json) io.out(JSON.stringify(s, null, 2));
  else {
    io.out(table([
      ["node", `${s.tag} (${s.id})`],
      ["addresses", s.ips.join(", ")],
      ["realm", s.realm],
      ["taints", s.taints.join(",") || "(none: no peers)"],
      [
        "guardian",
        s.connected.guardian
          ? `session valid until ${new Date(s.certificateExpiresAt).toISOString()}`
          : "no valid session",
      ],
      ["master", s.connected.master ? "connected" : "not connected"],
      ["peers", String(s.peers)],
    ]));
  }
  return s.connected.guardian && s.connected.master ? 0 : 1;
}

/** `peers [--json]`. */
export async function peersCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, { json: { type: "boolean", default: false } });
  const peers = await localApi<PeerStatus[]>("GET", "/peers");
  if (values.json) io.out(JSON.stringify(peers, null, 2));
  else if (peers.length === 0) io.out("no peers");
  else {
    io.out(table([
      ["TAG", "IPV4", "IPV6", "PATH", "TAINTS"],
      ...peers.map((p) => [p.tag, p.ips[0] ?? "", p.ips[1] ?? "", p.path, p.taints.join(",")]),
    ]));
  }
  return 0;
}

/** `taint add|remove|list [TAINT...]`. */
export async function taintCommand(args: string[], io: Output): Promise<number> {
  const [action, ...rest] = args;
  if (action === "list") {
    parse(rest, {});
    io.out((await localApi<{ taints: string[] }>("GET", "/taints")).taints.join("\n"));
    return 0;
  }
  if (action !== "add" && action !== "remove") {
    throw new UsageError(`taint: expected add, remove or list, got "${action ?? ""}"`);
  }
  const { positionals } = parse(rest, {}, { min: 1, max: 32 });
  const result = await localApi<{ taints: string[] }>("POST", "/taints", {
    [action]: positionals.flatMap((p) => list(p)),
  });
  io.out(`taints: ${result.taints.join(",") || "(none)"}`);
  return 0;
}

/** `info`: who this node is. */
export async function infoCommand(args: string[], io: Output): Promise<number> {
  parse(args, {});
  const s = await localApi<NodeStatus>("GET", "/status");
  io.out(`${s.tag}\nconflux ${s.id}\nnode ${s.nodeId}\nrealm ${s.realm}\n${s.ips.join("\n")}`);
  return 0;
}
