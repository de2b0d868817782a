/**
 * eventfd counters (non-blocking, close-on-exec): one thread adds to one, another waits for it in `poll()` beside
 * its other descriptors and takes what was added. The wake-up of a thread blocked in a poll.
 * @module
 */

import { LINUX } from "./libc.ts";
import { libc, sys } from "./loader.ts";

/** A new counter at 0. Throws SyscallError. */
export function eventfd(): number {
  return sys("eventfd", () => libc().eventfd(0, LINUX.EFD_NONBLOCK | LINUX.EFD_CLOEXEC));
}

/** The 8 bytes an eventfd reads and writes (each thread has its own copy of this module). */
const value = new BigUint64Array(1);
const bytes = new Uint8Array(value.buffer);

/** Adds `n` to the counter (its poller sees it readable). */
export function addTo(fd: number, n = 1): void {
  value[0] = BigInt(n);
  libc().write(fd, bytes, 8n);
}

/** Takes the counter's value, leaving it at 0: what was added since the last take (0 if nothing). */
export function takeFrom(fd: number): number {
  return Number(libc().read(fd, bytes, 8n)) === 8 ? Number(value[0]) : 0;
}
