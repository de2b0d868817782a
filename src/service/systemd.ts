/**
 * The system service: the systemd unit `veilnet.service` that runs the node. Everything goes through
 * `systemctl`; the unit file is the only thing written. `VEILNET_SYSTEMD_ROOT` (default: none) prefixes the
 * paths looked at and written, for tests and image builds.
 * @module
 */

import { AGENT_ENV, AGENT_RUNTIME_FLAGS, agentPermissions } from "./permissions.ts";

/** The unit's name. */
export const UNIT = "veilnet.service";

/** A command's outcome. */
export interface RunResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/** Runs a host command (with `input` on its stdin); replaced in tests. */
export type Runner = (command: string, args: string[], input?: string) => Promise<RunResult>;

/** Runs a command, capturing its output; a missing program is a failed result, not a throw. */
export const runHost: Runner = async (
  command: string,
  args: string[],
  input?: string,
): Promise<RunResult> => {
  try {
    const child = new Deno.Command(command, {
      args,
      stdin: input === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (input !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(input));
      await writer.close();
    }
    const r = await child.output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { ok: r.success, stdout: text(r.stdout), stderr: text(r.stderr) };
  } catch (error) {
    return { ok: false, stdout: "", stderr: `${command}: ${(error as Error).message}` };
  }
};

/** The command line that runs this same program: the executable itself when compiled, else deno + main.ts. */
export function selfCommand(configDir: string): string[] {
  const exec = Deno.execPath();
  if (!/(^|\/)deno$/.test(exec)) return [exec];
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const home = Deno.env.get("HOME") ?? "/root";
  const cache = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("XDG_CACHE_HOME") ?? `${home}/.cache`}/deno`;
  const source = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
  return [
    exec,
    "run",
    "--quiet",
    ...agentPermissions(configDir, cache, source),
    ...AGENT_RUNTIME_FLAGS,
    main,
  ];
}

/**
 * The unit file text for a node started with `args` (e.g. `run --config …`). No secret belongs in it: the file
 * is world-readable and its ExecStart line shows in `ps`; the node reads its token from the 0600 config file.
 */
export function unitText(command: string[], args: string[], configDir: string): string {
  const quote = (s: string) =>
    /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, "\\$1")}"`;
  return [
    "# Written by veilnet-conflux; `veilnet-conflux remove` deletes it.",
    "[Unit]",
    "Description=veilnet-conflux overlay node",
    "Wants=network-online.target",
    "After=network-online.target",
    "",
    "[Service]",
    `Environment=VEILNET_CONFIG_DIR=${quote(configDir)}`,
    ...Object.entries(AGENT_ENV).map(([name, value]) => `Environment=${name}=${quote(value)}`),
    `ExecStart=${[...command, ...args].map(quote).join(" ")}`,
    "Restart=on-failure",
    "RestartSec=5",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** The node's systemd unit on this host. */
export class Service {
  readonly #root: string;
  readonly #run: Runner;

  constructor(options: { root?: string; run?: Runner } = {}) {
    this.#root = options.root ?? Deno.env.get("VEILNET_SYSTEMD_ROOT") ?? "";
    this.#run = options.run ?? runHost;
  }

  /** Where the unit file lives. */
  get path(): string {
    return `${this.#root}/etc/systemd/system/${UNIT}`;
  }

  /** True when systemd manages this host (it creates /run/systemd/system at boot). */
  get available(): boolean {
    return exists(`${this.#root}/run/systemd/system`);
  }

  get installed(): boolean {
    return exists(this.path);
  }

  /** The installed unit's text ("" when none). */
  unit(): string {
    try {
      return Deno.readTextFileSync(this.path);
    } catch {
      return "";
    }
  }

  async #systemctl(...args: string[]): Promise<void> {
    const r = await this.#run("systemctl", args);
    if (!r.ok) {
      throw new Error(`systemctl ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim() || "no output"}`);
    }
  }

  #needSystemd(): void {
    if (!this.available) {
      throw new Error(
        "systemd does not run this host: start the node in the foreground with `veilnet-conflux run` " +
          "(or under your own supervisor)",
      );
    }
  }

  #needInstalled(): void {
    this.#needSystemd();
    if (!this.installed) throw new Error(`${UNIT} is not installed: run \`veilnet-conflux install\``);
  }

  /** Writes the unit (replacing an older one) and enables it. */
  async install(command: string[], args: string[], configDir: string): Promise<void> {
    this.#needSystemd();
    Deno.mkdirSync(this.path.slice(0, this.path.lastIndexOf("/")), { recursive: true });
    Deno.writeTextFileSync(this.path, unitText(command, args, configDir), { mode: 0o644 });
    await this.#systemctl("daemon-reload");
    await this.#systemctl("enable", UNIT);
  }

  async start(): Promise<void> {
    this.#needInstalled();
    await this.#systemctl("start", UNIT);
  }

  async stop(): Promise<void> {
    this.#needInstalled();
    await this.#systemctl("stop", UNIT);
  }

  /** Stops, disables and deletes the unit; nothing to do when it is not installed. */
  async remove(): Promise<boolean> {
    if (!this.installed) return false;
    await this.#run("systemctl", ["stop", UNIT]);
    await this.#run("systemctl", ["disable", UNIT]);
    Deno.removeSync(this.path);
    await this.#run("systemctl", ["daemon-reload"]);
    return true;
  }

  /** `systemctl is-active` (active, inactive, failed, …), or "not installed". */
  async state(): Promise<string> {
    if (!this.available || !this.installed) return "not installed";
    return (await this.#run("systemctl", ["is-active", UNIT])).stdout.trim() || "unknown";
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
