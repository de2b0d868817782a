/**
 * End-to-end harness: real processes driven through the command line, as a user would. A Guardian (with or
 * without its embedded nats-server), standalone nats-servers, and nodes that register and run with their own
 * config directories. Everything is stopped and removed on dispose.
 * @module
 */

import { AGENT_ENV } from "../src/service/permissions.ts";
import { selfCommand } from "../src/service/systemd.ts";
import { guardianFetch, trustGuardianCa } from "../src/agent/guardian_client.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/**
 * A free TCP port for a server a test starts (bound and released). Picked below the kernel's ephemeral range
 * (32768+), where outgoing connections take their local ports: a port from bind(0) could be taken by some
 * connection of another test before the server that was meant to bind it starts.
 */
export function freePort(): number {
  for (let attempt = 0;; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * 22_000);
    try {
      Deno.listen({ hostname: "0.0.0.0", port }).close();
      return port;
    } catch (error) {
      if (attempt > 100) throw error;
    }
  }
}

/** Polls `check` until it returns a value (not undefined/false), or throws after `ms` with `what`. */
export async function waitFor<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined | false> | T | undefined | false,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** A temporary directory removed (with everything in it) on dispose: `await using dir = await tempDir("x-")`. */
export async function tempDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}) };
}

/** Runs the CLI to completion (inside network namespace `netns` if given). */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
  netns?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const command = [Deno.execPath(), "run", "-A", "--quiet", MAIN, ...args];
  if (netns) command.unshift("ip", "netns", "exec", netns);
  const out = await new Deno.Command(command[0]!, {
    args: command.slice(1),
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/**
 * CPU seconds (user + system) in a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` file, with `tick` clock
 * ticks a second (USER_HZ, 100 on Linux).
 */
export function cpuSecondsOf(statPath: string, tick = 100): number {
  const stat = Deno.readTextFileSync(statPath);
  // Fields after the command name (which may hold spaces) start at field 3; utime is 14 and stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / tick;
}

/** A long-running child process whose output is kept for failure messages. */
export class Proc implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  #output = "";
  readonly #collected: Promise<void>;
  readonly done: Promise<Deno.CommandStatus>;

  constructor(readonly name: string, cmd: string, args: string[], env: Record<string, string> = {}) {
    this.#child = new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped", stdin: "null" })
      .spawn();
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this.#output += chunk;
    };
    // Output is collected in the background: a grandchild holding the pipes must not keep `done` waiting.
    this.#collected = Promise.all([collect(this.#child.stdout), collect(this.#child.stderr)]).then(
      () => {},
      () => {},
    );
    this.done = this.#child.status;
  }

  /**
   * The exit, and then all of the output (at most 2 s more, for a grandchild holding the pipes): the exit can be
   * seen before the last lines are read, and a pinger's summary went missing so.
   */
  async finished(): Promise<Deno.CommandStatus> {
    const status = await this.done;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#collected, new Promise((resolve) => timer = setTimeout(resolve, 2_000))]);
    clearTimeout(timer);
    return status;
  }

  get output(): string {
    return this.#output;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Sends `signal` and waits for the exit; SIGKILL after `graceMs` if it is still running. */
  async stop(signal: Deno.Signal = "SIGTERM", graceMs = 5_000): Promise<Deno.CommandStatus> {
    const send = (s: Deno.Signal) => {
      try {
        this.#child.kill(s);
      } catch { /* already exited */ }
    };
    send(signal);
    const timer = setTimeout(() => send("SIGKILL"), graceMs);
    try {
      return await this.done;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops it gracefully (so it can stop its own children), killing it if it lingers. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** A Guardian process. */
export class GuardianProc implements AsyncDisposable {
  proc: Proc | undefined;
  readonly url: string;
  readonly port: number;

  constructor(
    readonly dataDir: string,
    readonly options: {
      embeddedMaster?: boolean;
      natsPort?: number;
      master?: string[];
      certTtl?: string;
      /** Where it listens (and its Master, if embedded); default loopback. */
      listenHost?: string;
      /** More `guardian serve` flags (`--turn ...`, say). */
      flags?: string[];
    } = {},
  ) {
    this.port = freePort();
    const scheme = options.flags?.includes("--plaintext") ? "http" : "https";
    const host = !options.listenHost || options.listenHost === "0.0.0.0" ? "127.0.0.1" : options.listenHost;
    this.url = `${scheme}://${host}:${this.port}`;
  }

  /** The realm CA it made (PEM), once it has started with TLS. */
  get ca(): string {
    return Deno.readTextFileSync(`${this.dataDir}/ca.pem`);
  }

  /** Starts (or restarts) it and waits until it answers. */
  async start(): Promise<void> {
    const host = this.options.listenHost ?? "127.0.0.1";
    const args = ["run", "-A", "--quiet", MAIN, "guardian", "serve", "--listen", `${host}:${this.port}`];
    args.push("--data-dir", this.dataDir, "--cert-ttl", this.options.certTtl ?? "1h");
    if (this.options.embeddedMaster) {
      args.push("--embedded-master", "--nats-port", String(this.options.natsPort));
    }
    if (this.options.master) args.push("--master", this.options.master.join(","));
    args.push(...this.options.flags ?? []);
    this.proc = new Proc("guardian", Deno.execPath(), args);
    await waitFor("the Guardian to answer", 15_000, async () => {
      // This process (the test) trusts the realm CA, as a registered node does.
      if (this.url.startsWith("https:")) trustGuardianCa(this.ca);
      return (await guardianFetch(`${this.url}/healthz`)).ok;
    });
  }

  async admin(args: string[]): Promise<string> {
    const r = await cli(["guardian", ...args, "--data-dir", this.dataDir]);
    if (r.code !== 0) throw new Error(`guardian ${args.join(" ")} failed: ${r.stderr}`);
    return r.stdout.trim();
  }

  /** A `guardian` admin command through this Guardian's API (what only the serving Guardian knows: reports). */
  async viaApi(args: string[]): Promise<string> {
    const r = await cli([
      "guardian",
      ...args,
      "--guardian",
      this.url,
      "--admin-token-file",
      `${this.dataDir}/admin.token`,
      "--guardian-ca",
      `${this.dataDir}/ca.pem`,
    ]);
    if (r.code !== 0) throw new Error(`guardian ${args.join(" ")} failed: ${r.stderr}`);
    return r.stdout;
  }

  async stop(): Promise<void> {
    await this.proc?.stop();
  }

  /**
   * Stops it, and its embedded Master if that outlived it: a Guardian a test killed with SIGKILL could not stop
   * its nats-server child, which would run on after the test.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.proc?.stop();
    if (this.options.embeddedMaster) {
      await new Deno.Command("pkill", { args: ["-f", `${this.dataDir}/nats.conf`] }).output();
    }
  }
}

/**
 * Starts a nats-server for the Guardian of `dataDir`, configured by `guardian nats-config` (as an operator running
 * their own Master would). `configFlags` go to nats-config (cluster settings), `serverFlags` to nats-server.
 */
export async function natsServer(
  dataDir: string,
  name: string,
  port: number,
  options: { configFlags?: string[]; serverFlags?: string[] } = {},
): Promise<Proc> {
  const conf = await cli([
    "guardian",
    "nats-config",
    "--data-dir",
    dataDir,
    "--port",
    String(port),
    // Each server its own account JWT directory and certificate, beside its config.
    "--resolver-dir",
    `${dataDir}/../${name}-jwt`,
    "--tls-dir",
    `${dataDir}/../${name}-tls`,
    ...(options.configFlags ?? []),
  ]);
  if (conf.code !== 0) throw new Error(`guardian nats-config failed: ${conf.stderr}`);
  const path = `${dataDir}/../${name}.conf`;
  await Deno.writeTextFile(path, conf.stdout);
  return new Proc(name, "nats-server", ["-c", path, ...(options.serverFlags ?? [])]);
}

/** A node: its config directory, registered through the CLI, run as `veilnet-conflux run`. */
export class NodeProc implements AsyncDisposable {
  proc: Proc | undefined;
  readonly env: Record<string, string>;

  /**
   * Without `netns`, the node runs in this namespace with no TUN (control plane only); with it, the node runs
   * inside that namespace with its TUN device.
   */
  constructor(
    readonly tag: string,
    readonly configDir: string,
    readonly options: { netns?: string; runFlags?: string[] } = {},
  ) {
    this.env = { // as the systemd unit sets it
      ...AGENT_ENV,
      VEILNET_CONFIG_DIR: configDir,
      ...(Deno.env.get("VEILNET_DEBUG") ? { VEILNET_DEBUG: "1" } : {}),
    };
  }

  async register(guardian: string, token: string, flags: string[] = []): Promise<void> {
    const r = await cli([
      "register",
      "-t",
      token,
      "--guardian",
      guardian,
      "--tag",
      this.tag,
      "--no-service",
      ...flags,
    ], this.env);
    if (r.code !== 0) throw new Error(`register ${this.tag} failed: ${r.stderr}`);
  }

  /** Starts `run` and waits until its local API answers. */
  async start(): Promise<void> {
    // With the permissions a node has outside tests (the systemd unit's), never -A.
    const run = [...selfCommand(this.configDir), "run", ...(this.options.runFlags ?? [])];
    this.proc = this.options.netns
      ? new Proc(this.tag, "ip", ["netns", "exec", this.options.netns, ...run], this.env)
      : new Proc(this.tag, run[0]!, [...run.slice(1), "--no-tun"], this.env);
    await waitFor(`node ${this.tag} to start`, 20_000, () => this.proc!.output.includes("local API on"));
  }

  async peers(): Promise<{ tag: string; ips: string[] }[]> {
    const r = await cli(["peers", "--json"], this.env);
    if (r.code !== 0) throw new Error(`peers on ${this.tag}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** Asks the running node who answers to `<tag>.veilnet` (its local API): it looks the tag up if it knows none. */
  async resolve(tag: string): Promise<{ tag: string; ips: string[] }[]> {
    const client = Deno.createHttpClient(
      {
        proxy: { transport: "unix", path: `${this.configDir}/conflux.sock` },
      } as Deno.CreateHttpClientOptions,
    );
    try {
      const res = await fetch(`http://conflux/resolve?tag=${tag}`, { client } as RequestInit);
      if (!res.ok) throw new Error(`resolve ${tag} on ${this.tag}: ${res.status} ${await res.text()}`);
      return await res.json();
    } finally {
      client.close();
    }
  }

  /** Looks `tag` up (as this node's first packet or DNS question would) and returns it as `peers` lists it. */
  async find(tag: string): Promise<{ tag: string; ips: string[] }> {
    await this.resolve(tag);
    const peer = (await this.peers()).find((p) => p.tag === tag);
    if (!peer) throw new Error(`${this.tag} could not find ${tag}:\n${this.proc?.output}`);
    return peer;
  }

  async peerTags(): Promise<string[]> {
    return (await this.peers()).map((p) => p.tag).sort();
  }

  async status(): Promise<{ code: number; json: Record<string, unknown> }> {
    const r = await cli(["status", "--json"], this.env);
    return { code: r.code, json: JSON.parse(r.stdout || "{}") };
  }

  async stop(): Promise<void> {
    await this.proc?.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.proc?.stop();
  }
}
