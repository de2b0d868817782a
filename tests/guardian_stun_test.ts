/**
 * `guardian serve` and its STUN service as an administrator meets them: on by default at the listen host, a taken
 * default port is a warning (the Guardian still serves), a taken `--stun-port` stops it, and a secret for TURN
 * never comes from the command line. Each Guardian listens on an address of its own in 127/8, so no other test's
 * STUN shares its ports.
 */

import dgram from "node:dgram";
import { probeStun } from "../src/netcheck/stun_probe.ts";
import { assert, assertEquals } from "./assert.ts";
import { cli, freePort, Proc, tempDir, waitFor } from "./harness.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** An address in 127/8 no other test uses. */
const loopbackOfOurOwn = () =>
  `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.7`;

function serve(dataDir: string, host: string, flags: string[], env: Record<string, string> = {}): Proc {
  return new Proc("guardian", Deno.execPath(), [
    "run",
    "-A",
    "--quiet",
    MAIN,
    "guardian",
    "serve",
    "--listen",
    `${host}:${freePort()}`,
    "--data-dir",
    dataDir,
    ...flags,
  ], env);
}

/** Holds UDP `host:port` until closed. */
async function hold(host: string, port: number): Promise<{ close(): Promise<void> }> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(port, host, resolve));
  return { close: () => new Promise((resolve) => socket.close(() => resolve())) };
}

Deno.test("guardian serve: STUN on by default, a taken default port is a warning, a taken --stun-port an error", async () => {
  await using dir = await tempDir("vc-gstun-");
  const host = loopbackOfOurOwn();
  {
    await using g = serve(`${dir.path}/a`, host, []);
    await waitFor("STUN to start", 15_000, () => g.output.includes(`STUN on UDP ${host}:3478 and :3479`));
    const mappings = await probeStun(host, { ports: [3478, 3479] });
    assert(mappings.every((m) => m.mapped?.startsWith("127.")), JSON.stringify(mappings));
  }
  const taken = await hold(host, 3479);
  try {
    await using g = serve(`${dir.path}/b`, host, []);
    await waitFor("the warning", 15_000, () => g.output.includes("serving without STUN"));
    assert(g.output.includes(`UDP ${host}:3479`), g.output);
    await waitFor("the Guardian to listen anyway", 15_000, () => g.output.includes("guardian: listening on"));
    // Nothing answers on 3478 either: both ports or none.
    assertEquals((await probeStun(host, { ports: [3478], timeoutMs: 600 }))[0]!.mapped, undefined);

    await using explicit = serve(`${dir.path}/c`, host, ["--stun-port", "3478"]);
    const status = await explicit.done;
    assertEquals(status.code, 1, explicit.output);
    assert(explicit.output.includes("choose another --stun-port, or --stun-port off"), explicit.output);
  } finally {
    await taken.close();
  }
});

Deno.test("guardian serve: --turn needs its secret from a file or VEILNET_TURN_SECRET, and refuses what nodes cannot use", async () => {
  await using dir = await tempDir("vc-gturn-");
  await Deno.writeTextFile(`${dir.path}/empty`, "\n");
  const cases: [n: number, flags: string[], says: string][] = [
    [1, ["--turn", "turn:t.example:3478"], "--turn-secret-file FILE or VEILNET_TURN_SECRET"],
    [2, ["--turn", "turn:t.example:3478", "--turn-secret", "x"], "Unknown option '--turn-secret'"],
    [3, ["--turn", "turns:t.example:5349", "--turn-secret-file", `${dir.path}/empty`], "UDP only"],
    [4, ["--turn", "turn:t.example", "--turn-secret-file", `${dir.path}/empty`], "is empty"],
    [5, ["--turn", "turn:t.example", "--turn-secret-file", `${dir.path}/missing`], "--turn-secret-file"],
    [6, ["--turn-secret-file", `${dir.path}/empty`], "is empty"],
    [7, ["--stun-port", "65535"], "--stun-port must be 1..65534"],
  ];
  for (const [n, flags, says] of cases) {
    const r = await cli(["guardian", "serve", "--data-dir", `${dir.path}/g`, ...flags]);
    assertEquals(r.code, 2, `case ${n}: ${r.stderr}`);
    assert(r.stderr.includes(says), `case ${n}: ${r.stderr}`);
  }
});
