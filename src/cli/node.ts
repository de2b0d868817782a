/**
 * The node commands: `register`, `run`, and the ones that ask a running node (`status`, `peers`, `ping`, `taint`,
 * `info`). Flags > environment > saved config > defaults; an environment variable never overrides an explicit flag.
 * @module
 */

import { dropCleanFilePages } from "../../ffi/pages.ts";
import {
  configDir,
  configPath,
  readConfig,
  type SavedConfig,
  socketPath,
  writeConfig,
} from "../agent/config.ts";
import { guardianClient, guardianUrls, trustGuardianCa } from "../agent/guardian_client.ts";
import { serveLocalApi } from "../agent/local_api.ts";
import { isLoopback, serveMetrics } from "../agent/metrics.ts";
import type { IdentityStatus, NodeStatus, PeerStatus } from "../agent/status.ts";
import { startConflux } from "../conflux.ts";
import { parseDuration } from "../guardian/rules.ts";
import { selfCommand, Service, UNIT } from "../service/systemd.ts";
import { shutdownWebRtc } from "../tether/webrtc.ts";
import { parseCidr, parseIPv4, parseIPv6 } from "../tun/ip.ts";
import { STARTUP_PAGES_MS } from "../tuning.ts";
import { checkInterfaceName } from "../tun/linux_tun.ts";
import { isTag } from "../wire/certificate.ts";
import { hostPort, list, parse, UsageError } from "./args.ts";
import { localApi } from "./local_client.ts";
import type { Output } from "./main.ts";
import { checkSecretSources, readSecret, secretInput, type SecretSource } from "./secret.ts";

export const env = (name: string): string | undefined => Deno.env.get(name) || undefined;

/**
 * The Guardian URL from a flag or VEILNET_GUARDIAN: one, or several Guardians sharing a state, comma-separated
 * (tried in turn while one is unreachable). A usage error when missing or not URLs.
 */
export function guardianUrl(flag: string | undefined, command: string): string {
  const guardian = flag ?? env("VEILNET_GUARDIAN");
  if (!guardian) {
    throw new UsageError(`${command} needs the Guardian's URL: --guardian URL or VEILNET_GUARDIAN`);
  }
  const urls = guardianUrls(guardian);
  for (const one of urls.length > 0 ? urls : [guardian]) {
    let url: URL | undefined;
    try {
      url = new URL(one);
    } catch { /* below */ }
    if (url?.protocol !== "http:" && url?.protocol !== "https:") {
      throw new UsageError(
        `--guardian must be a URL like http://guardian.example:8080 (or several, comma-separated), got "${one}"`,
      );
    }
  }
  return urls.join(",");
}

function checkTag(tag: string | undefined): string | undefined {
  if (tag !== undefined && !isTag(tag)) {
    throw new UsageError(
      `--tag must be a DNS label (a-z, 0-9, inner -, at most 63 characters), got "${tag}"`,
    );
  }
  return tag;
}

/** Installs (replacing any older unit) and starts the service running `run --config path`. */
export async function installService(service: Service, path: string, io: Output): Promise<void> {
  const dir = configDir();
  await service.install(selfCommand(dir), ["run", "--config", path], dir);
  await service.start();
  io.out(`service ${UNIT} installed and started (\`veilnet-conflux status\` shows the node)`);
}

/** `register`: registers with a Guardian, saves conflux.json, installs and starts the service. */
export async function registerCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, {
    token: { type: "string", short: "t" },
    "token-file": { type: "string" },
    guardian: { type: "string", short: "g" },
    "guardian-ca": { type: "string" },
    tag: { type: "string" },
    ip: { type: "string" },
    taints: { type: "string" },
    teams: { type: "string" },
    portal: { type: "boolean", short: "p" },
    subnets: { type: "string" },
    jwt: { type: "string" },
    "jwt-file": { type: "string" },
    "jwks-url": { type: "string" },
    issuer: { type: "string" },
    audience: { type: "string" },
    "no-service": { type: "boolean", default: false },
    force: { type: "boolean", default: false },
  });
  // Both secrets may come from a file, standard input ("-") or the environment; neither needs the command line.
  const tokenSource: SecretSource = {
    what: "registration token",
    flag: "-t/--token",
    value: values.token,
    fileFlag: "--token-file",
    file: values["token-file"],
    env: "VEILNET_REGISTRATION_TOKEN",
  };
  const jwtSource: SecretSource = {
    what: "identity token",
    flag: "--jwt",
    value: values.jwt,
    fileFlag: "--jwt-file",
    file: values["jwt-file"],
    env: "VEILNET_CONFLUX_JWT",
  };
  checkSecretSources([tokenSource, jwtSource]);
  const input = secretInput(io);
  const token = await readSecret(tokenSource, input);
  if (!token) {
    throw new UsageError(
      "register needs a registration token: -t TOKEN, -t - (standard input), --token-file FILE or " +
        "VEILNET_REGISTRATION_TOKEN",
    );
  }
  const guardian = guardianUrl(values.guardian, "register");
  // A Guardian whose certificate comes from a private CA that its token does not name (an operator's own CA).
  const caFile = values["guardian-ca"] ?? env("VEILNET_GUARDIAN_CA");
  const guardianCa = caFile === undefined ? undefined : readCaFile("--guardian-ca", caFile);
  if (guardianCa !== undefined) trustGuardianCa(guardianCa);
  const tag = checkTag(values.tag ?? env("VEILNET_CONFLUX_TAG"));
  const ip = values.ip ?? env("VEILNET_CONFLUX_IP");
  if (ip !== undefined && !parseIPv4(ip)) throw new UsageError(`--ip must be an IPv4 address, got "${ip}"`);
  const subnets = cidrList(values.subnets ?? env("VEILNET_CONFLUX_SUBNETS"), "--subnets");
  const taints = values.taints ?? env("VEILNET_CONFLUX_TAINTS");
  const teams = values.teams ?? env("VEILNET_CONFLUX_TEAMS");
  if ([values["jwks-url"], values.issuer, values.audience].some((v) => v !== undefined)) {
    throw new UsageError(
      "--jwks-url, --issuer and --audience are set by the administrator on the realm now " +
        "(guardian realm oidc); give only --jwt",
    );
  }
  const jwt = await readSecret(jwtSource, input);
  const path = configPath("conflux.json");
  const existing = readConfig(path);
  if (existing && !values.force) {
    throw new Error(
      `already registered${existing.conflux_id ? ` as ${existing.conflux_id}` : ""} (${path}): ` +
        "`veilnet-conflux unregister` first, or register again with --force",
    );
  }
  warnPlaintext(guardian, io);
  const service = new Service();
  const useService = !values["no-service"] && service.available;
  if (useService && await service.remove()) io.out(`removed the existing ${UNIT}`);
  const registered = await guardianClient.register(guardian, token, {
    tag,
    ip,
    taints: taints === undefined ? undefined : list(taints),
    teams: teams === undefined ? undefined : list(teams),
    portal: values.portal || env("VEILNET_CONFLUX_PORTAL") === "true" || subnets !== undefined || undefined,
    subnets,
    jwt,
  });
  writeConfig({
    guardian,
    conflux_id: registered.conflux_id,
    token: registered.token,
    ...(registered.realm ? { realm_key: registered.realm.public_key } : {}),
    ...(registered.guardian_ca ?? guardianCa ? { guardian_ca: registered.guardian_ca ?? guardianCa } : {}),
  }, path);
  io.out(`registered as ${registered.conflux_id}; configuration saved to ${path}`);
  if (useService) await installService(service, path, io);
  else {
    io.out(
      `${values["no-service"] ? "no service installed" : "systemd does not run this host"}: ` +
        "start the node with `veilnet-conflux run`",
    );
  }
  return 0;
}

/** A comma-separated list of CIDRs, checked; undefined when not given. */
function cidrList(text: string | undefined, flag: string): string[] | undefined {
  if (text === undefined) return undefined;
  const cidrs = list(text);
  for (const c of cidrs) {
    try {
      parseCidr(c);
    } catch (error) {
      throw new UsageError(`${flag}: ${(error as Error).message}`);
    }
  }
  return cidrs;
}

/** The saved config `run` (and `netcheck`) uses: `--config FILE`, else conflux.json, else up.json. */
export function savedForRun(explicit: string | undefined): SavedConfig | undefined {
  if (explicit !== undefined) {
    const saved = readConfig(explicit);
    if (!saved) throw new UsageError(`--config ${explicit}: no such file`);
    return saved;
  }
  return readConfig(configPath("conflux.json")) ?? readConfig(configPath("up.json"));
}

/** A CA certificate (PEM) from the file `from` names (a flag or variable); a usage error naming it if unreadable. */
export function readCaFile(from: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    throw new UsageError(`${from} ${path}: ${(error as Error).message}`);
  }
}

/** Says loudly that a Guardian URL is plain text: tokens and credentials cross the network readable. */
export function warnPlaintext(guardian: string, io: Output): void {
  const plain = guardianUrls(guardian).filter((u) => u.startsWith("http://"));
  if (plain.length === 0) return;
  io.err(
    `WARNING: ${plain.join(", ")} is plain HTTP: tokens and NATS credentials cross the network readable by ` +
      "anyone on the path (the Guardian was started with --plaintext). Use https:// unless this network is trusted",
  );
}

/**
 * The token, Guardian and its CA to run with: VEILNET_CONFLUX_TOKEN, VEILNET_GUARDIAN and VEILNET_GUARDIAN_CA
 * (a PEM file), else `saved`; else not registered.
 */
export function registeredAs(
  saved: SavedConfig | undefined,
): { guardian: string; token: string; guardianCa?: string } {
  const token = env("VEILNET_CONFLUX_TOKEN") ?? saved?.token;
  const guardian = env("VEILNET_GUARDIAN") ?? saved?.guardian;
  const caFile = env("VEILNET_GUARDIAN_CA");
  const guardianCa = caFile === undefined ? saved?.guardian_ca : readCaFile("VEILNET_GUARDIAN_CA", caFile);
  if (!token || !guardian) {
    throw new UsageError(
      `not registered: no ${configDir()}/conflux.json. Run \`veilnet-conflux register -t TOKEN --guardian URL\` ` +
        "(or set VEILNET_CONFLUX_TOKEN and VEILNET_GUARDIAN)",
    );
  }
  return { guardian, token, ...(guardianCa === undefined ? {} : { guardianCa }) };
}

/** `run`: the node in the foreground until SIGINT or SIGTERM. */
export async function runCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, {
    config: { type: "string" },
    ifname: { type: "string" },
    tag: { type: "string" },
    "no-tun": { type: "boolean", default: false },
    "tether-idle": { type: "string" },
    "dns-listen": { type: "string" },
    "no-dns-forward": { type: "boolean", default: false },
    metrics: { type: "string" },
    portal: { type: "boolean", short: "p" },
    "no-portal": { type: "boolean" },
    subnets: { type: "string" },
  });
  const saved = savedForRun(values.config);
  const ifname = values.ifname ?? env("VEILNET_IFNAME") ?? saved?.ifname ?? "veilnet";
  checkInterfaceName(ifname);
  const tag = checkTag(values.tag ?? env("VEILNET_CONFLUX_TAG") ?? saved?.tag);
  const dnsListen = values["dns-listen"] ?? env("VEILNET_DNS_LISTEN") ?? saved?.dns_listen;
  const dns = dnsListen === undefined || dnsListen === "off"
    ? undefined
    : parseIPv4(dnsListen) || parseIPv6(dnsListen)
    ? { hostname: dnsListen, port: 53 }
    : hostPort(dnsListen, "--dns-listen");
  const metricsFlag = values.metrics ?? env("VEILNET_METRICS");
  const metrics = metricsFlag === undefined ? undefined : hostPort(metricsFlag, "--metrics");
  if (metrics && !isLoopback(metrics.hostname)) {
    throw new UsageError(
      `--metrics listens on loopback only (127.0.0.1:PORT or [::1]:PORT), got "${metricsFlag}"`,
    );
  }
  // The Guardian keeps portal mode between runs: --no-portal (or VEILNET_CONFLUX_PORTAL=false) ends it.
  const portalEnv = env("VEILNET_CONFLUX_PORTAL");
  const portal = values.portal
    ? true
    : values["no-portal"]
    ? false
    : portalEnv
    ? portalEnv === "true"
    : undefined;
  const subnets = cidrList(values.subnets ?? env("VEILNET_CONFLUX_SUBNETS"), "--subnets");
  if (subnets && !portal) throw new UsageError("--subnets goes with --portal");
  const idle = values["tether-idle"] ?? env("VEILNET_TETHER_IDLE");
  const tetherIdleMs = idle === undefined ? undefined : parseDuration(idle);
  const { guardian, token, guardianCa } = registeredAs(saved);
  warnPlaintext(guardian, io);
  const abort = new AbortController();
  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  let startupPages: ReturnType<typeof setTimeout> | undefined;
  try {
    await using node = await startConflux({
      guardian,
      token,
      guardianCa,
      realmKey: saved?.realm_key,
      tag,
      portal,
      subnets,
      ifname,
      tun: !values["no-tun"],
      dns: dnsListen === "off" ? false : dns,
      dnsForward: !values["no-dns-forward"],
      tetherIdleMs,
      signal: abort.signal,
      log: io.err,
    });
    const metricsServer = metrics && serveMetrics(node, metrics, abort.signal);
    if (metrics) io.err(`metrics on http://${metricsFlag}/metrics and /healthz`);
    const api = serveLocalApi(node, socketPath(), abort.signal);
    io.err(`local API on ${socketPath()}`);
    startupPages = setTimeout(() => {
      try {
        io.err(
          `handed back ${(dropCleanFilePages() / 1024).toFixed(0)} MiB of file pages read while starting`,
        );
      } catch (error) {
        io.err(`could not hand back the file pages read while starting: ${(error as Error).message}`);
      }
    }, STARTUP_PAGES_MS);
    Deno.unrefTimer(startupPages);
    // The node may stop on its own (the Guardian revoked or removed it): stop serving, then fail with its reason.
    void node.closed.catch(() => {}).finally(stop);
    await api.finished;
    await metricsServer?.finished;
    await node.closed;
  } finally {
    clearTimeout(startupPages);
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

/** The running node's answer, or an error that also says what the service is doing. */
async function ask<T>(method: string, path: string, body?: unknown): Promise<T> {
  try {
    return await localApi<T>(method, path, body);
  } catch (error) {
    const message = (error as Error).message;
    if (!message.startsWith("no node is running")) throw error;
    const service = new Service();
    throw new Error(service.available ? `${message}; ${UNIT}: ${await service.state()}` : message);
  }
}

/** Who registered this node, as `status` shows it. */
function identityLine(identity: IdentityStatus | undefined): string {
  if (!identity) return "(none: the realm asks for no identity)";
  return identity.email ? `${identity.email} (subject ${identity.subject})` : `subject ${identity.subject}`;
}

/** `status [--json]`: exits 1 when the node is not connected to both the Guardian session and the Master. */
export async function statusCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, { json: { type: "boolean", default: false } });
  const s = await ask<NodeStatus>("GET", "/status");
  if (values.json) io.out(JSON.stringify(s, null, 2));
  else {
    io.out(table([
      ["node", `${s.tag} (${s.id})`],
      ["addresses", s.ips.join(", ")],
      ["realm", s.realm],
      s.access?.model === "teams"
        ? [
          "access",
          `by teams: ${s.access.identities} identities held${
            s.access.ignoredTeams.length ? `; not held: ${s.access.ignoredTeams.join(", ")}` : ""
          }`,
        ]
        : ["taints", s.taints.join(",") || "(none: no peers)"],
      ["identity", identityLine(s.identity)],
      ...(s.region || s.regions ? [["region", regionLine(s)]] : []),
      [
        "guardian",
        s.connected.guardian
          ? `session valid until ${new Date(s.certificateExpiresAt).toISOString()}`
          : "no valid session",
      ],
      ["master", s.connected.master ? "connected" : "not connected"],
      ["peers", String(s.peers)],
      ["tethers", `${s.tethers} (streams ${s.streams}, relayed ${s.relayed.bytes} bytes)`],
      ...(s.portal?.length ? [["portal", `offers ${s.portal.join(", ")}`]] : []),
      ...(s.subnets ?? []).map((r) => [
        "subnet",
        `${r.subnet} via ${r.tag}${
          r.shadowed.length ? ` (also offered by ${r.shadowed.join(", ")}, not used)` : ""
        }`,
      ]),
    ]));
  }
  return s.connected.guardian && s.connected.master ? 0 : 1;
}

/** Where the node is and where its traffic may go: "eu; traffic crosses only eu, ch (Master in eu)". */
function regionLine(s: NodeStatus): string {
  const where = s.region ?? "unplaced";
  const master = s.masterRegion ? ` (Master in ${s.masterRegion})` : " (the Master has no region)";
  return s.regions ? `${where}; traffic crosses only ${s.regions.join(", ")}${master}` : where;
}

function pathText(p: PeerStatus): string {
  if (p.waiting) return "none: no allowed path yet";
  return p.path === "relay" && p.via ? `relay via ${p.via}` : p.path;
}

/** The paths that carried recent traffic to a peer, busiest first: "direct 97%, relay-b 3%". */
function sharesText(p: PeerStatus): string {
  const used = (p.routes ?? []).filter((r) => r.share > 0).sort((a, b) => b.share - a.share);
  return used.length === 0 ? "-" : used.map((r) => `${r.via} ${Math.round(100 * r.share)}%`).join(", ");
}

/** Who registered a peer, in one cell: the email when the provider gave one, else the subject. */
function identityCell(identity: IdentityStatus | undefined): string {
  return identity?.email ?? identity?.subject ?? "-";
}

/** `peers [--json]`. */
export async function peersCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, { json: { type: "boolean", default: false } });
  const peers = await ask<PeerStatus[]>("GET", "/peers");
  if (values.json) io.out(JSON.stringify(peers, null, 2));
  else if (peers.length === 0) io.out("no peers");
  else {
    io.out(table([
      ["TAG", "IPV4", "IPV6", "PATH", "SHARES", "RTT", "TX", "RX", "TAINTS", "IDENTITY"],
      ...peers.map((p) => [
        p.tag,
        p.ips[0] ?? "",
        p.ips[1] ?? "",
        pathText(p),
        sharesText(p),
        p.rttMs === undefined ? "-" : `${p.rttMs.toFixed(1)} ms`,
        String(p.txBytes),
        String(p.rxBytes),
        p.taints.join(","),
        identityCell(p.identity),
      ]),
    ]));
  }
  return 0;
}

/** `ping TAG|IP [--count N]`: ICMP echo through the overlay, then the path the traffic took. */
export async function pingCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parse(args, { count: { type: "string", short: "c", default: "4" } }, {
    min: 1,
    max: 1,
  });
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1 || count > 10_000) {
    throw new UsageError(`--count must be a whole number from 1 to 10000, got "${values.count}"`);
  }
  const target = positionals[0]!;
  let address = parseIPv4(target) || parseIPv6(target) ? target : undefined;
  if (!address) {
    const tag = target.toLowerCase().replace(/\.$/, "").replace(/\.veilnet$/, "");
    checkTag(tag);
    const owners = await ask<{ tag: string; ips: string[] }[]>("GET", `/resolve?tag=${tag}`);
    if (owners.length === 0) {
      throw new Error(
        `no node answers to ${tag}.veilnet for this node (unknown tag, or not allowed by taints)`,
      );
    }
    address = owners[0]!.ips[0]!;
  }
  let ping: Deno.CommandOutput;
  try {
    ping = await new Deno.Command("ping", {
      args: ["-n", "-c", String(count), "-i", "0.2", "-W", "2", address],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).output();
  } catch (error) {
    throw new Error(`cannot run ping (${(error as Error).message}): install iputils-ping`);
  }
  const peer = (await ask<PeerStatus[]>("GET", "/peers")).find((p) => p.ips.includes(address));
  const self = (await ask<NodeStatus>("GET", "/status")).ips.includes(address);
  io.out(`path: ${self ? "this node" : peer ? pathText(peer) : "not an overlay peer (host routing)"}`);
  return ping.success ? 0 : 1;
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
