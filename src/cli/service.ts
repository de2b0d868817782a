/**
 * The service commands: `install`, `start`, `stop`, `remove` manage the systemd unit; `unregister` undoes
 * `register`; `up`/`down` are integration mode (a conflux token in up.json, no registration).
 * @module
 */

import { configDir, configPath, readConfig, writeConfig } from "../agent/config.ts";
import { guardianClient, GuardianUnavailable, trustGuardianCa } from "../agent/guardian_client.ts";
import { selfCommand, Service, UNIT } from "../service/systemd.ts";
import { parse, UsageError } from "./args.ts";
import type { Output } from "./main.ts";
import { env, guardianUrl, installService, readCaFile, runCommand } from "./node.ts";
import { readSecret, secretInput } from "./secret.ts";

/** The saved config the service runs: the registration, else integration mode's up.json. */
function savedPath(): string {
  for (const name of ["conflux.json", "up.json"] as const) {
    if (readConfig(configPath(name))) return configPath(name);
  }
  throw new Error(
    `nothing to run: no ${configPath("conflux.json")} or ${configPath("up.json")}; ` +
      "run `veilnet-conflux register` (or `up`) first",
  );
}

/** `install`: writes and enables the unit (it starts at boot; `start` starts it now). */
export async function installCommand(args: string[], io: Output): Promise<number> {
  parse(args, {});
  const service = new Service();
  await service.install(selfCommand(configDir()), ["run", "--config", savedPath()], configDir());
  io.out(`${UNIT} installed and enabled (${service.path}); \`veilnet-conflux start\` starts it now`);
  return 0;
}

export async function startCommand(args: string[], io: Output): Promise<number> {
  parse(args, {});
  await new Service().start();
  io.out(`${UNIT} started`);
  return 0;
}

export async function stopCommand(args: string[], io: Output): Promise<number> {
  parse(args, {});
  await new Service().stop();
  io.out(`${UNIT} stopped`);
  return 0;
}

/** `remove`: stops and deletes the unit; the registration stays. */
export async function removeCommand(args: string[], io: Output): Promise<number> {
  parse(args, {});
  io.out(
    await new Service().remove() ? `${UNIT} removed (the registration is kept)` : `${UNIT} is not installed`,
  );
  return 0;
}

/** `unregister [--force]`: tells the Guardian, then removes the service and conflux.json. */
export async function unregisterCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, { force: { type: "boolean", default: false } });
  const path = configPath("conflux.json");
  const saved = readConfig(path);
  if (!saved) throw new Error(`not registered here (no ${path})`);
  if (saved.guardian_ca !== undefined) trustGuardianCa(saved.guardian_ca);
  try {
    await guardianClient.unregister(saved.guardian, saved.token, saved.conflux_id);
    io.out(`unregistered ${saved.conflux_id ?? ""} at ${saved.guardian}`);
  } catch (error) {
    if (!(error instanceof GuardianUnavailable)) throw error;
    if (error.status === 401 || error.status === 404) {
      io.out(`the Guardian no longer knows this node (${error.message}); removing it here`);
    } else if (!values.force) {
      throw new Error(`${error.message}; nothing was changed (--force removes the registration here anyway)`);
    } else io.out(`${error.message}; --force: removing the registration here only`);
  }
  const service = new Service();
  // The unit belongs to the registration unless integration mode (up.json) installed it.
  if (!service.unit().includes(configPath("up.json")) && await service.remove()) {
    io.out(`${UNIT} stopped and removed`);
  }
  Deno.removeSync(path);
  io.out(`removed ${path}`);
  return 0;
}

/** `up -t CONFLUX_TOKEN`: saves up.json and starts the service (or runs in the foreground without systemd). */
export async function upCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, {
    token: { type: "string", short: "t" },
    "token-file": { type: "string" },
    guardian: { type: "string", short: "g" },
    "guardian-ca": { type: "string" },
    tag: { type: "string" },
    ifname: { type: "string" },
    "dns-listen": { type: "string" },
    "no-service": { type: "boolean", default: false },
  });
  const token = await readSecret({
    what: "conflux token",
    flag: "-t/--token",
    value: values.token,
    fileFlag: "--token-file",
    file: values["token-file"],
    env: "VEILNET_CONFLUX_TOKEN",
  }, secretInput(io));
  if (!token) {
    throw new UsageError(
      "up needs a conflux token: -t TOKEN, -t - (standard input), --token-file FILE or VEILNET_CONFLUX_TOKEN",
    );
  }
  const guardian = guardianUrl(values.guardian, "up");
  const path = configPath("up.json");
  const caFile = values["guardian-ca"];
  const guardianCa = caFile === undefined ? undefined : readCaFile("--guardian-ca", caFile);
  const options = {
    guardian_ca: guardianCa,
    tag: values.tag ?? env("VEILNET_CONFLUX_TAG"),
    ifname: values.ifname ?? env("VEILNET_IFNAME"),
    dns_listen: values["dns-listen"] ?? env("VEILNET_DNS_LISTEN"),
  };
  const config = Object.fromEntries(Object.entries({ guardian, token, ...options }).filter(([, v]) => v));
  writeConfig(config as { guardian: string; token: string }, path);
  io.out(`configuration saved to ${path}`);
  const service = new Service();
  if (!values["no-service"] && service.available) {
    if (await service.remove()) io.out(`removed the existing ${UNIT}`);
    await installService(service, path, io);
    return 0;
  }
  io.out(
    `${values["no-service"] ? "--no-service" : "systemd does not run this host"}: running in the foreground`,
  );
  return await runCommand(["--config", path], io);
}

/** `down`: stops and removes the service, and removes up.json. */
export async function downCommand(args: string[], io: Output): Promise<number> {
  parse(args, {});
  const path = configPath("up.json");
  const service = new Service();
  const removed = service.installed && service.unit().includes(path) && await service.remove();
  if (removed) io.out(`${UNIT} stopped and removed`);
  let deleted = false;
  try {
    Deno.removeSync(path);
    deleted = true;
    io.out(`removed ${path}`);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (!removed && !deleted) io.out("nothing to do: integration mode is not up here");
  return 0;
}
