/**
 * Files that hold secrets are 0600 however open their directory and the umask are: the Guardian's database with
 * its `-wal` and `-shm` (realm signing seeds, NATS seeds), its admin token and nats-server config, and a node's
 * saved config. Measured, not assumed: a 0777 directory, umask 000, then `stat`.
 * @module
 */

import { assert, assertEquals } from "./assert.ts";
import { cli, freePort, Proc, tempDir, waitFor } from "./harness.ts";
import { guardianFetch, trustGuardianCa } from "../src/agent/guardian_client.ts";
import { Guardian } from "../src/guardian/guardian.ts";
import { openStore } from "../src/guardian/server.ts";
import { TEST_GUARDIAN_OPTIONS } from "./guardian_fixture.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** The permission bits of every regular file directly in `dir`, by name. */
function modes(dir: string): Record<string, string> {
  const found: Record<string, string> = {};
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isFile) {
      found[entry.name] = ((Deno.statSync(`${dir}/${entry.name}`).mode ?? 0) & 0o777).toString(8);
    }
  }
  return found;
}

/** A directory anyone may write, as an administrator's careless `mkdir -m 777` or a shared volume leaves it. */
async function openDir(prefix: string) {
  const dir = await tempDir(prefix);
  Deno.chmodSync(dir.path, 0o777);
  return dir;
}

/** `sh` arguments that run main.ts (with `deno run -A`) under umask 000; the command's own arguments follow. */
const UMASK_0_MAIN = ["-c", 'umask 000; exec "$@"', "sh", Deno.execPath(), "run", "-A", "--quiet", MAIN];

Deno.test("openStore: the database and its -wal and -shm are 0600 in a 0777 directory under umask 000", async () => {
  await using dir = await openDir("vc-modes-store-");
  const before = Deno.umask(0);
  try {
    using store = openStore(dir.path);
    const g = new Guardian(store, TEST_GUARDIAN_OPTIONS);
    await g.createRealm("home"); // writes a realm signing seed: into the -wal first
    await g.createToken({ realm: "home", taints: [], anyTaints: false, subnets: [] });
    assertEquals(modes(dir.path), {
      "guardian.db": "600",
      "guardian.db-wal": "600",
      "guardian.db-shm": "600",
    });
    assert(Deno.readFileSync(`${dir.path}/guardian.db-wal`).length > 0, "the WAL holds the writes");
  } finally {
    Deno.umask(before);
  }
  // Files an older build left open to all are closed before SQLite writes to them again.
  Deno.chmodSync(`${dir.path}/guardian.db`, 0o644);
  Deno.writeFileSync(`${dir.path}/guardian.db-wal`, new Uint8Array(0), { mode: 0o644 });
  Deno.chmodSync(`${dir.path}/guardian.db-wal`, 0o644);
  {
    using _store = openStore(dir.path);
    assertEquals(modes(dir.path)["guardian.db"], "600");
    assertEquals(modes(dir.path)["guardian.db-wal"], "600");
  }
});

Deno.test("guardian serve under umask 000: every file it writes holding a secret is 0600", async () => {
  await using dir = await openDir("vc-modes-guardian-");
  const data = `${dir.path}/guardian`;
  Deno.mkdirSync(data);
  Deno.chmodSync(data, 0o777);
  const port = freePort();
  const natsPort = freePort();
  const url = `https://127.0.0.1:${port}`;
  await using guardian = new Proc("guardian", "sh", [
    ...UMASK_0_MAIN,
    "guardian",
    "serve",
    "--listen",
    `127.0.0.1:${port}`,
    "--data-dir",
    data,
    "--embedded-master",
    "--nats-port",
    String(natsPort),
    "--stun-port",
    "off",
  ]);
  await waitFor("the Guardian to answer", 15_000, async () => {
    trustGuardianCa(Deno.readTextFileSync(`${data}/ca.pem`));
    return (await guardianFetch(`${url}/healthz`)).ok;
  });
  // Writes over HTTPS, with the admin token read from its file (not a command line).
  const admin = [
    "--guardian",
    url,
    "--guardian-ca",
    `${data}/ca.pem`,
    "--admin-token-file",
    `${data}/admin.token`,
  ];
  const realm = await cli(["guardian", "realm", "create", "home", ...admin]);
  assertEquals(realm.code, 0, realm.stderr);
  const token = await cli(["guardian", "token", "create", "--realm", "home", ...admin]);
  assertEquals(token.code, 0, token.stderr);
  assertEquals(modes(data), {
    "admin.token": "600",
    "ca.pem": "644", // public: the realm CA's certificate (its key is in the database)
    "guardian.db": "600",
    "guardian.db-shm": "600",
    "guardian.db-wal": "600",
    "master.crt": "600",
    "master.key": "600",
    "nats.conf": "600",
  }, guardian.output);
});

Deno.test("register under umask 000 saves conflux.json 0600 in a 0777 config directory", async () => {
  await using dir = await openDir("vc-modes-node-");
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.json({ conflux_id: "c-1", token: "CONFLUX-SECRET" }),
  );
  try {
    const out = await new Deno.Command("sh", {
      args: [
        ...UMASK_0_MAIN,
        "register",
        "--guardian",
        `http://127.0.0.1:${server.addr.port}`,
        "--no-service",
      ],
      env: {
        VEILNET_CONFIG_DIR: dir.path,
        VEILNET_REGISTRATION_TOKEN: "REG",
        VEILNET_SYSTEMD_ROOT: dir.path,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(modes(dir.path), { "conflux.json": "600" });
  } finally {
    await server.shutdown();
  }
});

Deno.test("guardian nats-keys export -o FILE under umask 000 writes a new file, 0600", async () => {
  await using dir = await openDir("vc-modes-keys-");
  const keys = `${dir.path}/keys.json`;
  const exportKeys = () =>
    new Deno.Command("sh", {
      args: [
        ...UMASK_0_MAIN,
        "guardian",
        "nats-keys",
        "export",
        "--data-dir",
        `${dir.path}/guardian`,
        "-o",
        keys,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const first = await exportKeys();
  assertEquals(first.code, 0, new TextDecoder().decode(first.stderr));
  assertEquals(first.stdout.length, 0, "the keys go to the file only");
  assertEquals(modes(dir.path), { "keys.json": "600" });
  assert(JSON.parse(Deno.readTextFileSync(keys)).operatorSeed, "the file holds the keys");
  const again = await exportKeys();
  assertEquals(again.code, 1);
  assert(new TextDecoder().decode(again.stderr).includes(`cannot create ${keys}`));
});
