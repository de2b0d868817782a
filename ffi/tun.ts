/**
 * Linux TUN devices and interface configuration through ioctl: create the device, set its MTU, give it addresses
 * (the prefix makes the kernel route the range into it), bring it up. No `ip` command, no netlink library.
 * @module
 */

import { LINUX } from "./libc.ts";
import { cString, errno, libc, sys, SyscallError } from "./loader.ts";

const encoder = new TextEncoder();

/** struct ifreq (40 bytes on 64-bit Linux): the name, then a union whose member each request picks. */
function ifreq(name: string): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(40);
  bytes.set(encoder.encode(name));
  return { bytes, view: new DataView(bytes.buffer) };
}

/**
 * Opens /dev/net/tun and attaches a new TUN device named `name` (IFF_TUN | IFF_NO_PI, and IFF_VNET_HDR if asked).
 * The returned fd is non-blocking and close-on-exec; closing it removes the device.
 */
export function createTun(name: string, options: { vnetHdr?: boolean } = {}): number {
  const c = libc();
  const container = "in a container, pass the device (docker: --device /dev/net/tun)";
  const path = cString("/dev/net/tun");
  const fd = sys(
    "open /dev/net/tun",
    () => c.open(path, LINUX.O_RDWR | LINUX.O_NONBLOCK | LINUX.O_CLOEXEC, 0),
    {
      [LINUX.ENOENT]: `/dev/net/tun does not exist: load the tun module (modprobe tun), or ${container}`,
      [LINUX.ENODEV]: `the tun driver is missing: load the tun module (modprobe tun), or ${container}`,
      [LINUX.EACCES]: "opening /dev/net/tun needs root or CAP_NET_ADMIN",
      [LINUX.EPERM]: `opening /dev/net/tun is not permitted: run as root, or ${container}`,
    },
  );
  const { bytes, view } = ifreq(name);
  view.setUint16(16, LINUX.IFF_TUN | LINUX.IFF_NO_PI | (options.vnetHdr ? LINUX.IFF_VNET_HDR : 0), true);
  try {
    sys(`creating TUN device "${name}"`, () => c.ioctl(fd, LINUX.TUNSETIFF, bytes), {
      [LINUX.EPERM]: "this needs CAP_NET_ADMIN: run as root, or grant the capability " +
        "(systemd: AmbientCapabilities=CAP_NET_ADMIN; docker: --cap-add NET_ADMIN)",
      [LINUX.EBUSY]: `interface "${name}" is in use by another process: stop it or choose another --ifname`,
      [LINUX.EINVAL]: `an interface named "${name}" exists and is not a TUN device: choose another --ifname`,
    });
  } catch (error) {
    c.close(fd);
    throw error;
  }
  return fd;
}

/**
 * Lets the kernel hand out TCP super-packets of up to `gsoMaxBytes` with partial checksums, and take them back
 * (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6). The device must have been made with `vnetHdr`.
 */
export function enableOffload(fd: number, name: string, gsoMaxBytes: number): void {
  const flags = LINUX.TUN_F_CSUM | LINUX.TUN_F_TSO4 | LINUX.TUN_F_TSO6;
  // Capped first: a super-packet must fit one data message with its headers.
  setGsoMaxSize(name, gsoMaxBytes);
  sys(`enabling offload on "${name}"`, () => libc().ioctlValue(fd, LINUX.TUNSETOFFLOAD, BigInt(flags)));
}

/** Sets the largest super-packet the kernel builds for the interface (IFLA_GSO_MAX_SIZE, over rtnetlink). */
function setGsoMaxSize(name: string, bytes: number): void {
  // struct nlmsghdr (16) + struct ifinfomsg (16) + rtattr IFLA_GSO_MAX_SIZE (4 + 4)
  const msg = new Uint8Array(40);
  const v = new DataView(msg.buffer);
  v.setUint16(4, LINUX.RTM_NEWLINK, true);
  v.setUint16(6, LINUX.NLM_F_REQUEST | LINUX.NLM_F_ACK, true);
  v.setUint32(20, interfaceIndex(name), true); // ifinfomsg: family (1), pad (1), type (2), index (4), ...
  v.setUint16(32, 8, true);
  v.setUint16(34, LINUX.IFLA_GSO_MAX_SIZE, true);
  v.setUint32(36, bytes, true);
  netlinkRequest(`capping the GSO size of "${name}" at ${bytes}`, msg);
}

function interfaceIndex(name: string): number {
  const index = libc().if_nametoindex(cString(name));
  if (index === 0) throw new SyscallError(`looking up interface "${name}"`, errno());
  return index;
}

/**
 * Sends one rtnetlink request (its length and sequence number are filled in here) and waits for the kernel's
 * acknowledgement, throwing its error. `known` gives clearer messages for some errno values.
 */
function netlinkRequest(what: string, msg: Uint8Array, known: Record<number, string> = {}): void {
  const c = libc();
  const v = new DataView(msg.buffer, msg.byteOffset, msg.length);
  v.setUint32(0, msg.length, true);
  v.setUint32(8, 1, true); // sequence number
  const socket = sys(
    what,
    () => c.socket(LINUX.AF_NETLINK, LINUX.SOCK_RAW | LINUX.SOCK_CLOEXEC, LINUX.NETLINK_ROUTE),
  );
  try {
    sys(what, () => c.write(socket, msg, BigInt(msg.length)));
    // The kernel answers with an NLMSG_ERROR message whose error field is 0 (success) or -errno: unlike errno,
    // nothing running between two calls can disturb it.
    const reply = new Uint8Array(256);
    const got = sys(what, () => c.read(socket, reply, BigInt(reply.length)));
    if (got < 20) throw new SyscallError(what, LINUX.EINVAL);
    const r = new DataView(reply.buffer);
    const code = r.getUint16(4, true) === LINUX.NLMSG_ERROR ? -r.getInt32(16, true) : 0;
    if (code !== 0) throw new SyscallError(what, code, known[code]);
  } finally {
    c.close(socket);
  }
}

/** Runs `fn` with a throwaway socket of `family` for interface ioctls. */
function withSocket<T>(family: number, fn: (socket: number) => T): T {
  const c = libc();
  const socket = sys(
    "socket for interface ioctls",
    () => c.socket(family, LINUX.SOCK_DGRAM | LINUX.SOCK_CLOEXEC, 0),
    {
      [LINUX.EAFNOSUPPORT]: family === LINUX.AF_INET6 ? "IPv6 is disabled on this host" : undefined,
    },
  );
  try {
    return fn(socket);
  } finally {
    c.close(socket);
  }
}

/** Sets the interface MTU. */
export function setMtu(name: string, mtu: number): void {
  const { bytes, view } = ifreq(name);
  view.setInt32(16, mtu, true);
  withSocket(
    LINUX.AF_INET,
    (s) =>
      sys(`setting MTU ${mtu} on "${name}"`, () => libc().ioctl(s, LINUX.SIOCSIFMTU, bytes), {
        [LINUX.EINVAL]: "the MTU is out of range for this device",
      }),
  );
}

/** Brings the interface up (IFF_UP), keeping its other flags. */
export function setUp(name: string): void {
  const c = libc();
  withSocket(LINUX.AF_INET, (s) => {
    const { bytes, view } = ifreq(name);
    sys(`reading flags of "${name}"`, () => c.ioctl(s, LINUX.SIOCGIFFLAGS, bytes));
    view.setUint16(16, view.getUint16(16, true) | LINUX.IFF_UP, true);
    sys(`bringing "${name}" up`, () => c.ioctl(s, LINUX.SIOCSIFFLAGS, bytes));
  });
}

/** struct sockaddr_in in an ifreq: family (host order), port 0, address (network order). */
function sockaddrIn(name: string, address: Uint8Array): Uint8Array {
  const { bytes, view } = ifreq(name);
  view.setUint16(16, LINUX.AF_INET, true);
  bytes.set(address, 20);
  return bytes;
}

/** Gives the interface an IPv4 address with a prefix length (0..32); the kernel adds the prefix route. */
export function addIPv4(name: string, address: Uint8Array, prefix: number): void {
  const mask = new Uint8Array(4);
  for (let i = 0; i < prefix; i++) mask[i >> 3] |= 0x80 >> (i & 7);
  const c = libc();
  withSocket(LINUX.AF_INET, (s) => {
    const what = `adding ${address.join(".")}/${prefix} to "${name}"`;
    const addressReq = sockaddrIn(name, address);
    const maskReq = sockaddrIn(name, mask);
    sys(what, () => c.ioctl(s, LINUX.SIOCSIFADDR, addressReq));
    sys(what, () => c.ioctl(s, LINUX.SIOCSIFNETMASK, maskReq));
  });
}

/**
 * Gives the interface an IPv6 address with a prefix length (0..128); the kernel adds the prefix route. Uses
 * rtnetlink rather than ioctl so the address can skip duplicate address detection (IFA_F_NODAD): the device is
 * point-to-point and the address usable at once, where DAD would leave it "tentative" for a second and drop
 * packets to it.
 */
export function addIPv6(name: string, address: Uint8Array, prefix: number): void {
  const index = interfaceIndex(name);
  // struct nlmsghdr (16) + struct ifaddrmsg (8) + rtattr IFA_LOCAL (4 + 16) + rtattr IFA_ADDRESS (4 + 16)
  const msg = new Uint8Array(64);
  const v = new DataView(msg.buffer);
  v.setUint16(4, LINUX.RTM_NEWADDR, true);
  v.setUint16(6, LINUX.NLM_F_REQUEST | LINUX.NLM_F_ACK | LINUX.NLM_F_CREATE | LINUX.NLM_F_EXCL, true);
  msg[16] = LINUX.AF_INET6;
  msg[17] = prefix;
  msg[18] = LINUX.IFA_F_NODAD;
  v.setUint32(20, index, true);
  for (const [at, type] of [[24, LINUX.IFA_LOCAL], [44, LINUX.IFA_ADDRESS]] as const) {
    v.setUint16(at, 20, true);
    v.setUint16(at + 2, type, true);
    msg.set(address, at + 4);
  }
  netlinkRequest(`adding an IPv6 address /${prefix} to "${name}"`, msg, {
    [LINUX.EEXIST]: "the interface already has that address",
  });
}
