/**
 * `guardian serve`: the HTTP API over a data directory, and optionally the Master as a child nats-server.
 * @module
 */

import { guardianHandler } from "./api.ts";
import { MasterLink } from "./master_link.ts";
import { masterPresence, RevocationNotices } from "./notices.ts";
import { Guardian, type GuardianOptions } from "./guardian.ts";
import { natsServerConfig } from "./nats_auth.ts";
import { Store } from "./store.ts";
import { StunServer } from "./stun_server.ts";

/** How `guardian serve` runs. */
export interface ServeOptions extends Omit<GuardianOptions, "clock" | "stunPort"> {
  hostname: string;
  port: number;
  dataDir: string;
  embeddedMaster: boolean;
  /**
   * The STUN service on UDP `port` and `port + 1` at `hostname`; undefined for none. When the port was not
   * `explicit` (the default), ports in use are a warning and the Guardian serves without STUN.
   */
  stun?: { port: number; explicit: boolean };
  signal: AbortSignal;
  log: (line: string) => void;
}

/** Opens (creating if needed) the store of a data directory. */
export function openStore(dataDir: string): Store {
  Deno.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const store = new Store(`${dataDir}/guardian.db`);
  // It holds realm keys and NATS seeds; SQLite gives its -wal and -shm files the same mode.
  Deno.chmodSync(`${dataDir}/guardian.db`, 0o600);
  return store;
}

async function waitForPort(
  hostname: string,
  port: number,
  child: Deno.ChildProcess,
  ms: number,
): Promise<void> {
  const deadline = Date.now() + ms;
  let exited = false;
  child.status.then(() => exited = true);
  while (Date.now() < deadline && !exited) {
    try {
      (await Deno.connect({ hostname: hostname === "0.0.0.0" ? "127.0.0.1" : hostname, port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(
    exited ? "nats-server exited at start (see its output above)" : `nats-server did not listen on ${port}`,
  );
}

/** Starts nats-server with the Guardian's config; resolves once it accepts connections. */
async function startMaster(guardian: Guardian, o: ServeOptions): Promise<Deno.ChildProcess> {
  const path = `${o.dataDir}/nats.conf`;
  // The resolver's JWTs (revocations included) outlive restarts; the rewritten config does not override them.
  const resolverDir = `${o.dataDir}/nats-jwt`;
  await Deno.mkdir(resolverDir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(
    path,
    await natsServerConfig(guardian.natsKeys(), { host: o.hostname, port: o.natsPort, resolverDir }),
    { mode: 0o600 },
  );
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("nats-server", { args: ["-c", path], stdout: "inherit", stderr: "inherit" })
      .spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error("--embedded-master needs nats-server on PATH (Debian: apt-get install nats-server)");
    }
    throw error;
  }
  try {
    await waitForPort(o.hostname, o.natsPort, child, 5_000);
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

/** Runs the Guardian until `signal` aborts. */
export async function serveGuardian(o: ServeOptions): Promise<void> {
  await using stun = await startStun(o);
  using store = openStore(o.dataDir);
  const guardian = new Guardian(store, {
    ...o,
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
  const master = o.embeddedMaster ? await startMaster(guardian, o) : undefined;
  // The Guardian's own link to the Master: revocations go to the realm and the Master through it, and it asks
  // which nodes are connected. Without a Master (a Guardian that only registers), nodes learn revocations at login.
  const local = o.hostname === "0.0.0.0" || o.hostname === "::" ? "127.0.0.1" : o.hostname;
  const urls = o.embeddedMaster
    ? [`nats://${local.includes(":") ? `[${local}]` : local}:${o.natsPort}`]
    : o.natsUrls;
  const link = urls.length > 0
    ? await MasterLink.connect({ urls, keys: guardian.natsKeys(), log: o.log })
    : undefined;
  using _notices = link ? new RevocationNotices({ store, master: link, log: o.log }) : undefined;
  if (link) guardian.presence = masterPresence(link);
  try {
    const server = Deno.serve({
      hostname: o.hostname,
      port: o.port,
      signal: o.signal,
      onListen: ({ hostname, port }) => o.log(`guardian: listening on http://${hostname}:${port}`),
    }, guardianHandler(guardian));
    await server.finished;
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
