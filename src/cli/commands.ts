/**
 * The command-line contract (../shared/DESIGN.md, "Command line"), as data: what each command takes, what its
 * flags mean, and the function that runs it. `--help` is rendered from this table.
 * @module
 */

import { netcheckCommand } from "./netcheck.ts";
import type { Output } from "./main.ts";
import {
  infoCommand,
  peersCommand,
  pingCommand,
  registerCommand,
  runCommand,
  statusCommand,
  taintCommand,
} from "./node.ts";
import {
  downCommand,
  installCommand,
  removeCommand,
  startCommand,
  stopCommand,
  unregisterCommand,
  upCommand,
} from "./service.ts";

/** One command of the contract. */
export interface Command {
  name: string;
  usage: string;
  summary: string;
  /** One line per flag or note, shown by `COMMAND --help`. */
  details?: string[];
  run: (args: string[], io: Output) => Promise<number>;
}

/** Every command of the contract, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [
  {
    name: "run",
    usage:
      "run [--config FILE] [--ifname veilnet] [--tag T] [--dns-listen ADDR[:PORT]|off] [--no-dns-forward] " +
      "[--metrics 127.0.0.1:PORT] [--portal [--subnets C,...] | --no-portal] [--tether-idle 30s] [--no-tun]",
    summary: "run a node in the foreground from env/saved config (the default)",
    details: [
      "--config FILE       saved config to use (default: conflux.json, else up.json, in the config dir)",
      "--ifname NAME       TUN device name (env VEILNET_IFNAME; default veilnet)",
      "--tag T             rename this node (env VEILNET_CONFLUX_TAG); it answers to T.veilnet",
      "--dns-listen A[:P]  DNS server address (env VEILNET_DNS_LISTEN; default the overlay IPv4, port 53; off)",
      "--no-dns-forward    refuse names outside .veilnet instead of forwarding them to the host's resolvers",
      "--metrics H:P       serve /metrics and /healthz on a loopback address (env VEILNET_METRICS)",
      "-p, --portal        forward permitted peers' traffic to this host's networks, NATed (env VEILNET_CONFLUX_PORTAL=true)",
      "--subnets C,...     the networks offered (env VEILNET_CONFLUX_SUBNETS; default: from the routing table)",
      "--no-portal         stop being a portal (the Guardian keeps portal mode between runs until then)",
      "--tether-idle D     dissolve tethers idle this long (env VEILNET_TETHER_IDLE; default 30s)",
      "--no-tun            control plane only: no TUN device (and no DNS unless --dns-listen)",
      "env VEILNET_CONFLUX_TOKEN, VEILNET_GUARDIAN and VEILNET_GUARDIAN_CA (a PEM file) replace the saved token,",
      "                    Guardian and its CA",
    ],
    run: runCommand,
  },
  {
    name: "register",
    usage:
      "register (-t REG | -t - | --token-file FILE) [--guardian URL] [--guardian-ca FILE] [--tag T] [--ip A] " +
      "[--taints a,b] [--teams a,b] " +
      "[--portal] [--subnets C,...] [--jwt J | --jwt - | --jwt-file FILE] [--no-service] [--force]",
    summary: "register with a Guardian, save conflux.json, install and start the service",
    details: [
      "-t, --token REG     registration token (env VEILNET_REGISTRATION_TOKEN); -t - reads it from standard input",
      "--token-file FILE   read the registration token from FILE (a trailing newline is ignored)",
      "                    (-t REG shows the token to every user of this host in `ps`: prefer the others)",
      "-g, --guardian URL  the Guardian (env VEILNET_GUARDIAN), https://; a token from `guardian token create`",
      "                    names the Guardian's own CA, which is then verified by it and saved (http:// is only",
      "                    for a Guardian run with --plaintext, and warned about)",
      "--guardian-ca FILE  a private CA (PEM) the Guardian's certificate chains to, when its token names none",
      "                    (env VEILNET_GUARDIAN_CA)",
      "--tag T             name: T.veilnet (env VEILNET_CONFLUX_TAG; default node-<id>)",
      "--ip A              ask for this overlay IPv4 address (env VEILNET_CONFLUX_IP)",
      "--taints a,b        taints within what the token grants (env VEILNET_CONFLUX_TAINTS; default: all it grants)",
      "--teams a,b         teams to be associated with, in a realm whose access is by teams (env",
      "                    VEILNET_CONFLUX_TEAMS): held only if the node's owner owns or is a member of each; the",
      "                    node says which it does not get",
      "-p, --portal        portal mode, kept by the Guardian (env VEILNET_CONFLUX_PORTAL=true; see `run --help`)",
      "--subnets C,...     the networks the portal offers, inside what the token grants (env VEILNET_CONFLUX_SUBNETS;",
      "                    implies --portal; default: every subnet the token grants)",
      "--jwt J             an identity token from the realm's OIDC issuer, required when the realm has one",
      "                    (env VEILNET_CONFLUX_JWT); --jwt - reads it from standard input (not with -t -)",
      "--jwt-file FILE     read the identity token from FILE",
      "--no-service        do not install the systemd unit; start with `veilnet-conflux run`",
      "--force             register again although conflux.json exists (the old registration is not removed)",
    ],
    run: registerCommand,
  },
  {
    name: "unregister",
    usage: "unregister [--force]",
    summary: "unregister at the Guardian, remove the service and conflux.json",
    details: ["--force  remove the registration here even when the Guardian cannot be reached"],
    run: unregisterCommand,
  },
  {
    name: "up",
    usage:
      "up (-t CONFLUX_TOKEN | -t - | --token-file FILE) [--guardian URL] [--guardian-ca FILE] [--tag T] " +
      "[--ifname NAME] " +
      "[--dns-listen A[:P]] [--no-service]",
    summary: "integration mode: save up.json and start the service (foreground without systemd)",
    details: [
      "-t, --token T       a conflux token, not a registration token (env VEILNET_CONFLUX_TOKEN); -t - reads it",
      "                    from standard input (-t T shows it to every user of this host in `ps`)",
      "--token-file FILE   read the conflux token from FILE (a trailing newline is ignored)",
      "-g, --guardian URL  the Guardian (env VEILNET_GUARDIAN)",
      "--guardian-ca FILE  the CA (PEM) its certificate chains to, when not a public one: for a Guardian with its",
      "                    own realm CA, its DATA_DIR/ca.pem (saved in up.json)",
      "--tag, --ifname, --dns-listen  saved in up.json for `run` (see `run --help`)",
      "--no-service        run in the foreground instead of installing the service",
    ],
    run: upCommand,
  },
  {
    name: "down",
    usage: "down",
    summary: "stop integration mode: remove its service and up.json",
    run: downCommand,
  },
  {
    name: "install",
    usage: "install",
    summary: "install and enable the systemd unit veilnet.service for the saved config",
    run: installCommand,
  },
  { name: "start", usage: "start", summary: "start the service", run: startCommand },
  { name: "stop", usage: "stop", summary: "stop the service", run: stopCommand },
  {
    name: "remove",
    usage: "remove",
    summary: "remove the service (keeps the registration)",
    run: removeCommand,
  },
  {
    name: "status",
    usage: "status [--json]",
    summary: "node status; exits non-zero when not connected",
    details: ["--json  the status object (see README: JSON contract)"],
    run: statusCommand,
  },
  {
    name: "peers",
    usage: "peers [--json]",
    summary: "peers with path, each path's share of recent traffic, RTT and bytes",
    details: ["--json  an array of peer objects (see README: JSON contract)"],
    run: peersCommand,
  },
  {
    name: "ping",
    usage: "ping TAG|IP [--count N]",
    summary: "ping a peer through the overlay, then show the path taken",
    details: ["TAG may be written tag or tag.veilnet", "--count N, -c N  echo requests to send (default 4)"],
    run: pingCommand,
  },
  {
    name: "taint",
    usage: "taint add|remove|list [TAINT]",
    summary: "change this node's taints at runtime",
    run: taintCommand,
  },
  { name: "info", usage: "info", summary: "identity, realm and addresses of this node", run: infoCommand },
  {
    name: "netcheck",
    usage: "netcheck [--json] [--config FILE] [--timeout 5s]",
    summary: "what this host's network allows: Guardian, Master, UDP, public address, NAT, TURN",
    details: [
      "logs in with a fresh key (a session of its own, for this check), then measures:",
      "  the Guardian's round trip (GET /healthz) and the Master's (connect, PING) with that session's credentials,",
      "  whether UDP reaches the Guardian's STUN, the public address and port it sees, the NAT's mapping",
      "  (endpoint-independent when both STUN ports see one address:port), the ICE candidates a tether would",
      "  offer, and a relay candidate through each TURN server handed out",
      "--json          one object (see README: netcheck); nothing secret is printed",
      "--config FILE   saved config to use (default: conflux.json, else up.json, as `run`)",
      "--timeout D     how long UDP and ICE checks wait (default 5s)",
      "exits 0 when the Guardian and the Master are reachable (UDP may be blocked), else 1 with what failed",
    ],
    run: netcheckCommand,
  },
  {
    name: "guardian",
    usage: "guardian serve|realm|token|node|nats-config|nats-keys ...",
    summary: "the self-hosted Guardian (registration, certificates, NATS credentials)",
    // Loaded on demand: a node never runs the Guardian, and its modules (and their npm packages) cost it memory.
    run: async (args, io) => (await import("./guardian.ts")).guardianCommand(args, io),
  },
];
