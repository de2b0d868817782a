/**
 * The TUN device: the `Tun` interface, the real Linux device (FFI), and the in-memory double.
 * @module
 */

export { type Cidr, destinationOf, formatAddress, internetChecksum, ipVersion, parseCidr } from "./ip.ts";
export { checkInterfaceName, LinuxTun, type LinuxTunOptions } from "./linux_tun.ts";
export { MemoryTun } from "./memory_tun.ts";
export { type Tun, TunClosedError, type TunStats } from "./tun.ts";
