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

/** How `guardian serve` runs. */
export interface ServeOptions extends Omit<GuardianOptions, "clock"> {
  hostname: string;
  port: number;
  dataDir: string;
  embeddedMaster: boolean;
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

/** Runs the Guardian until `signal` aborts. */
export async function serveGuardian(o: ServeOptions): Promise<void> {
  using store = openStore(o.dataDir);
  const guardian = new Guardian(store, { ...o, clock: () => Date.now() });
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
