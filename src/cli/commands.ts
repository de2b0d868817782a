/**
 * The command-line contract (../shared/DESIGN.md, "Command line"), as data: what each command takes and whether
 * this build has it yet. `--help` is rendered from this table, so it cannot claim a command that does not exist.
 * @module
 */

import { guardianCommand } from "./guardian.ts";
import {
  infoCommand,
  peersCommand,
  registerCommand,
  runCommand,
  statusCommand,
  taintCommand,
} from "./node.ts";
import type { Output } from "./main.ts";

/** One command of the contract. */
export interface Command {
  name: string;
  usage: string;
  summary: string;
  /** Runs the command and returns the exit code; absent while the command is not built yet. */
  run?: (args: string[], io: Output) => Promise<number>;
}

/** Every command of the contract, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [
  {
    name: "run",
    usage: "run [--ifname veilnet] [--tag T] [--dns-listen ADDR[:PORT]|off] [--no-dns-forward] " +
      "[--tether-idle 30s] [--no-tun]",
    summary: "run a node in the foreground from env/saved config (the default)",
    run: runCommand,
  },
  {
    name: "register",
    usage: "register -t REG [--guardian URL] [--tag T] [--ip A] [--taints a,b] [--portal] [--no-service]",
    summary: "register with a Guardian, save conflux.json, install and start the service",
    run: registerCommand,
  },
  { name: "unregister", usage: "unregister", summary: "unregister, remove the saved config and the service" },
  {
    name: "up",
    usage: "up -t CONFLUX_TOKEN [--guardian URL]",
    summary: "integration mode: save up.json, start",
  },
  { name: "down", usage: "down", summary: "stop integration mode and remove up.json" },
  { name: "install", usage: "install", summary: "install the systemd unit veilnet.service" },
  { name: "start", usage: "start", summary: "start the service" },
  { name: "stop", usage: "stop", summary: "stop the service" },
  { name: "remove", usage: "remove", summary: "remove the service (keeps the registration)" },
  {
    name: "status",
    usage: "status [--json]",
    summary: "node status; exits non-zero when not connected",
    run: statusCommand,
  },
  { name: "peers", usage: "peers [--json]", summary: "peers with path, RTT and bytes", run: peersCommand },
  { name: "ping", usage: "ping TAG|IP [--count N]", summary: "ping a peer through the overlay" },
  {
    name: "taint",
    usage: "taint add|remove|list [TAINT]",
    summary: "change this node's taints at runtime",
    run: taintCommand,
  },
  { name: "info", usage: "info", summary: "identity, realm and addresses of this node", run: infoCommand },
  {
    name: "guardian",
    usage: "guardian serve|realm|token|nats-config ...",
    summary: "the self-hosted Guardian (registration, certificates, NATS credentials)",
    run: guardianCommand,
  },
];
