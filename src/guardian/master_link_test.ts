/**
 * MasterLink against real nats-servers (2.9+), configured as `guardian nats-config` writes them: revocations
 * disconnect a node user at once and refuse it afterwards (also after a restart, and across a cluster), and the
 * connection list says who is connected.
 */
import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { freePort, Proc, tempDir, waitFor } from "../../tests/harness.ts";
import type { ChannelState, ControlChannel } from "../control/channel.ts";
import { connectNats } from "../control/nats.ts";
import { realmSubjects } from "../control/subjects.ts";
import { MasterLink } from "./master_link.ts";
import {
  type NatsCredentials,
  type NatsKeys,
  natsServerConfig,
  newNatsKeys,
  nodeCredentials,
} from "./nats_auth.ts";

const REALM = "0123456789abcdef0123456789abcdef";
const NODE_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NODE_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const subjects = realmSubjects(REALM);

/** One nats-server of the Master, with its own config file and resolver directory under `dir`. */
class Server implements AsyncDisposable {
  proc: Proc | undefined;
  readonly port = freePort();
  readonly monitor = freePort();
  readonly route = freePort();

  constructor(readonly dir: string, readonly name: string, readonly keys: NatsKeys) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Writes its config afresh (as `guardian serve --embedded-master` does on every start) and starts it. */
  async start(routes: number[] = []): Promise<void> {
    const config = await natsServerConfig(this.keys, {
      host: "127.0.0.1",
      port: this.port,
      resolverDir: `${this.dir}/${this.name}-jwt`,
      cluster: routes.length > 0
        ? {
          name: "veilnet",
          listen: `127.0.0.1:${this.route}`,
          routes: routes.map((r) => `nats-route://127.0.0.1:${r}`),
        }
        : undefined,
    });
    await Deno.writeTextFile(`${this.dir}/${this.name}.conf`, config);
    this.proc = new Proc(this.name, "nats-server", [
      "-c",
      `${this.dir}/${this.name}.conf`,
      "-m",
      `${this.monitor}`,
    ]);
    await waitFor(`${this.name} to listen`, 10_000, async () => {
      (await Deno.connect({ hostname: "127.0.0.1", port: this.port })).close();
      return true;
    });
  }

  async stop(): Promise<void> {
    await this.proc?.stop();
    this.proc = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** A node user's connection (as an agent makes it), recording its state changes and connection events. */
async function nodeUser(
  url: string,
  credentials: NatsCredentials,
): Promise<{ channel: ControlChannel; changes: { state: ChannelState; at: number }[]; events: string[] }> {
  const changes: { state: ChannelState; at: number }[] = [];
  const events: string[] = [];
  const channel = await connectNats({
    urls: [url],
    name: "test-node",
    inboxPrefix: credentials.inboxPrefix,
    credentials: () => credentials,
    onState: (state) => changes.push({ state, at: Date.now() }),
    log: (line) => events.push(line),
  });
  return { channel, changes, events };
}

/** Servers (by port) that refused the user on one of its reconnection attempts, from its events. */
function refusedBy(events: string[]): Set<number> {
  const ports = new Set<number>();
  let trying: number | undefined;
  for (const line of events) {
    const m = line.match(/^nats: reconnecting [\d.]+:(\d+)/);
    if (m) trying = Number(m[1]);
    else if (line.includes("AUTHORIZATION_VIOLATION") && trying !== undefined) ports.add(trying);
  }
  return ports;
}

function credentialsFor(keys: NatsKeys, nodeId: string): Promise<NatsCredentials> {
  return nodeCredentials(keys, { realmId: REALM, nodeId, expiresAt: Date.now() + 3_600_000 }, {
    conflux: nodeId,
    tag: "n",
    addresses: [],
    subnets: [],
  });
}

/** Resolves with the next message on `subject` (undefined after `ms`). */
function nextMessage(channel: ControlChannel, subject: string, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    channel.subscribe(subject, (data) => {
      clearTimeout(timer);
      resolve(new TextDecoder().decode(data));
    });
  });
}

const bytes = (s: string) => new TextEncoder().encode(s);
const quiet = () => {};

Deno.test("MasterLink: a revoked node user is disconnected within 2 s and refused after; others stay", async () => {
  await using dir = await tempDir("vc-master-");
  const keys = newNatsKeys();
  await using server = new Server(dir.path, "nats", keys);
  await server.start();
  await using link = await MasterLink.connect({ urls: [server.url], keys, log: quiet });
  await waitFor("the Guardian's link", 5_000, () => link.state === "connected");

  const victimCredentials = await credentialsFor(keys, NODE_A);
  const victim = await nodeUser(server.url, victimCredentials);
  await using _victim = victim.channel;
  victim.channel.subscribe(subjects.broadcast, quiet);
  const other = await nodeUser(server.url, await credentialsFor(keys, NODE_B));
  await using _other = other.channel;

  const start = Date.now();
  await link.revoke([{ user: victimCredentials.user, at: Date.now() }]);
  const lost = await waitFor("the victim to be disconnected", 2_000, () => victim.changes[0]);
  const ms = lost.at - start;
  console.log(
    `revoked node user disconnected after ${ms} ms (revoke() resolved after ${Date.now() - start} ms)`,
  );
  assertEquals(lost.state, "reconnecting");
  assert(ms <= 2_000, `disconnected after ${ms} ms, expected within 2000`);

  // Its own reconnections are refused, and so is a fresh connection with the same JWT.
  await waitFor("the victim's reconnection to be refused", 5_000, () => refusedBy(victim.events).size === 1);
  await assertRejects(() => nodeUser(server.url, victimCredentials), Error, "Authorization Violation");
  assertEquals(victim.changes.map((c) => c.state), ["reconnecting"]);

  // The other node still sends and receives, and so does the Guardian's realms user.
  const heard = nextMessage(other.channel, subjects.node(NODE_B), 3_000);
  other.channel.publish(subjects.node(NODE_B), bytes("from b"));
  assertEquals(await heard, "from b");
  const broadcast = nextMessage(other.channel, subjects.broadcast, 3_000);
  // The subscription must reach the server before the Guardian's connection publishes (another connection).
  await other.channel.flush();
  link.publish(subjects.broadcast, bytes("notice"));
  assertEquals(await broadcast, "notice");
  assertEquals(other.channel.state, "connected");

  // The same node logging in again gets a new user, which is not revoked.
  const again = await nodeUser(server.url, await credentialsFor(keys, NODE_A));
  await using _again = again.channel;
  assertEquals(again.channel.state, "connected");
});

Deno.test("MasterLink: a revocation survives a nats-server restart with its config written afresh", async () => {
  await using dir = await tempDir("vc-master-");
  const keys = newNatsKeys();
  await using server = new Server(dir.path, "nats", keys);
  await server.start();
  const victim = await credentialsFor(keys, NODE_A);
  {
    await using link = await MasterLink.connect({ urls: [server.url], keys, log: quiet });
    await waitFor("the Guardian's link", 5_000, () => link.state === "connected");
    await link.revoke([{ user: victim.user, at: Date.now() }]);
  }
  // No Guardian connected from here on: what refuses the victim is the server's resolver directory.
  await server.stop();
  await server.start();
  await assertRejects(() => nodeUser(server.url, victim), Error, "Authorization Violation");
  const other = await nodeUser(server.url, await credentialsFor(keys, NODE_B));
  await other.channel.close();
});

Deno.test("MasterLink: connections() lists node users connected now and recently closed", async () => {
  await using dir = await tempDir("vc-master-");
  const keys = newNatsKeys();
  await using server = new Server(dir.path, "nats", keys);
  await server.start();
  await using link = await MasterLink.connect({ urls: [server.url], keys, log: quiet });
  await waitFor("the Guardian's link", 5_000, () => link.state === "connected");
  const aCredentials = await credentialsFor(keys, NODE_A);
  const bCredentials = await credentialsFor(keys, NODE_B);
  const a = await nodeUser(server.url, aCredentials);
  const b = await nodeUser(server.url, bCredentials);
  await using _b = b.channel;

  const byUser = async () => new Map((await link.connections()).map((c) => [c.user, c]));
  const before = await byUser();
  // Node users only: the Guardian's own users are not listed.
  assertEquals(before.size, 2);
  assertEquals(before.get(aCredentials.user)?.name, `node-${NODE_A}`);
  assertEquals(before.get(aCredentials.user)?.connected, true);
  assertEquals(before.get(bCredentials.user)?.connected, true);

  await a.channel.close();
  const closedAt = Date.now();
  const after = await waitFor("a to be listed as gone", 5_000, async () => {
    const entry = (await byUser()).get(aCredentials.user);
    return entry && !entry.connected ? entry : undefined;
  });
  assert(
    Math.abs(after.lastSeen - closedAt) < 2_000,
    `lastSeen ${after.lastSeen - closedAt} ms from the close`,
  );
  assertEquals((await byUser()).get(bCredentials.user)?.connected, true);
});

Deno.test("MasterLink: while the Master is down revoke() says so; once reached, the link pushes the last list", async () => {
  await using dir = await tempDir("vc-master-");
  const keys = newNatsKeys();
  await using server = new Server(dir.path, "nats", keys);
  const lines: string[] = [];
  await using link = await MasterLink.connect({ urls: [server.url], keys, log: (l) => lines.push(l) });
  assertEquals(link.state, "connecting");
  const victim = await credentialsFor(keys, NODE_A);
  await assertRejects(
    () => link.revoke([{ user: victim.user, at: Date.now() }]),
    Error,
    "the Master is unreachable",
  );
  let threw: unknown;
  try {
    link.publish(subjects.broadcast, bytes("x"));
  } catch (error) {
    threw = error;
  }
  assert(threw instanceof Error && threw.message.includes("not been reached"), `publish: ${threw}`);
  await waitFor(
    "the failed attempt to be logged",
    5_000,
    () => lines.some((l) => l.includes("cannot reach")),
  );

  await server.start();
  await waitFor("the Guardian's link", 10_000, () => link.state === "connected");
  // Once connected, the link pushes the list it was last given by itself.
  await waitFor(
    "the list to be pushed",
    5_000,
    () => lines.some((l) => l.includes("hold 1 NATS revocation")),
  );
  await assertRejects(() => nodeUser(server.url, victim), Error, "Authorization Violation");
  await link.revoke([]);
  await (await nodeUser(server.url, victim)).channel.close();
});

Deno.test("MasterLink: in a cluster of three a revocation pushed to one server disconnects a user of another", async () => {
  await using dir = await tempDir("vc-master-");
  const keys = newNatsKeys();
  await using s0 = new Server(dir.path, "nats0", keys);
  await using s1 = new Server(dir.path, "nats1", keys);
  await using s2 = new Server(dir.path, "nats2", keys);
  const servers = [s0, s1, s2];
  for (const s of servers) await s.start(servers.filter((o) => o !== s).map((o) => o.route));
  await waitFor("the cluster to form", 15_000, async () => {
    for (const s of servers) {
      const routez = await (await fetch(`http://127.0.0.1:${s.monitor}/routez`)).json();
      if (routez.num_routes < 2) return false;
    }
    return true;
  });

  const lines: string[] = [];
  await using link = await MasterLink.connect({ urls: [s0.url], keys, log: (l) => lines.push(l) });
  await waitFor("the Guardian's link", 5_000, () => link.state === "connected");
  const victimCredentials = await credentialsFor(keys, NODE_A);
  const victim = await nodeUser(s2.url, victimCredentials);
  await using _victim = victim.channel;
  const other = await nodeUser(s1.url, await credentialsFor(keys, NODE_B));
  await using _other = other.channel;
  // The victim is listed (by s2) through the link on s0.
  await waitFor(
    "the victim to be listed",
    5_000,
    async () => (await link.connections()).some((c) => c.user === victimCredentials.user && c.connected),
  );

  const start = Date.now();
  await link.revoke([{ user: victimCredentials.user, at: Date.now() }]);
  const lost = await waitFor("the victim to be disconnected", 2_000, () => victim.changes[0]);
  console.log(`cluster: revoked user on another server disconnected after ${lost.at - start} ms`);
  assert(lines.some((l) => l.includes("3 Master server(s) hold 1")), lines.join("\n"));
  // It tries every server of the cluster in turn (the client learns them from its server): all refuse it.
  await waitFor("every server to refuse the victim", 10_000, () => refusedBy(victim.events).size === 3);
  assertEquals([...refusedBy(victim.events)].sort(), servers.map((s) => s.port).sort());
  assertEquals(victim.changes.map((c) => c.state), ["reconnecting"]);
  assertEquals(other.channel.state, "connected");
});
