/**
 * The saved configuration of a registered node (`conflux.json`, written 0600 in the config directory) and where
 * things live: `$VEILNET_CONFIG_DIR`, else `~/.config/conflux/`.
 * @module
 */

/** What `register` saves and `run` reads. */
export interface SavedConfig {
  guardian: string;
  conflux_id: string;
  token: string;
  tag?: string;
  taints?: string[];
}

/** The config directory. */
export function configDir(): string {
  const explicit = Deno.env.get("VEILNET_CONFIG_DIR");
  if (explicit) return explicit;
  const home = Deno.env.get("HOME");
  if (!home) throw new Error("set VEILNET_CONFIG_DIR or HOME: there is nowhere to keep the configuration");
  return `${home}/.config/conflux`;
}

/** The local API socket of a node using `dir`. */
export function socketPath(dir: string = configDir()): string {
  return Deno.env.get("VEILNET_SOCKET") ?? `${dir}/conflux.sock`;
}

/** Reads `name` (conflux.json or up.json) from the config dir; undefined if it does not exist. */
export function readConfig(name = "conflux.json", dir: string = configDir()): SavedConfig | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`${dir}/${name}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  let value: Partial<SavedConfig>;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${dir}/${name} is not valid JSON (${(error as Error).message}); register again`);
  }
  for (const key of ["guardian", "conflux_id", "token"] as const) {
    if (typeof value[key] !== "string" || value[key] === "") {
      throw new Error(`${dir}/${name} has no ${key}; register again`);
    }
  }
  return value as SavedConfig;
}

/** Writes a config file readable only by its owner. */
export function writeConfig(config: SavedConfig, name = "conflux.json", dir: string = configDir()): string {
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = `${dir}/${name}`;
  Deno.writeTextFileSync(path, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
  Deno.chmodSync(path, 0o600);
  return path;
}
