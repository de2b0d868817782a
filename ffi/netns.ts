/**
 * Network namespaces for the calling thread. Tests use this to put their own thread, and so the TUN devices,
 * sockets and processes it creates, into a namespace made with `ip netns add`.
 * @module
 */

import { LINUX } from "./libc.ts";
import { cString, errno, libc, sys, SyscallError } from "./loader.ts";

function openNamespace(path: string): number {
  const name = cString(path);
  return sys(`open ${path}`, () => libc().open(name, LINUX.O_RDONLY | LINUX.O_CLOEXEC, 0));
}

/**
 * Moves the calling thread into the network namespace at `path` (e.g. /run/netns/NAME) and returns a function
 * that moves it back. Needs CAP_SYS_ADMIN.
 */
export function enterNetns(path: string): () => void {
  const c = libc();
  const home = openNamespace("/proc/thread-self/ns/net");
  const target = openNamespace(path);
  try {
    if (c.setns(target, LINUX.CLONE_NEWNET) !== 0) {
      throw new SyscallError(`entering network namespace ${path}`, errno());
    }
  } catch (error) {
    c.close(home);
    throw error;
  } finally {
    c.close(target);
  }
  let back = false;
  return () => {
    if (back) return;
    back = true;
    try {
      sys("returning to the original network namespace", () => c.setns(home, LINUX.CLONE_NEWNET));
    } finally {
      c.close(home);
    }
  };
}
