/**
 * Guardian without a single point of failure (issue 16, item 4): three nats-servers (a cluster, the Guardians'
 * state in JetStream with three copies) and two Guardian processes sharing it (`guardian serve --state nats`).
 * Twenty nodes log in and renew again and again through both Guardians (each node knows both URLs) while one
 * Guardian and one nats-server are killed; five more nodes register meanwhile. Every node keeps or regains its
 * session, and no registered node is lost. The operator's steps are the README's: `nats-keys export/import`,
 * `nats-config --server-name --jetstream-dir` per server, then both Guardians.
 */
import { assert, assertEquals } from "./assert.ts";
import { cli, freePort, GuardianProc, natsServer, type Proc, tempDir, waitFor } from "./harness.ts";
import { Identity } from "../src/crypto/identity.ts";
import { guardianClient, guardianRequest, GuardianUnavailable } from "../src/agent/guardian_client.ts";

const NODES = 20;
const LATE_NODES = 5;
/** Pause between one node's logins (renewals). */
const RENEW_MS = 400;

/** One node: its registration, and what its logins met. */
interface Node {
  id: string;
  token: string;
  guardians: string;
  identity: Identity;
  lastLogin: number;
  /** Its first login after the kills, and how many it made since. */
  regained?: number;
  loginsAfter: number;
  logins: number;
  /** Refusals (4xx): a node would stop for good on them. */
  refusals: string[];
}

Deno.test("guardian HA: two Guardians and three nats-servers; one of each killed while 20 nodes log in and renew", async () => {
  const started = Date.now();
  await using dir = await tempDir("veilnet-ha-");
  const dirA = `${dir.path}/guardian-a`;
  const dirB = `${dir.path}/guardian-b`;

  // The first Guardian's keys, handed to the second, as an operator would.
  const exported = await cli(["guardian", "nats-keys", "export", "--data-dir", dirA]);
  assertEquals(exported.code, 0, exported.stderr);
  await Deno.writeTextFile(`${dir.path}/keys.json`, exported.stdout);
  const names = ["nats-a", "nats-b", "nats-c"];
  const ports = names.map(() => freePort());
  const routes = names.map(() => freePort());
  const monitors = names.map(() => freePort());
  const urls = ports.map((p) => `tls://127.0.0.1:${p}`);
  const [imported, ...configs] = await Promise.all([
    cli(["guardian", "nats-keys", "import", `${dir.path}/keys.json`, "--data-dir", dirB]),
    ...names.map((name, i) =>
      natsServer(dirA, name, ports[i]!, {
        configFlags: [
          "--server-name",
          name,
          "--cluster-name",
          "veilnet",
          "--cluster-listen",
          `127.0.0.1:${routes[i]}`,
          "--routes",
          routes.filter((_, j) => j !== i).map((r) => `nats-route://127.0.0.1:${r}`).join(","),
          "--jetstream-dir",
          `${dir.path}/${name}-js`,
        ],
        serverFlags: ["-m", String(monitors[i])],
      })
    ),
  ]);
  assertEquals((imported as { code: number }).code, 0, (imported as { stderr: string }).stderr);
  const servers = configs as Proc[];
  await using _servers = {
    [Symbol.asyncDispose]: () => Promise.all(servers.map((s) => s.stop())).then(() => {}),
  };
  for (const [i, port] of ports.entries()) {
    await waitFor(`${names[i]} to listen`, 10_000, async () => {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    });
  }

  const flags = ["--state", "nats", "--stun-port", "off"];
  await using a = new GuardianProc(dirA, { master: urls, flags });
  await using b = new GuardianProc(dirB, { master: urls, flags });
  await a.start(); // seeds the shared state from its data directory (and writes the admin token)
  await b.start(); // loads it
  assert(a.proc!.output.includes("seeded from"), a.proc!.output);
  assert(b.proc!.output.includes("loaded up to entry"), b.proc!.output);
  const admin = (await Deno.readTextFile(`${dirA}/admin.token`)).trim();
  const both = `${a.url},${b.url}`;
  const adminCall = <T>(method: string, path: string, body?: unknown) =>
    guardianRequest<T>(both, method, path, admin, body);
  await guardianRequest(b.url, "POST", "/admin/realms", admin, { name: "home", cidr: "10.128.0.0/24" });
  const { token: reg } = await adminCall<{ token: string }>("POST", "/admin/tokens", {
    realm: "home",
    uses: NODES + LATE_NODES,
  });

  const register = async (i: number, guardians: string): Promise<Node> => {
    const r = await guardianClient.register(guardians, reg, { tag: `node-${i}` });
    return {
      id: r.conflux_id,
      token: r.token,
      guardians,
      identity: await Identity.generate(),
      lastLogin: 0,
      logins: 0,
      loginsAfter: 0,
      refusals: [],
    };
  };
  // Half the nodes know the first Guardian first, half the second: both serve until one is killed.
  const nodes = await Promise.all(
    Array.from({ length: NODES }, (_, i) => register(i, i % 2 ? `${b.url},${a.url}` : both)),
  );
  const before = (await adminCall<{ id: string }[]>("GET", "/admin/nodes")).map((n) => n.id).sort();
  assertEquals(before, nodes.map((n) => n.id).sort(), "both Guardians registered them all");

  // Logins and renewals, until stopped: a failure is retried soon (as an agent does), a refusal is recorded.
  let running = true;
  let killed = Infinity;
  const loop = async (node: Node) => {
    while (running) {
      try {
        const login = await guardianClient.login(node.guardians, node.token, node.identity);
        assertEquals(login.conflux_id, node.id);
        node.lastLogin = Date.now();
        if (node.lastLogin > killed) {
          node.regained ??= node.lastLogin;
          node.loginsAfter++;
        }
        node.logins++;
      } catch (error) {
        const status = (error as GuardianUnavailable).status;
        if (!(error instanceof GuardianUnavailable)) throw error;
        if (status !== undefined && status < 500) node.refusals.push((error as Error).message);
      }
      await new Promise((r) => setTimeout(r, RENEW_MS * (0.5 + Math.random())));
    }
  };
  const loops = nodes.map(loop);
  await waitFor("every node to log in and renew", 15_000, () => nodes.every((n) => n.logins >= 2));

  // Kill one Guardian and the nats-server leading the state's stream (not gracefully), with logins and
  // registrations in flight.
  const leader = await streamLeader(monitors);
  const late = Array.from({ length: LATE_NODES }, (_, i) => register(NODES + i, `${b.url},${a.url}`));
  await a.proc!.stop("SIGKILL");
  await servers[names.indexOf(leader)]!.stop("SIGKILL");
  killed = Date.now();
  const lateNodes = await Promise.all(late);
  nodes.push(...lateNodes);
  const lateLoops = lateNodes.map(loop);

  // Each renews three times after the kills: the session is back, and stays (the state keeps taking changes).
  await waitFor(
    "every node to renew again after the kills",
    25_000,
    () => nodes.every((n) => n.loginsAfter >= 3),
  )
    .catch((error) => {
      throw new Error(`${error.message}\nsurviving Guardian's log:\n${b.proc!.output}`);
    });
  running = false;
  await Promise.all([...loops, ...lateLoops]);

  for (const n of nodes) assertEquals(n.refusals, [], `node ${n.id} was refused`);
  const after = await guardianRequest<{ id: string; tag: string }[]>(b.url, "GET", "/admin/nodes", admin);
  assertEquals(
    after.map((n) => n.id).sort(),
    nodes.map((n) => n.id).sort(),
    "every node registered is still there",
  );
  for (const id of before) assert(after.some((n) => n.id === id), `${id} lost`);
  // The data directory no longer holds the state: admin commands on it are refused, not silently lost.
  const local = await cli(["guardian", "token", "list", "--data-dir", dirA]);
  assertEquals(local.code, 2, local.stderr);
  assert(local.stderr.includes("keeps its state in the JetStream stream"), local.stderr);
  if (Deno.env.get("VEILNET_DEBUG")) console.log(`surviving Guardian's log:\n${b.proc!.output}`);
  const wall = Date.now() - started;
  console.log(
    `guardian HA: ${nodes.reduce((s, n) => s + n.logins, 0)} logins by ${nodes.length} nodes; ` +
      `all back ${Math.max(...nodes.map((n) => n.regained!)) - killed} ms after the kills; ${wall} ms in all`,
  );
});

/** The name of the nats-server leading the Guardians' state stream, from the servers' monitoring (`/jsz`). */
async function streamLeader(monitors: number[]): Promise<string> {
  for (const port of monitors) {
    const jsz = await (await fetch(`http://127.0.0.1:${port}/jsz?accounts=true&streams=true`)).json();
    for (const account of jsz.account_details ?? []) {
      for (const stream of account.stream_detail ?? []) {
        if (stream.name === "VEILNET_GUARDIAN_STATE" && stream.cluster?.leader) return stream.cluster.leader;
      }
    }
  }
  throw new Error("no nats-server names a leader of the state stream");
}
