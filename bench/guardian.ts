/**
 * Guardian under abuse (issue 17): a real Guardian process renews NODES nodes, each logging in with a fresh key
 * at a fixed rate (all of them within a few seconds, as a realm whose certificates were issued together renews),
 * first alone, then while one source floods it with bad tokens at full speed. The flood runs in a worker (its own
 * event loop and thread, as another host would) and reaches the Guardian at another of this host's addresses, so
 * the Guardian sees it as another source than the nodes (127.0.0.1). Figures: renewals that succeeded and failed,
 * renewal latency, what the flood sent and got, and the Guardian's CPU per login (from /proc).
 *
 * `VEILNET_BENCH_NODES=200` sets the number of nodes; `VEILNET_BENCH_RENEW_RATE=40` the logins started per second.
 * @module
 */

import { guardianClient, guardianFetch, trustGuardianCa } from "../src/agent/guardian_client.ts";
import { Identity } from "../src/crypto/identity.ts";
import { signLogin } from "../src/crypto/login_proof.ts";
import { guardianHandler } from "../src/guardian/api.ts";
import process from "node:process";
import { cpuSecondsOf, GuardianProc, tempDir } from "../tests/harness.ts";
import { b64, guardianSetup } from "../tests/guardian_fixture.ts";
import type { Figure } from "./crypto.ts";

const DEFAULT_NODES = 200;
const DEFAULT_RENEW_RATE = 40;
/** Requests the flood keeps in flight. */
const FLOOD_CONCURRENCY = 32;
/** What each flood request carries: a login-sized body behind a forged token. */
const FLOOD_BODY_BYTES = 16 * 1024;
const WORKER_NAME = "guardian-bench-flood";

/** What the flood worker reports when told to stop. */
interface FloodReport {
  sent: number;
  seconds: number;
  statuses: Record<string, number>;
}

/** The worker side: floods `url` with forged conflux tokens until told to stop, then reports. */
function runFlood(): void {
  const scope = self as unknown as {
    onmessage: ((e: MessageEvent) => void) | null;
    postMessage(message: unknown): void;
  };
  scope.onmessage = async (e: MessageEvent<{ url: string; ca: string }>) => {
    trustGuardianCa(e.data.ca);
    let stop = false;
    scope.onmessage = () => stop = true;
    const statuses: Record<string, number> = {};
    let sent = 0;
    const body = new Uint8Array(FLOOD_BODY_BYTES).fill(0x20);
    const started = performance.now();
    const loop = async () => {
      while (!stop) {
        sent++;
        try {
          const res = await guardianFetch(`${e.data.url}/conflux/session/login`, {
            method: "POST",
            headers: { authorization: `Bearer vcfx.${crypto.randomUUID()}.forged` },
            body,
          });
          await res.body?.cancel();
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        } catch {
          statuses.error = (statuses.error ?? 0) + 1;
        }
      }
    };
    await Promise.all(Array.from({ length: FLOOD_CONCURRENCY }, loop));
    scope.postMessage(
      { sent, seconds: (performance.now() - started) / 1000, statuses } satisfies FloodReport,
    );
  };
}

if ((globalThis as { name?: string }).name === WORKER_NAME) runFlood();

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  return cpuSecondsOf(`/proc/${pid}/stat`);
}

/** An address of this host other than loopback, so the flood is another source; undefined if it has none. */
function otherAddress(): string | undefined {
  return Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."))?.address;
}

const percentile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

/** Every node logs in once with a fresh key, `rate` logins started per second; latencies and failures. */
async function renewAll(
  url: string,
  tokens: string[],
  rate: number,
): Promise<{ ok: number[]; failed: Record<string, number>; seconds: number }> {
  const identities = await Promise.all(tokens.map(() => Identity.generate())); // made before: not timed
  const ok: number[] = [];
  const failed: Record<string, number> = {};
  const started = performance.now();
  await Promise.all(tokens.map(async (token, i) => {
    await new Promise((r) => setTimeout(r, i * 1000 / rate));
    const t = performance.now();
    try {
      await guardianClient.login(url, token, identities[i]!);
      ok.push(performance.now() - t);
    } catch (error) {
      const key = String((error as { status?: number }).status ?? (error as Error).message.slice(0, 40));
      failed[key] = (failed[key] ?? 0) + 1;
    }
  }));
  ok.sort((a, b) => a - b);
  return { ok, failed, seconds: (performance.now() - started) / 1000 };
}

/**
 * One login in-process, the handler alone (requests signed beforehand): the wall time of each, and the CPU time of
 * all of them over their number (the process's, so the runtime's crypto threads count too).
 */
async function inProcessLogins(count: number): Promise<{ wall: number[]; cpuMs: number }> {
  const { call, reg, guardian } = await guardianSetup();
  const handler = guardianHandler(guardian);
  const node = (await call("POST", "/conflux/register", { token: reg, body: {} })).json.token as string;
  const requests: Request[] = [];
  for (let i = 0; i < count; i++) {
    const identity = await Identity.generate();
    const body = new TextEncoder().encode(JSON.stringify({
      public_key: b64(identity.publicKey),
      timestamp: Date.now(),
      nonce: crypto.randomUUID().replaceAll("-", ""),
    }));
    const headers = {
      authorization: `Bearer ${node}`,
      "veilnet-signature": b64(await signLogin(identity, node.split(".")[1]!, body)),
    };
    requests.push(new Request("http://g/conflux/session/login", { method: "POST", headers, body }));
  }
  const wall: number[] = [];
  const before = process.cpuUsage();
  for (const req of requests) {
    const t = performance.now();
    const res = await handler(req);
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`an in-process login failed (${res.status})`);
    wall.push(performance.now() - t);
  }
  const cpu = process.cpuUsage(before);
  return { wall: wall.sort((a, b) => a - b), cpuMs: (cpu.user + cpu.system) / 1000 / count };
}

/** The whole section. */
export async function guardianBench(): Promise<Figure[]> {
  const nodes = Number(Deno.env.get("VEILNET_BENCH_NODES") ?? DEFAULT_NODES);
  const rate = Number(Deno.env.get("VEILNET_BENCH_RENEW_RATE") ?? DEFAULT_RENEW_RATE);
  if (!Number.isInteger(nodes) || nodes < 1 || !(rate > 0)) {
    throw new RangeError(
      `VEILNET_BENCH_NODES must be a whole number >= 1 and VEILNET_BENCH_RENEW_RATE above 0; got ${nodes}, ${rate}`,
    );
  }
  const figures: Figure[] = [];
  await inProcessLogins(20); // warm-up: compiled code and the cached keys, as in a Guardian that has run a while
  const inProcess = await inProcessLogins(200);
  figures.push({
    name: "login CPU, in-process handler",
    value: inProcess.cpuMs,
    unit: "ms",
    note:
      `per login over ${inProcess.wall.length}; wall median ${
        percentile(inProcess.wall, 0.5).toFixed(2)
      } ms, ` +
      `p95 ${
        percentile(inProcess.wall, 0.95).toFixed(2)
      } ms (issue 17 measured ~85 ms before keys were cached)`,
  });

  await using tmp = await tempDir("vc-bench-guardian-");
  const guardian = new GuardianProc(`${tmp.path}/guardian`, {
    listenHost: "0.0.0.0",
    flags: ["--stun-port", "off"],
  });
  let worker: Worker | undefined;
  try {
    await guardian.start();
    await guardian.admin(["realm", "create", "home", "--cidr", "10.128.0.0/16"]);
    const reg = await guardian.admin(["token", "create", "--realm", "home"]);
    const url = `https://127.0.0.1:${guardian.port}`;
    const tokens: string[] = [];
    for (let i = 0; i < nodes; i++) tokens.push((await guardianClient.register(url, reg, {})).token);
    const pid = guardian.proc!.pid;

    // Alone: what a login costs the Guardian, HTTP included.
    await renewAll(url, tokens, rate); // warm-up: a Guardian that has run a while has compiled its login path
    // What the Guardian spends idle (its timers) is not the logins': measured first, and taken off.
    const idle0 = { cpu: cpuSeconds(pid), at: performance.now() };
    await new Promise((r) => setTimeout(r, 3_000));
    const idlePerSecond = (cpuSeconds(pid) - idle0.cpu) / ((performance.now() - idle0.at) / 1000);
    const cpu0 = cpuSeconds(pid);
    const quiet = await renewAll(url, tokens, rate);
    const cpuPerLogin = (cpuSeconds(pid) - cpu0 - idlePerSecond * quiet.seconds) /
      Math.max(1, quiet.ok.length) * 1000;
    figures.push(renewalFigure(`${nodes} renewals, quiet`, quiet));
    figures.push({
      name: "Guardian CPU per login",
      value: cpuPerLogin,
      unit: "ms",
      note: `the process's CPU over the quiet renewals, its idle CPU taken off, per login (HTTP and the ` +
        `database on disk included); idle ${(idlePerSecond * 100).toFixed(1)}% of a core`,
    });

    // Under a flood from another source.
    const address = otherAddress();
    const floodUrl = `https://${address ?? "127.0.0.1"}:${guardian.port}`;
    worker = new Worker(import.meta.url, { type: "module", name: WORKER_NAME });
    const report = new Promise<FloodReport>((resolve) => worker!.onmessage = (e) => resolve(e.data));
    const cpu1 = cpuSeconds(pid);
    const t1 = performance.now();
    worker.postMessage({ url: floodUrl, ca: guardian.ca });
    await new Promise((r) => setTimeout(r, 1_000)); // the flood has spent its burst before the renewals start
    const flooded = await renewAll(url, tokens, rate);
    worker.postMessage("stop");
    const flood = await report;
    const busy = (cpuSeconds(pid) - cpu1) / ((performance.now() - t1) / 1000) * 100;
    figures.push(renewalFigure(`${nodes} renewals, under flood`, flooded));
    const counts = Object.entries(flood.statuses).map(([s, n]) => `${s}: ${n}`).join(", ");
    figures.push({
      name: "flood of bad tokens, one source",
      value: flood.sent / flood.seconds,
      unit: "req/s",
      note: `${flood.sent} sent in ${flood.seconds.toFixed(1)} s from ${
        address ?? "127.0.0.1 (no other address: " +
            "same source as the nodes)"
      }, ${FLOOD_CONCURRENCY} in flight, ${FLOOD_BODY_BYTES / 1024} KiB bodies; got ${counts}`,
    });
    figures.push({
      name: "Guardian CPU under flood",
      value: busy,
      unit: "%",
      note: "of one core, over the flood",
    });
  } finally {
    worker?.terminate();
    await guardian.stop();
  }
  return figures;
}

function renewalFigure(
  label: string,
  r: { ok: number[]; failed: Record<string, number>; seconds: number },
): Figure {
  const failed = Object.values(r.failed).reduce((a, b) => a + b, 0);
  const why = failed > 0 ? ` (${Object.entries(r.failed).map(([k, n]) => `${k}: ${n}`).join(", ")})` : "";
  return {
    name: `${label}: latency`,
    value: percentile(r.ok, 0.5),
    unit: "ms",
    note:
      `median; p95 ${
        percentile(r.ok, 0.95).toFixed(1)
      } ms; ${r.ok.length} succeeded, ${failed} failed${why}; ` +
      `over ${r.seconds.toFixed(1)} s`,
  };
}
