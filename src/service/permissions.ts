/**
 * The permissions the agent runs with outside tests (DESIGN.md, "Permission-scoped runtime"): the systemd unit
 * and compile.sh both take them from here.
 * @module
 */

/**
 * Deno permission flags for a node whose configuration lives in `configDir`; `moduleCache` is Deno's cache
 * directory when the node runs from source (libdatachannel's native addon is read from there).
 */
export function agentPermissions(configDir: string, moduleCache?: string): string[] {
  return [
    "--allow-ffi", // libc: the TUN device and kernel files (Deno refuses /proc, /dev to others); libdatachannel; libcrypto
    "--allow-net", // Guardian, Master, WebRTC, DNS, local API, metrics
    `--allow-read=/etc,/run/systemd,${configDir}${moduleCache ? `,${moduleCache}` : ""}`,
    `--allow-write=/etc/systemd/system,${configDir}`,
    "--allow-run=nats-server,nft,resolvectl,systemctl,ip,ping",
    "--allow-env",
    "--allow-sys",
  ];
}
