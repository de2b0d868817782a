/**
 * The permissions the agent runs with outside tests (DESIGN.md, "Permission-scoped runtime"): the systemd unit
 * and compile.sh both take them from here.
 * @module
 */

/** Deno permission flags for a node whose configuration lives in `configDir`. */
export function agentPermissions(configDir: string): string[] {
  return [
    "--allow-ffi", // libc: the TUN device; libdatachannel
    "--allow-net", // Guardian, Master, WebRTC, DNS, local API, metrics
    `--allow-read=/dev/net/tun,/etc,/proc,/sys,/run/systemd,${configDir}`,
    `--allow-write=/dev/net/tun,/proc/sys/net,/etc/systemd/system,${configDir}`,
    "--allow-run=nats-server,nft,resolvectl,systemctl,ip,ping",
    "--allow-env",
    "--allow-sys",
  ];
}
