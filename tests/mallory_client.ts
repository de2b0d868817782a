/**
 * The test side of the attacker's toolkit: runs tests/mallory.ts in a network namespace and sends it commands.
 * @module
 */

/** The attacker's toolkit (tests/mallory.ts), run inside network namespace `netns`; `do` sends commands. */
export class Mallory implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pending = new Map<number, (answer: Record<string, unknown>) => void>();
  readonly #reading: Promise<void>;
  #stderr = "";
  #next = 1;

  constructor(readonly name: string, netns: string) {
    const toolkit = new URL("./mallory.ts", import.meta.url).pathname;
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", netns, Deno.execPath(), "run", "-A", "--quiet", toolkit],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const lines = async () => {
      let buffered = "";
      for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
        buffered += chunk;
        let nl;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const answer = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
          buffered = buffered.slice(nl + 1);
          this.#pending.get(answer.id as number)?.(answer);
          this.#pending.delete(answer.id as number);
        }
      }
    };
    const errors = async () => {
      for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr += chunk;
      }
    };
    this.#reading = Promise.all([lines(), errors()]).then(() => {}, () => {});
  }

  /** What the process wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Runs a command; throws with its error (and the process's stderr) if it failed or took over `ms`. */
  async do<T = Record<string, unknown>>(
    op: string,
    args: Record<string, unknown> = {},
    ms = 40_000,
  ): Promise<T> {
    const id = this.#next++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const answer = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.#pending.set(id, resolve);
      timer = setTimeout(() => reject(new Error(`${this.name} ${op}: no answer in ${ms} ms`)), ms);
    });
    await this.#writer.write(new TextEncoder().encode(`${JSON.stringify({ id, op, ...args })}\n`));
    try {
      const a = await answer;
      if (!a.ok) throw new Error(`${this.name} ${op} failed: ${a.error}\n--- stderr:\n${this.#stderr}`);
      return a as T;
    } finally {
      clearTimeout(timer);
      this.#pending.delete(id);
    }
  }

  /** Closes the session and ends the process (killed if it lingers). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.do("close", {}, 5_000).catch(() => {});
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#reading;
  }
}
