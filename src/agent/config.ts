/**
 * Saved configuration, written 0600 in the config directory (`$VEILNET_CONFIG_DIR`, else `~/.config/conflux/`):
 * `conflux.json` from `register`, `up.json` from `up` (integration mode: a conflux token, no registration).
 * Both have one shape; `run` reads one of them.
 * @module
 */

/** What `register`/`up` save and `run` reads. */
export interface SavedConfig {
  guardian: string;
  token: string;
  /** Known after `register`; `up` may not know it. */
  conflux_id?: string;
  /**
   * The realm's public key (base64) as the Guardian answered at registration: a login answer naming another is
   * refused (a Guardian impersonated, or the realm replaced). Absent when registered by an older build.
   */
  realm_key?: string;
  /**
   * The Guardian's realm CA (PEM), pinned at registration by the SHA-256 its token carried: the Guardian and the
   * Master are verified by it. Absent for a Guardian with a public certificate, or one in plain text.
   */
  guardian_ca?: string;
  /** Options `run` uses when no flag or environment variable gives them. */
  tag?: string;
  ifname?: string;
  dns_listen?: string;
}

/** The config directory. */
export function configDir(): string {
  const explicit = Deno.env.get("VEILNET_CONFIG_DIR");
  if (explicit) return explicit;
  const home = Deno.env.get("HOME");
  if (!home) throw new Error("set VEILNET_CONFIG_DIR or HOME: there is nowhere to keep the configuration");
  return `${home}/.config/conflux`;
}

/** The path of a saved config file (`conflux.json` or `up.json`) in the config directory. */
export function configPath(name: "conflux.json" | "up.json"): string {
  return `${configDir()}/${name}`;
}

/** The local API socket of a node using `dir`. */
export function socketPath(dir: string = configDir()): string {
  return Deno.env.get("VEILNET_SOCKET") ?? `${dir}/conflux.sock`;
}

/** Reads a saved config; undefined if the file does not exist, an Error naming the file if it is damaged. */
export function readConfig(path: string): SavedConfig | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path} is not valid JSON (${(error as Error).message}); register again`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${path} is not a JSON object; register again`);
  }
  for (const key of ["guardian", "token"]) {
    if (typeof value[key] !== "string" || value[key] === "") {
      throw new Error(`${path} has no ${key}; register again`);
    }
  }
  for (const key of ["conflux_id", "realm_key", "guardian_ca", "tag", "ifname", "dns_listen"]) {
    if (value[key] !== undefined && typeof value[key] !== "string") {
      throw new Error(`${path}: ${key} must be a string`);
    }
  }
  return value as unknown as SavedConfig;
}

/** Writes a config file readable only by its owner (the directory only by its owner too). */
export function writeConfig(config: SavedConfig, path: string): string {
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(path, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
  Deno.chmodSync(path, 0o600);
  return path;
}
