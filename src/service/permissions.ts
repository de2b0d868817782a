/**
 * The permissions the agent runs with outside tests (DESIGN.md, "Permission-scoped runtime"): the systemd unit
 * and compile.sh both take them from here.
 * @module
 */

/**
 * Deno permission flags for a node whose configuration lives in `configDir`; `moduleCache` is Deno's cache
 * directory and `source` the program's own directory when the node runs from source (libdatachannel's native
 * addon is read from the cache, the data-plane worker's module from the source).
 */
export function agentPermissions(configDir: string, moduleCache?: string, source?: string): string[] {
  const read = ["/etc", "/run/systemd", configDir, moduleCache, source].filter((p) => p !== undefined);
  return [
    "--allow-ffi", // libc: the TUN device and kernel files (Deno refuses /proc, /dev to others); libdatachannel; libcrypto
    "--allow-net", // Guardian, Master, WebRTC, DNS, local API, metrics
    `--allow-read=${read.join(",")}`,
    `--allow-write=/etc/systemd/system,${configDir}`,
    "--allow-run=nats-server,nft,resolvectl,systemctl,ip,ping",
    "--allow-env",
    "--allow-sys",
  ];
}

/**
 * Runtime flags the agent runs with (the systemd unit and compile.sh add them):
 * - no V8 code cache: Deno otherwise maps its cache database of compiled code into every node and keeps what it
 *   read. An idle node is ~6-8 MiB smaller (104.4-105.9 against 111.5-113.5 MiB, two realms each); it starts
 *   ~50 ms later (`--version`: 0.18-0.21 s against 0.13-0.15 s), compiling what it runs from source.
 * - semi-spaces of 1 MiB for V8's young generation, which V8 otherwise grows to 16 MiB and keeps. An idle node is
 *   ~12 MiB smaller; the data plane's hot path reuses its buffers, and `deno task bench tunnel` carried as much
 *   with the flag as without.
 * - a function is compiled by TurboFan, V8's optimizing compiler, after a tenth of the calls it otherwise waits
 *   for (300, not 3000): the data-plane worker's warm-up (src/lane/worker.ts) then ends with its hot path compiled
 *   so, where it otherwise ends with it compiled by the faster, weaker Maglev. A fresh tunnel's pings took
 *   0.44-0.45 ms with it against 0.50-0.55 ms without (median of 200, three realms each). An idle node's RSS is
 *   ~1.5 MiB larger (111.3-112.2 against 110.0-110.7 MiB, two realms each).
 * - no short builtin calls: V8 otherwise maps a copy of its built-in functions' code (from the deno executable)
 *   next to each isolate's compiled code, and the main thread's and the worker's copies are each counted in RSS
 *   (2.1 and 1.9 MiB resident in an idle node). Without them both isolates call the one mapping the executable
 *   already has. Pings are no slower: a fresh tunnel's took 0.49-0.66 ms with the flag against 0.53-0.64 without,
 *   0.47-0.66 against 0.47-0.68 after bulk traffic (median of 200, eight realms each).
 */
export const AGENT_RUNTIME_FLAGS = [
  "--no-code-cache",
  "--v8-flags=--max-semi-space-size=1,--invocation-count-for-turbofan=300,--no-short-builtin-calls",
];

/**
 * The agent's environment (the systemd unit sets it): run from source, `deno run` otherwise asks dl.deno.land for
 * a newer Deno at every start, a connection a VPN node should not make unasked (a compiled binary never asks).
 */
export const AGENT_ENV: Readonly<Record<string, string>> = { DENO_NO_UPDATE_CHECK: "1" };
