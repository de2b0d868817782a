/**
 * Traffic for the fault tests (issue 19): from one host of a testbed to another's overlay address, pings ten a
 * second and a paced TCP transfer whose bytes are checked by hash, and the figures a fault leaves in them.
 * @module
 */

import { type NodeProc, Proc, waitFor } from "./harness.ts";
import type { Netns } from "./netns.ts";
import { type Realm, realmOnTestbed, type Testbed } from "./testbed.ts";

const TRANSFER = new URL("./tcp_transfer.ts", import.meta.url).pathname;
const PORT = 5300;

/**
 * Pings, from `ping -D` output: how many were sent and answered, and the longest silence: the longest time
 * between two answers arriving (a late answer still ends a silence only when it comes).
 */
export function pingFigures(output: string): { sent: number; answered: number; silenceS: number } {
  const m = /(\d+) packets transmitted, (\d+) received/.exec(output);
  const arrivals = [...output.matchAll(/^\[(\d+\.\d+)\].*icmp_seq=/gm)].map((a) => Number(a[1]));
  let silenceS = arrivals.length === 0 ? Infinity : 0;
  for (let i = 1; i < arrivals.length; i++) silenceS = Math.max(silenceS, arrivals[i]! - arrivals[i - 1]!);
  return { sent: Number(m?.[1] ?? 0), answered: Number(m?.[2] ?? 0), silenceS };
}

/** Resolves `s` seconds after `started` (a Date.now()). */
export function at(started: number, s: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, started + s * 1000 - Date.now())));
}

/** What a flow saw. */
export interface FlowFigures {
  pings: { sent: number; answered: number; silenceS: number };
  transfer: {
    /** Bytes the sender wrote, and the receiver read (undefined if the transfer never ended). */
    sent: number;
    received?: number;
    /** The receiver's bytes hash to the sender's. */
    intact: boolean;
    /** The longest time the receiver got nothing, once the transfer had started. */
    longestGapMs?: number;
  };
}

/** Pings and a TCP transfer running from one host to another, for `seconds`. */
export class Flow implements AsyncDisposable {
  private constructor(
    readonly seconds: number,
    readonly ping: Proc,
    readonly sink: Proc,
    readonly sender: Proc,
    /** When it started (Date.now()), for `at`. */
    readonly started: number,
  ) {}

  /** Starts the receiver on `to`, then the pings and the transfer (`rate` bytes a second) from `from`. */
  static async start(
    bed: Testbed,
    from: string,
    to: string,
    address: string,
    seconds: number,
    rate = 1_000_000,
  ): Promise<Flow> {
    const inNs = (host: string, cmd: string[]) => ["netns", "exec", bed.host(host).ns.name, ...cmd];
    const deno = [Deno.execPath(), "run", "-A", "--quiet", TRANSFER];
    const sink = new Proc("sink", "ip", inNs(to, [...deno, "serve", String(PORT)]));
    await waitFor("the receiver to listen", 10_000, () => sink.output.includes("listening"));
    const size = String(Math.round(rate * seconds));
    const sender = new Proc(
      "sender",
      "ip",
      inNs(from, [...deno, "send", address, String(PORT), size, String(rate)]),
    );
    const count = String(seconds * 10);
    const ping = new Proc(
      "ping",
      "ip",
      inNs(from, ["ping", "-D", "-i", "0.1", "-c", count, "-W", "1", address]),
    );
    return new Flow(seconds, ping, sink, sender, Date.now());
  }

  /** Waits for the pings and the transfer to end (the transfer gets `graceS` more to catch up) and reads them. */
  async figures(graceS = 60): Promise<FlowFigures> {
    await this.ping.finished();
    const deadline = setTimeout(() => {
      this.sender.stop("SIGKILL");
      this.sink.stop("SIGKILL");
    }, graceS * 1000);
    try {
      await Promise.all([this.sender.finished(), this.sink.finished()]);
    } finally {
      clearTimeout(deadline);
    }
    const [sentBytes, sentHash] = this.sender.output.trim().split("\n").at(-1)!.split(" ");
    const got = /^(\d+) ([0-9a-f]{64}) (\d+) \d+$/m.exec(this.sink.output);
    return {
      pings: pingFigures(this.ping.output),
      transfer: {
        sent: Number(sentBytes) || 0,
        received: got ? Number(got[1]) : undefined,
        intact: got !== null && got[1] === sentBytes && got[2] === sentHash,
        longestGapMs: got ? Number(got[3]) : undefined,
      },
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([this.ping.stop("SIGKILL"), this.sender.stop("SIGKILL"), this.sink.stop("SIGKILL")]);
  }
}

/**
 * The bounds every fault is held to: ping answers resume within `silenceS` seconds, and every TCP byte arrives,
 * once. `log` (the node's output) goes with a failure.
 */
export function assertBounds(figures: FlowFigures, silenceS: number, log: string): void {
  if (figures.pings.silenceS > silenceS) {
    throw new Error(
      `bound: answers resume within ${silenceS} s, not ${figures.pings.silenceS.toFixed(1)}\n${log}`,
    );
  }
  if (!figures.transfer.intact) throw new Error(`bound: every byte delivered, once\n${log}`);
}

/** One line for a test's output: the fault and what the flow saw. */
export function describeFigures(fault: string, f: FlowFigures): string {
  const p = f.pings;
  const t = f.transfer;
  const bytes = t.received === undefined
    ? `the transfer did not end (${t.sent} bytes sent)`
    : `${t.received}/${t.sent} bytes ${t.intact ? "intact" : "NOT intact"}, longest stall ${
      ((t.longestGapMs ?? 0) / 1000).toFixed(1)
    } s`;
  return `${fault}: ${p.answered}/${p.sent} pings answered, longest silence ${p.silenceS.toFixed(1)} s; ` +
    `TCP ${bytes}`;
}

/**
 * A realm of `names` in namespaces (options as realmOnTestbed's), once a's first ping has reached `to` (default
 * b), with that node's overlay address.
 */
export async function reachingRealm(
  names: string[],
  options: {
    certTtl?: string;
    masters?: number;
    beforeFirstPing?: (realm: Realm) => Promise<void>;
    to?: string;
  } = {},
): Promise<{ realm: Realm; a: NodeProc; ns: Netns; address: string }> {
  const realm = await realmOnTestbed(names, [], {}, [], options);
  const a = realm.node("a");
  const ns = realm.bed.host("a").ns;
  try {
    await options.beforeFirstPing?.(realm);
    const to = options.to ?? "b";
    const b = (await waitFor(`a to find ${to}`, 15_000, async () => (await a.resolve(to))[0]))!;
    const address = b.ips[0]!;
    await waitFor(
      `a first ping to ${to}`,
      30_000,
      async () => (await ns.exec("ping", ["-c", "1", "-W", "1", address], { allowFailure: true })).success,
    );
    return { realm, a, ns, address };
  } catch (error) {
    await realm[Symbol.asyncDispose]();
    throw error;
  }
}
