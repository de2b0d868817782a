import { assert, assertEquals } from "../../tests/assert.ts";
import { tempDir } from "../../tests/harness.ts";
import { serveLocalApi } from "../agent/local_api.ts";
import type { NodeStatus, PeerStatus } from "../agent/status.ts";
import { peersCommand, statusCommand } from "./node.ts";

const ALICE = { subject: "248289761001", email: "alice@example.com" };

function nodeStatus(extra: Partial<NodeStatus> = {}): NodeStatus {
  return {
    id: "0b7c3a52-9a1e-4f7e-8d2c-1f0e5a6b7c8d",
    nodeId: "ab".repeat(16),
    tag: "web",
    ips: ["10.128.0.7", "fd00::7"],
    realm: "home",
    taints: ["dev"],
    connected: { guardian: true, master: true },
    certificateExpiresAt: 1_800_000_000_000,
    peers: 2,
    tethers: 1,
    streams: 2,
    routes: 2,
    relayed: { messages: 0, bytes: 0 },
    backup: { messages: 0, bytes: 0 },
    dropped: {},
    egresses: 1,
    ingresses: 1,
    relays: 0,
    handshakeFailures: 0,
    portal: [],
    subnets: [],
    ...extra,
  };
}

function peer(tag: string, n: number, extra: Partial<PeerStatus> = {}): PeerStatus {
  return {
    id: `0b7c3a52-9a1e-4f7e-8d2c-1f0e5a6b7c0${n}`,
    nodeId: `${n}`.repeat(32),
    tag,
    ips: [`10.128.0.${n}`, `fd00::${n}`],
    path: "direct",
    rttMs: 1.5,
    txBytes: 10,
    rxBytes: 20,
    taints: ["dev"],
    pq: true,
    ...extra,
  };
}

/** Runs `command` against a node that answers `status` and `peers` on a local API socket. */
async function ask(
  answers: { status: NodeStatus; peers: PeerStatus[] },
  command: (args: string[], io: { out(l: string): void; err(l: string): void }) => Promise<number>,
  args: string[],
): Promise<{ code: number; out: string }> {
  await using dir = await tempDir("vc-node-cli-");
  const socket = `${dir.path}/conflux.sock`;
  const stop = new AbortController();
  const server = serveLocalApi(
    {
      status: () => answers.status,
      peers: () => answers.peers,
      lookup: () => Promise.resolve([]),
      changeTaints: () => Promise.resolve([]),
    },
    socket,
    stop.signal,
  );
  const before = Deno.env.get("VEILNET_SOCKET");
  Deno.env.set("VEILNET_SOCKET", socket);
  try {
    const out: string[] = [];
    const code = await command(args, { out: (l) => out.push(l), err: (l) => out.push(l) });
    return { code, out: out.join("\n") };
  } finally {
    if (before === undefined) Deno.env.delete("VEILNET_SOCKET");
    else Deno.env.set("VEILNET_SOCKET", before);
    stop.abort();
    await server.finished;
  }
}

Deno.test("cli: status shows who registered the node, in --json as the node reports it", async () => {
  const cases: [n: number, status: NodeStatus, line: RegExp][] = [
    [1, nodeStatus({ identity: ALICE }), /^identity +alice@example\.com \(subject 248289761001\)$/m],
    [2, nodeStatus({ identity: { subject: "248289761001" } }), /^identity +subject 248289761001$/m],
    [3, nodeStatus(), /^identity +\(none: the realm asks for no identity\)$/m],
  ];
  for (const [n, status, line] of cases) {
    const human = await ask({ status, peers: [] }, statusCommand, []);
    assertEquals(human.code, 0, `case ${n}`);
    assert(line.test(human.out), `case ${n}: ${human.out}`);
    assert(/^taints +dev$/m.test(human.out), `case ${n}: the other lines stay: ${human.out}`);
    const json = await ask({ status, peers: [] }, statusCommand, ["--json"]);
    assertEquals(JSON.parse(json.out), status, `case ${n}`);
    assertEquals(JSON.parse(json.out).identity, status.identity, `case ${n}`);
  }
});

Deno.test("cli: peers shows the paths' shares and who registered each peer, and --json carries both", async () => {
  const routes = [
    { via: "direct", share: 0.06, rttMs: 40, loss: 0 },
    { via: "c", nodeId: "ab".repeat(16), share: 0.94, rttMs: 5, loss: 0, sharedMs: 2 },
    { via: "d", nodeId: "cd".repeat(16), share: 0, sharedMs: 90 },
  ];
  const peers = [
    peer("alpha", 1, { identity: ALICE, routes }),
    peer("beta", 2, { identity: { subject: "bob-subject" } }),
    peer("gamma", 3),
  ];
  const human = await ask({ status: nodeStatus(), peers }, peersCommand, []);
  assertEquals(human.code, 0);
  const rows = human.out.split("\n").map((r) => r.split(/ {2,}/));
  assertEquals(rows.map((r) => [r[0], r[4], r[8], r[9]]), [
    ["TAG", "SHARES", "TAINTS", "IDENTITY"],
    ["alpha", "c 94%, direct 6%", "dev", "alice@example.com"],
    ["beta", "-", "dev", "bob-subject"],
    ["gamma", "-", "dev", "-"],
  ]);
  const json = JSON.parse((await ask({ status: nodeStatus(), peers }, peersCommand, ["--json"])).out);
  assertEquals(json, peers);
  assertEquals(json.map((p: PeerStatus) => p.identity), [ALICE, { subject: "bob-subject" }, undefined]);
});
