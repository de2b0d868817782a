/**
 * Network namespaces for end-to-end tests: made with `ip netns add`, always deleted, and enterable by the test's
 * own thread (so the TUN devices and sockets it creates live inside).
 * @module
 */

import { enterNetns } from "../ffi/netns.ts";

let counter = 0;

/** Why namespace tests cannot run here, or undefined if they can. In CI they must run: never a silent skip. */
export function netnsUnavailable(): string | undefined {
  let why: string | undefined;
  if (Deno.uid() !== 0) why = "needs root";
  else if (!commandExists("ip")) why = "needs iproute2 (ip)";
  if (why && Deno.env.get("CI")) throw new Error(`namespace tests cannot run in CI: ${why}`);
  return why;
}

function commandExists(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      Deno.statSync(`${dir}/${name}`);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Runs a command and returns its output; throws with stderr if it fails (unless `allowFailure`). */
export async function run(
  cmd: string,
  args: string[],
  options: { allowFailure?: boolean; stdin?: string } = {},
): Promise<Deno.CommandOutput & { text: string; errors: string }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const result = {
    ...out,
    text: new TextDecoder().decode(out.stdout),
    errors: new TextDecoder().decode(out.stderr),
  };
  if (!out.success && !options.allowFailure) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${out.code}: ${result.errors.trim()}`);
  }
  return result;
}

/** One network namespace, deleted on dispose. */
export class Netns implements AsyncDisposable {
  #leave: (() => void) | undefined;

  private constructor(readonly name: string) {}

  /** Makes a namespace named after `label` and this process, with loopback up. */
  static async create(label: string): Promise<Netns> {
    // Test files run as workers of one process: the random part keeps their names apart.
    const name = `vc-${label}-${Deno.pid}-${counter++}-${crypto.randomUUID().slice(0, 6)}`;
    await run("ip", ["netns", "add", name]);
    const ns = new Netns(name);
    await ns.exec("ip", ["link", "set", "lo", "up"]);
    return ns;
  }

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** Runs a command inside the namespace. */
  exec(cmd: string, args: string[], options: { allowFailure?: boolean } = {}): ReturnType<typeof run> {
    return run("ip", ["netns", "exec", this.name, cmd, ...args], options);
  }

  /** The processes in the namespace now (`ip netns pids`). */
  async pids(): Promise<number[]> {
    const listed = await run("ip", ["netns", "pids", this.name], { allowFailure: true });
    return listed.text.split(/\s+/).filter(Boolean).map(Number);
  }

  /** Gives the namespace its own /etc/resolv.conf (`ip netns exec` mounts /etc/netns/NAME/resolv.conf). */
  async resolvConf(text: string): Promise<void> {
    await Deno.mkdir(`/etc/netns/${this.name}`, { recursive: true });
    await Deno.writeTextFile(`/etc/netns/${this.name}/resolv.conf`, text);
  }

  /** Moves the calling thread into the namespace until leave() (or dispose). */
  enter(): void {
    if (this.#leave) return;
    this.#leave = enterNetns(this.path);
  }

  leave(): void {
    const leave = this.#leave;
    this.#leave = undefined;
    leave?.();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.leave();
    await run("ip", ["netns", "del", this.name], { allowFailure: true });
    await Deno.remove(`/etc/netns/${this.name}`, { recursive: true }).catch(() => {});
  }
}
