/**
 * TCP sockets as bare descriptors, through libc: the data-plane worker (src/lane/) reads and writes them itself,
 * which a `Deno.TcpConn` (whose descriptor is the runtime's) does not allow. Every socket is non-blocking and
 * close-on-exec. Addresses are raw bytes (4 for IPv4, 16 for IPv6); the caller parses text.
 * @module
 */

import { LINUX } from "./libc.ts";
import { errno, libc, sys, SyscallError } from "./loader.ts";

const SOCKADDR_BYTES = 28; // sockaddr_in6, the larger of the two

/** struct sockaddr_in or sockaddr_in6 for `address` (4 or 16 bytes) and `port`. */
export function sockaddr(address: Uint8Array, port: number): Uint8Array {
  const sa = new Uint8Array(address.length === 4 ? 16 : SOCKADDR_BYTES);
  const view = new DataView(sa.buffer);
  view.setUint16(0, address.length === 4 ? LINUX.AF_INET : LINUX.AF_INET6, true);
  view.setUint16(2, port, false);
  sa.set(address, address.length === 4 ? 4 : 8);
  return sa;
}

function stream(address: Uint8Array): number {
  const family = address.length === 4 ? LINUX.AF_INET : LINUX.AF_INET6;
  const type = LINUX.SOCK_STREAM | LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC;
  return sys("socket", () => libc().socket(family, type, 0));
}

/**
 * Two connected local sockets (non-blocking). By default they keep message boundaries, as a TUN device does: a
 * stand-in device. `stream`: a byte stream, as a TCP connection is.
 */
export function packetPair(kind: "packet" | "stream" = "packet"): [number, number] {
  const sv = new Int32Array(2);
  const type = (kind === "stream" ? LINUX.SOCK_STREAM : LINUX.SOCK_SEQPACKET) | LINUX.SOCK_NONBLOCK |
    LINUX.SOCK_CLOEXEC;
  sys("socketpair", () => libc().socketpair(LINUX.AF_UNIX, type, 0, new Uint8Array(sv.buffer)));
  return [sv[0]!, sv[1]!];
}

/** Closes a descriptor, ignoring failure (it is gone either way). */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/** Listens on `address` at a port the kernel picks; returns the descriptor and the port. Throws SyscallError. */
export function tcpListen(address: Uint8Array): { fd: number; port: number } {
  const c = libc();
  const fd = stream(address);
  try {
    const sa = sockaddr(address, 0);
    sys("bind", () => c.bind(fd, sa, sa.length));
    sys("listen", () => c.listen(fd, 4));
    return { fd, port: sockname(fd).port };
  } catch (error) {
    c.close(fd);
    throw error;
  }
}

/** Takes one waiting connection (non-blocking), or undefined when none waits. Throws SyscallError. */
export function tcpAccept(fd: number): number | undefined {
  const got = libc().accept4(fd, null, null, LINUX.SOCK_NONBLOCK | LINUX.SOCK_CLOEXEC);
  if (got >= 0) return got;
  const code = errno();
  if (code === LINUX.EAGAIN || code === LINUX.EINTR) return undefined;
  throw new SyscallError("accept", code);
}

/** Starts connecting to `address`:`port`; the descriptor is writable (see `socketError`) once it is done. */
export function tcpConnect(address: Uint8Array, port: number): number {
  const c = libc();
  const fd = stream(address);
  const sa = sockaddr(address, port);
  if (c.connect(fd, sa, sa.length) < 0) {
    const code = errno();
    if (code !== LINUX.EINPROGRESS && code !== LINUX.EINTR) {
      c.close(fd);
      throw new SyscallError("connect", code);
    }
  }
  return fd;
}

/** This end's address (4 or 16 bytes) and port. Throws SyscallError. */
export function sockname(fd: number): { address: Uint8Array; port: number } {
  const sa = new Uint8Array(SOCKADDR_BYTES);
  const length = new Uint32Array([sa.length]);
  sys("getsockname", () => libc().getsockname(fd, sa, new Uint8Array(length.buffer)));
  const view = new DataView(sa.buffer);
  const address = view.getUint16(0, true) === LINUX.AF_INET ? sa.slice(4, 8) : sa.slice(8, 24);
  return { address, port: view.getUint16(2, false) };
}

/** The socket's pending error (0 for none): after a connect, whether it succeeded. */
export function socketError(fd: number): number {
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  const at = new Uint8Array(value.buffer);
  sys(
    "getsockopt",
    () => libc().getsockopt(fd, LINUX.SOL_SOCKET, LINUX.SO_ERROR, at, new Uint8Array(length.buffer)),
  );
  return value[0]!;
}

/** Sends segments as soon as they are written (no Nagle): a ping must not wait for company. */
export function setNoDelay(fd: number): void {
  const one = new Uint8Array(new Int32Array([1]).buffer);
  sys("setsockopt TCP_NODELAY", () => libc().setsockopt(fd, LINUX.IPPROTO_TCP, LINUX.TCP_NODELAY, one, 4));
}

/**
 * Bytes a TCP socket holds that its peer has not acknowledged (sent and in flight, or not sent yet): how far behind
 * the path is. 0 when the descriptor is no such socket (any more).
 */
export function unacknowledged(fd: number): number {
  return libc().ioctl(fd, BigInt(LINUX.TIOCOUTQ), outqBytes) === 0 ? outq[0]! : 0;
}
/** unacknowledged's answer, reused: it is asked once per batch sent. */
const outq = new Int32Array(1);
const outqBytes = new Uint8Array(outq.buffer);

/**
 * Reads what is there into `buf`: the byte count, 0 at the end of the stream, -1 when nothing waits. Throws
 * SyscallError on a failure (a reset connection).
 */
export function recvNow(fd: number, buf: Uint8Array): number {
  const got = Number(libc().read(fd, buf, BigInt(buf.length)));
  if (got >= 0) return got;
  const code = errno();
  if (code === LINUX.EAGAIN || code === LINUX.EINTR) return -1;
  throw new SyscallError("read", code);
}

/** Writes what the kernel takes now: the byte count, 0 when it takes nothing. Throws SyscallError on a failure. */
export function sendNow(fd: number, bytes: Uint8Array): number {
  const sent = Number(libc().send(fd, bytes, BigInt(bytes.length), LINUX.MSG_NOSIGNAL));
  if (sent >= 0) return sent;
  const code = errno();
  if (code === LINUX.EAGAIN || code === LINUX.EINTR) return 0;
  throw new SyscallError("send", code);
}

/**
 * Waits (off this thread) until `fd` has one of `events` or `timeoutMs` passed; resolves with the events seen (0
 * on timeout). For connection set-up on the main thread, where a wait must not block.
 */
export async function waitFd(fd: number, events: number, timeoutMs: number): Promise<number> {
  const pollfd = new Uint8Array(8);
  const view = new DataView(pollfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, events, true);
  const n = await libc().poll(pollfd, 1n, Math.max(0, Math.ceil(timeoutMs)));
  return n > 0 ? view.getInt16(6, true) : 0;
}
