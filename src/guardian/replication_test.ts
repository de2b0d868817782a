/**
 * Replication of the Guardian's store: two Guardians over replicas of one log behave as one. The same suite runs
 * against the in-memory log and against a real nats-server with JetStream (configured as `guardian nats-config
 * --jetstream-dir` writes it); the memory log also checks lost answers, snapshots and refusals.
 */
import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { freePort, Proc, tempDir, waitFor } from "../../tests/harness.ts";
import { TEST_GUARDIAN_OPTIONS } from "../../tests/guardian_fixture.ts";
import { Identity } from "../crypto/identity.ts";
import { signLogin } from "../crypto/login_proof.ts";
import { Guardian } from "./guardian.ts";
import { JetStreamLog } from "./jetstream_log.ts";
import { guardianStateCredentials, type NatsKeys, natsServerConfig } from "./nats_auth.ts";
import { Replica } from "./replication.ts";
import { GuardianError } from "./rules.ts";
import { MemoryStateLog, type StateLog } from "./state_log.ts";
import { Store, type StoreDump } from "./store.ts";

const quiet = () => {};

/** Where replicas get their connections to one shared log. */
interface LogSource extends AsyncDisposable {
  connect(): Promise<StateLog>;
}

/** A Guardian over a replica. */
interface Member extends AsyncDisposable {
  store: Store;
  replica: Replica;
  guardian: Guardian;
}

/** A seed state as a first Guardian's data directory holds it: keys, realm "home", and tokens. */
async function seedState(
  tokens: { uses?: number }[],
): Promise<{ dump: StoreDump; keys: NatsKeys; tokens: string[] }> {
  using store = new Store(":memory:");
  const g = new Guardian(store, TEST_GUARDIAN_OPTIONS);
  const keys = g.natsKeys();
  await g.ensureAdminToken();
  await g.createRealm("home", "10.128.0.0/24");
  const made: string[] = [];
  for (const t of tokens) {
    made.push((await g.createToken({ realm: "home", uses: t.uses, taints: ["dev"] })).token);
  }
  return { dump: store.dump(), keys, tokens: made };
}

async function member(
  source: LogSource,
  seed: StoreDump,
  o: { snapshotEvery?: number } = {},
): Promise<Member> {
  const store = new Store(":memory:");
  const { replica } = await Replica.open(store, await source.connect(), { seed, log: quiet, ...o });
  return {
    store,
    replica,
    guardian: new Guardian(store, TEST_GUARDIAN_OPTIONS),
    [Symbol.asyncDispose]: async () => {
      await replica.close();
      store.close();
    },
  };
}

/** The status of a settled Guardian call: 201 for a registration that went through, else its refusal. */
function statusOf(r: PromiseSettledResult<unknown>): number {
  if (r.status === "fulfilled") return 201;
  if (r.reason instanceof GuardianError) return r.reason.status;
  throw r.reason;
}

async function signedLogin(token: string, identity: Identity) {
  const body = new TextEncoder().encode(JSON.stringify({
    public_key: btoa(String.fromCharCode(...identity.publicKey)),
    timestamp: Date.now(),
    nonce: crypto.randomUUID().replaceAll("-", ""),
  }));
  const signature = await signLogin(identity, token.split(".")[1]!, body);
  return {
    body,
    fields: JSON.parse(new TextDecoder().decode(body)),
    signature: btoa(String.fromCharCode(...signature)),
    host: "guardian.test:8080",
  };
}

/** The conformance suite: what two Guardians sharing a log must do, whatever the log. */
function suite(name: string, source: (keys: NatsKeys) => Promise<LogSource>) {
  Deno.test(`replication (${name}): a single-use token consumed by two Guardians at once registers one node`, async () => {
    const seed = await seedState([{ uses: 1 }, { uses: 1 }, { uses: 1 }]);
    await using logs = await source(seed.keys);
    await using a = await member(logs, seed.dump);
    await using b = await member(logs, seed.dump);
    for (const token of seed.tokens) {
      const results = await Promise.allSettled([
        a.guardian.register(token, {}),
        b.guardian.register(token, {}),
      ]);
      assertEquals(results.map(statusOf).sort(), [201, 403], `token ${token.slice(0, 13)}`);
    }
    await a.store.sync();
    await b.store.sync();
    assertEquals(a.store.confluxes().length, 3);
    assertEquals(b.store.dump(), a.store.dump());
    assertEquals(a.store.tokens().map((t) => t.usesLeft), [0, 0, 0]);
  });

  Deno.test(`replication (${name}): tags and addresses stay unique across Guardians`, async () => {
    const seed = await seedState([{ uses: 20 }]);
    await using logs = await source(seed.keys);
    await using a = await member(logs, seed.dump);
    await using b = await member(logs, seed.dump);
    const [token] = seed.tokens as [string];
    const web = await Promise.allSettled([
      a.guardian.register(token, { tag: "web" }),
      b.guardian.register(token, { tag: "web" }),
    ]);
    assertEquals(web.map(statusOf).sort(), [201, 409]);
    const many = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).guardian.register(token, {})),
    );
    await a.store.sync();
    await b.store.sync();
    const nodes = b.store.confluxes();
    assertEquals(nodes.length, 11);
    assertEquals(new Set(nodes.map((n) => n.ip4)).size, 11, "every address once");
    assertEquals(new Set(nodes.map((n) => n.tag)).size, 11, "every tag once");
    for (const r of many) assert(b.store.confluxById(r.conflux_id), `${r.conflux_id} is known to both`);
    assertEquals(a.store.dump(), b.store.dump());
  });

  Deno.test(`replication (${name}): a login recorded at one Guardian is refused at the other`, async () => {
    const seed = await seedState([{ uses: 1 }]);
    await using logs = await source(seed.keys);
    await using a = await member(logs, seed.dump);
    await using b = await member(logs, seed.dump);
    const node = await a.guardian.register(seed.tokens[0]!, {});
    // b has not seen the registration yet, perhaps: an unknown token makes it catch up rather than refuse.
    const request = await signedLogin(node.token, await Identity.generate());
    const first = await b.guardian.login(node.token, request);
    assertEquals(first.conflux_id, node.conflux_id);
    const replay = await a.guardian.login(node.token, request).catch((e) => e);
    assert(replay instanceof GuardianError && replay.status === 400, String(replay));
    assert(replay.message.includes("replayed"), replay.message);
  });

  Deno.test(`replication (${name}): a Guardian restarted rebuilds the same state`, async () => {
    const seed = await seedState([{ uses: 5 }]);
    await using logs = await source(seed.keys);
    await using a = await member(logs, seed.dump);
    const b = await member(logs, seed.dump);
    for (let i = 0; i < 3; i++) await b.guardian.register(seed.tokens[0]!, { tag: `n${i}` });
    await a.guardian.revokeNode(await syncThen(a, "n1"));
    await b[Symbol.asyncDispose]();
    // A new seed loses: the log holds a state already.
    const other = await seedState([]);
    await using again = await member(logs, other.dump);
    await a.store.sync();
    assertEquals(again.store.dump(), a.store.dump());
    assertEquals(again.store.confluxes().map((c) => c.tag), ["n0", "n1", "n2"]);
    assert(again.store.confluxByTag(again.store.realmByName("home")!.id, "n1")!.revokedAt !== null);
  });
}

/** Catches `m` up and returns the id of the node tagged `tag`. */
async function syncThen(m: Member, tag: string): Promise<string> {
  await m.store.sync();
  return m.guardian.findNode(tag).id;
}

function memorySource(): Promise<LogSource & { log: MemoryStateLog }> {
  const log = new MemoryStateLog();
  return Promise.resolve({
    log,
    connect: () => Promise.resolve(log.connect()),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  });
}

/** One nats-server with JetStream for the Guardians' account, as `guardian nats-config --jetstream-dir` makes it. */
async function jetstreamSource(keys: NatsKeys): Promise<LogSource> {
  const dir = await tempDir("veilnet-js-");
  const port = freePort();
  const config = await natsServerConfig(keys, {
    host: "127.0.0.1",
    port,
    resolverDir: `${dir.path}/jwt`,
    serverName: "solo",
    jetstreamDir: `${dir.path}/js`,
  });
  await Deno.writeTextFile(`${dir.path}/nats.conf`, config);
  const server = new Proc("nats", "nats-server", ["-c", `${dir.path}/nats.conf`]);
  await waitFor("nats-server to listen", 10_000, async () => {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  });
  return {
    connect: async () =>
      await JetStreamLog.open({
        urls: [`nats://127.0.0.1:${port}`],
        credentials: await guardianStateCredentials(keys),
        replicas: 1,
        log: quiet,
      }),
    [Symbol.asyncDispose]: async () => {
      await server.stop();
      await dir[Symbol.asyncDispose]();
    },
  };
}

suite("memory", memorySource);
suite("JetStream", jetstreamSource);

Deno.test("replication (memory): a commit whose answer was lost is taken exactly once", async () => {
  const seed = await seedState([{ uses: 5 }]);
  await using logs = await memorySource();
  await using a = await member(logs, seed.dump);
  logs.log.loseAnswers = 1;
  const node = await a.guardian.register(seed.tokens[0]!, { tag: "once" });
  assertEquals(a.store.confluxes().map((c) => c.id), [node.conflux_id]);
  assertEquals(a.store.tokens()[0]!.usesLeft, 4);
});

Deno.test("replication (memory): an unreachable log fails a change as StateUnavailable, and nothing changes", async () => {
  const seed = await seedState([{ uses: 5 }]);
  await using logs = await memorySource();
  const store = new Store(":memory:");
  const { replica } = await Replica.open(store, logs.log.connect(), {
    seed: seed.dump,
    log: quiet,
    commitTimeoutMs: 600,
  });
  try {
    logs.log.down = true;
    const guardian = new Guardian(store, TEST_GUARDIAN_OPTIONS);
    const error = await guardian.register(seed.tokens[0]!, {}).catch((e) => e);
    assertEquals((error as Error).name, "StateUnavailable");
    assertEquals(store.confluxes(), []);
  } finally {
    logs.log.down = false;
    await replica.close();
    store.close();
  }
});

Deno.test("replication (memory): snapshots keep the log bounded, and a new replica starts from one", async () => {
  const seed = await seedState([{ uses: 50 }]);
  await using logs = await memorySource();
  await using a = await member(logs, seed.dump, { snapshotEvery: 5 });
  for (let i = 0; i < 30; i++) await a.guardian.register(seed.tokens[0]!, { tag: `n${i}` });
  await a.replica.close(); // waits for the snapshots queued
  assert(logs.log.size <= 10, `the log holds ${logs.log.size} entries`);
  await using b = await member(logs, (await seedState([])).dump);
  assertEquals(b.store.confluxes().length, 30);
  assertEquals(b.store.dump(), a.store.dump());
});

Deno.test("replication (memory): a replica refuses writes outside a transaction", async () => {
  const seed = await seedState([]);
  await using logs = await memorySource();
  await using a = await member(logs, seed.dump);
  let refused: unknown;
  try {
    a.store.setMeta("x", "y");
  } catch (error) {
    refused = error;
  }
  assert(refused instanceof Error && refused.message.includes("only inside"), String(refused));
  await assertRejects(() => a.guardian.revokeToken("nope"), GuardianError, "no token");
});
