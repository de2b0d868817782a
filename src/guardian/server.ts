/**
 * `guardian serve`: the HTTP API over a data directory (or over the state shared by several Guardians in the
 * Master's JetStream, replication.ts), and optionally the Master as a child nats-server.
 * @module
 */

import { consoleHandler } from "./console.ts";
import { guardianHandler } from "./api.ts";
import { JetStreamLog, STATE_STREAM } from "./jetstream_log.ts";
import { MasterLink } from "./master_link.ts";
import { masterPresence, RevocationNotices } from "./notices.ts";
import { Guardian, type GuardianOptions } from "./guardian.ts";
import { guardianStateCredentials, type NatsKeys, natsServerConfig } from "./nats_auth.ts";
import { Replica } from "./replication.ts";
import { Store } from "./store.ts";
import { StunServer } from "./stun_server.ts";
import { recordPin, type ServerTls, serverTls, type TlsMode } from "./tls.ts";

/** How `guardian serve` runs. */
export interface ServeOptions extends Omit<GuardianOptions, "clock" | "stunPort" | "masterTls"> {
  hostname: string;
  port: number;
  dataDir: string;
  /**
   * Where the state lives: "sqlite", the data directory's database (one Guardian); "nats", a JetStream stream on
   * the Master at `natsUrls`, shared with the other Guardians of the same keys (the data directory then holds the
   * keys, and seeds the stream if it is empty).
   */
  state: "sqlite" | "nats";
  embeddedMaster: boolean;
  /** HTTPS and TLS on the embedded Master: the realm CA's (default), an operator's, or plain text ("off"). */
  tls: TlsMode;
  /**
   * The STUN service on UDP `port` and `port + 1` at `hostname`; undefined for none. When the port was not
   * `explicit` (the default), ports in use are a warning and the Guardian serves without STUN.
   */
  stun?: { port: number; explicit: boolean };
  /** The web console's listener, and where releases are served (for the install line it shows). */
  console?: { hostname: string; port: number; releaseUrl?: string };
  signal: AbortSignal;
  log: (line: string) => void;
}

/**
 * Opens (creating if needed) the store of a data directory. The database holds realm keys and NATS seeds: the
 * Store makes it and its -wal and -shm files 0600 before SQLite writes a byte, whatever the directory's mode.
 */
export function openStore(dataDir: string): Store {
  Deno.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return new Store(`${dataDir}/guardian.db`);
}

/** The meta key marking a data directory whose Guardian keeps its state in the shared stream (JSON). */
const SHARED_STATE_MARK = "shared_state";

/**
 * Where the state of a data directory's Guardian lives, as a sentence, when it is not the directory itself (its
 * Guardian serves with `--state nats`): changes made to the directory would then reach no Guardian.
 */
export function sharedStateOf(store: Store): string | undefined {
  const mark = store.getMeta(SHARED_STATE_MARK);
  if (mark === undefined) return undefined;
  const { stream, since } = JSON.parse(mark) as { stream: string; since: number };
  return `the JetStream stream ${stream} on the Master (since ${new Date(since).toISOString()})`;
}

/** The state shared through the Master's JetStream: a replica store, and what closes it. */
async function openSharedState(
  local: Store,
  keys: NatsKeys,
  ca: string | undefined,
  o: ServeOptions,
): Promise<{ store: Store } & AsyncDisposable> {
  const log = await JetStreamLog.open({
    urls: o.natsUrls,
    ca,
    credentials: await guardianStateCredentials(keys),
    // One copy per server given, at most 3: give every server of the cluster.
    replicas: Math.min(3, o.natsUrls.length),
    log: o.log,
    signal: o.signal,
  });
  const store = new Store(":memory:");
  try {
    const { first, last } = await log.bounds();
    if (last >= first && local.getMeta(SHARED_STATE_MARK) === undefined && local.realms().length > 0) {
      throw new Error(
        `the shared state (${STATE_STREAM}) already exists, and this data directory holds ${local.realms().length} ` +
          "realm(s) it was not made from: refusing to start, as they would be ignored. Start the Guardian whose " +
          "state is to be kept first (it seeds an empty stream), and the others from a data directory that holds " +
          "only its keys (guardian nats-keys export / import)",
      );
    }
    const { replica, seeded } = await Replica.open(store, log, { seed: local.dump(), log: o.log });
    const shared = store.getMeta("nats_keys");
    const same = (a: NatsKeys) =>
      (["operatorSeed", "accountSeed", "systemSeed", "guardianSeed"] as const).every((k) => a[k] === keys[k]);
    if (shared === undefined || !same(JSON.parse(shared))) {
      await replica.close();
      throw new Error(
        "the shared state holds other NATS keys than this data directory: import the first Guardian's keys " +
          "(guardian nats-keys export on its host, guardian nats-keys import here)",
      );
    }
    await local.transaction(() =>
      local.setMeta(SHARED_STATE_MARK, JSON.stringify({ stream: STATE_STREAM, since: Date.now() }))
    );
    o.log(
      seeded
        ? `guardian: state shared in ${STATE_STREAM}, seeded from ${o.dataDir}`
        : `guardian: state shared in ${STATE_STREAM}, loaded up to entry ${replica.applied}`,
    );
    return {
      store,
      [Symbol.asyncDispose]: async () => {
        await replica.close();
        store.close();
      },
    };
  } catch (error) {
    await log.close();
    store.close();
    throw error;
  }
}

/**
 * Passes nats-server's log on to this process's standard error, and resolves once it says it is ready: a probe
 * connection instead would make it log a failed TLS handshake at every start.
 */
async function forwardUntilReady(child: Deno.ChildProcess, ms: number): Promise<void> {
  const reader = child.stderr.getReader();
  let tail = "";
  let ready = false;
  const decoder = new TextDecoder();
  const forward = async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (let n = 0; n < value.length;) n += Deno.stderr.writeSync(value.subarray(n));
      if (ready) continue;
      tail = (tail + decoder.decode(value, { stream: true })).slice(-200);
      ready = tail.includes("Server is ready");
    }
  };
  const forwarding = forward().catch(() => {});
  const deadline = Date.now() + ms;
  while (!ready && Date.now() < deadline) {
    const exited = await Promise.race([child.status.then(() => true), new Promise((r) => setTimeout(r, 50))]);
    if (exited && !ready) {
      await forwarding;
      throw new Error("nats-server exited at start (see its output above)");
    }
  }
  if (!ready) throw new Error(`nats-server did not say it was ready within ${ms} ms`);
}

/** The API's URL as nodes would use it: the --listen host, or this host's name when it listens everywhere. */
function publicUrl(o: ServeOptions, scheme: string): string {
  let host = o.hostname;
  if (host === "0.0.0.0" || host === "::") {
    try {
      host = Deno.hostname();
    } catch {
      host = "localhost"; // not allowed to read it
    }
  }
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${o.port}`;
}

/** Starts nats-server with the Guardian's config (and its TLS); resolves once it accepts connections. */
async function startMaster(
  guardian: Guardian,
  o: ServeOptions,
  tls: ServerTls | undefined,
): Promise<Deno.ChildProcess> {
  const path = `${o.dataDir}/nats.conf`;
  // The resolver's JWTs (revocations included) outlive restarts; the rewritten config does not override them.
  const resolverDir = `${o.dataDir}/nats-jwt`;
  await Deno.mkdir(resolverDir, { recursive: true, mode: 0o700 });
  const files = tls && { certFile: `${o.dataDir}/master.crt`, keyFile: `${o.dataDir}/master.key` };
  if (tls && files) {
    await Deno.writeTextFile(files.certFile, tls.certPem, { mode: 0o600 });
    await Deno.writeTextFile(files.keyFile, tls.keyPem, { mode: 0o600 });
  }
  await Deno.writeTextFile(
    path,
    await natsServerConfig(guardian.natsKeys(), {
      host: o.hostname,
      port: o.natsPort,
      resolverDir,
      tls: files,
    }),
    { mode: 0o600 },
  );
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("nats-server", { args: ["-c", path], stdout: "inherit", stderr: "piped" })
      .spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error("--embedded-master needs nats-server on PATH (Debian: apt-get install nats-server)");
    }
    throw error;
  }
  try {
    await forwardUntilReady(child, 5_000);
  } catch (error) {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    throw error;
  }
  o.log(`guardian: Master (nats-server) listening on port ${o.natsPort}`);
  return child;
}

/**
 * Starts the STUN service on its two ports. A default port that is taken (another STUN or TURN server on this
 * host, say) is logged and skipped, so the Guardian still starts; a port the administrator chose must work.
 */
async function startStun(o: ServeOptions): Promise<StunServer | undefined> {
  if (!o.stun) return undefined;
  const { port, explicit } = o.stun;
  let stun: StunServer;
  try {
    stun = await StunServer.listen({ hostname: o.hostname, ports: [port, port + 1], log: o.log });
  } catch (error) {
    const message = (error as Error).message;
    if (explicit) {
      throw new Error(`${message}: choose another --stun-port, or --stun-port off`, { cause: error });
    }
    o.log(
      `guardian: ${message}; serving without STUN (nodes get only the --ice and --turn servers). ` +
        "Free UDP ports 3478-3479, or choose --stun-port N (or off)",
    );
    return undefined;
  }
  o.log(`guardian: STUN on UDP ${o.hostname}:${port} and :${port + 1}`);
  return stun;
}

/**
 * Says how nodes verify this Guardian, and writes the realm CA beside the data (`ca.pem`, public: remote admin
 * commands take it as --guardian-ca). Plain text is said loudly, at every start.
 */
function announceTls(o: ServeOptions, tls: ServerTls | undefined): void {
  if (!tls) {
    o.log(
      "guardian: WARNING: --plaintext: the API and the Master speak plain text, so registration, conflux and " +
        "admin tokens and the nodes' NATS credentials cross the network readable by anyone on the path. Use it " +
        "only on a network you trust, or behind a TLS proxy",
    );
    return;
  }
  if (tls.caPem) {
    Deno.writeTextFileSync(`${o.dataDir}/ca.pem`, tls.caPem, { mode: 0o644 });
    o.log(
      `guardian: TLS by the realm CA ${o.dataDir}/ca.pem (SHA-256, as tokens carry it: ${tls.pin}); ` +
        "new registration tokens name it, so nodes verify this Guardian with nothing else",
    );
  } else {
    o.log("guardian: TLS with the operator's certificate (--tls-cert): nodes verify it as any HTTPS client");
  }
}

/** Runs the Guardian until `signal` aborts. */
export async function serveGuardian(o: ServeOptions): Promise<void> {
  await using stun = await startStun(o);
  using dataDirStore = openStore(o.dataDir);
  const moved = sharedStateOf(dataDirStore);
  if (o.state === "sqlite" && moved) {
    throw new Error(
      `the state of ${o.dataDir} moved to ${moved}: serve it with --state nats --master URL,... (going back to ` +
        "one data directory is not supported)",
    );
  }
  if (o.state === "nats" && (o.embeddedMaster || o.natsUrls.length === 0)) {
    throw new TypeError("a shared state (--state nats) lives on the Master's servers: give them as --master");
  }
  // The keys come from the data directory: every Guardian of a shared state connects to it with the same ones.
  const keys = new Guardian(dataDirStore, { ...o, clock: () => Date.now() }).natsKeys();
  // So is the realm CA, which signs the Guardians' certificates and those of the Master's servers.
  const tls = await serverTls(dataDirStore, o.tls);
  announceTls(o, tls);
  await using shared = o.state === "nats"
    ? await openSharedState(dataDirStore, keys, tls?.caPem, o)
    : undefined;
  const store = shared?.store ?? dataDirStore;
  await recordPin(store, tls?.pin);
  const guardian = new Guardian(store, {
    ...o,
    masterTls: tls !== undefined,
    stunPort: stun ? o.stun?.port : undefined,
    clock: () => Date.now(),
  });
  for (const t of o.turn?.servers ?? []) {
    o.log(`guardian: TURN credentials for turn:${t.host}:${t.port} (coturn use-auth-secret), per login`);
  }
  const admin = await guardian.ensureAdminToken();
  if (admin) {
    await Deno.writeTextFile(`${o.dataDir}/admin.token`, admin + "\n", { mode: 0o600 });
    o.log(`guardian: admin token written to ${o.dataDir}/admin.token`);
  }
  const master = o.embeddedMaster ? await startMaster(guardian, o, tls) : undefined;
  // The Guardian's own link to the Master: revocations go to the realm and the Master through it, and it asks
  // which nodes are connected. Without a Master (a Guardian that only registers), nodes learn revocations at login.
  const local = o.hostname === "0.0.0.0" || o.hostname === "::" ? "127.0.0.1" : o.hostname;
  const urls = o.embeddedMaster
    ? [`${tls ? "tls" : "nats"}://${local.includes(":") ? `[${local}]` : local}:${o.natsPort}`]
    : o.natsUrls;
  const link = urls.length > 0
    ? await MasterLink.connect({ urls, ca: tls?.caPem, keys: guardian.natsKeys(), log: o.log })
    : undefined;
  using _notices = link ? new RevocationNotices({ store, master: link, log: o.log }) : undefined;
  if (link) {
    guardian.presence = masterPresence(link);
    link.listenToReports((realmId, data) => void guardian.reports.receive(realmId, data));
  }
  try {
    const api = guardianHandler(guardian);
    const scheme = tls ? "https" : "http";
    const server = Deno.serve({
      hostname: o.hostname,
      port: o.port,
      signal: o.signal,
      ...(tls ? { cert: tls.certPem, key: tls.keyPem } : {}),
      onListen: ({ hostname, port }) => o.log(`guardian: listening on ${scheme}://${hostname}:${port}`),
    }, api);
    const c = o.console;
    const consoleServer = c && Deno.serve(
      {
        hostname: c.hostname,
        port: c.port,
        signal: o.signal,
        ...(tls ? { cert: tls.certPem, key: tls.keyPem } : {}),
        onListen: ({ hostname, port }) => o.log(`guardian: console on ${scheme}://${hostname}:${port}`),
      },
      consoleHandler({
        api,
        tls: tls !== undefined,
        guardianUrl: publicUrl(o, scheme),
        releaseUrl: c.releaseUrl,
        realmOidc: (name) => guardian.store.realmByName(name)?.oidc ?? undefined,
      }),
    );
    await Promise.all([server.finished, consoleServer?.finished]);
  } finally {
    await link?.close();
    if (master) {
      try {
        master.kill("SIGTERM");
      } catch { /* already gone */ }
      await master.status;
    }
  }
}
