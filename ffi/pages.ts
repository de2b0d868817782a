/**
 * Pages a process read from its files while starting: the executable's code, its read-only data and the relocation
 * tables the dynamic loader went through once, and the same in shared libraries. They stay mapped, and counted in
 * the process's RSS, until the kernel needs the memory. An idle node touches about a third of them again (measured:
 * 51 MiB of the deno executable resident after start-up, 17 MiB once those were dropped and the idle node had run
 * on).
 *
 * `dropCleanFilePages` hands them back at once (`madvise(MADV_DONTNEED)`), as the kernel's reclaim would: a page
 * this process never wrote is read back from its file, unchanged, when next touched; the page cache usually still
 * holds it. A mapping holding a page this process wrote (a private copy: relocated data, a patched page) is left
 * whole: dropping it would lose the copy.
 * @module
 */

import { libc, readKernelFile } from "./loader.ts";

/** One mapping of this process, from /proc/self/smaps. */
export interface Mapping {
  start: bigint;
  end: bigint;
  /** As smaps shows them: "r-xp", "r--p", "rw-p", "r--s". */
  perms: string;
  /** The mapped file, or "" / "[heap]" / "[stack]" and the like for memory no file backs. */
  path: string;
  rssKiB: number;
  /** Pages of the mapping that are this process's own (private copies of file pages, or anonymous memory). */
  anonymousKiB: number;
}

/** The mappings listed in an smaps text. */
export function parseSmaps(text: string): Mapping[] {
  const maps: Mapping[] = [];
  let current: Mapping | undefined;
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+ *(.*)$/.exec(line);
    if (head) {
      current = {
        start: BigInt(`0x${head[1]}`),
        end: BigInt(`0x${head[2]}`),
        perms: head[3]!,
        path: head[4]!,
        rssKiB: 0,
        anonymousKiB: 0,
      };
      maps.push(current);
      continue;
    }
    const field = /^(Rss|Anonymous): +(\d+) kB$/.exec(line);
    if (field && current) current[field[1] === "Rss" ? "rssKiB" : "anonymousKiB"] = Number(field[2]);
  }
  return maps;
}

/**
 * The mappings whose resident pages can be dropped and read back unchanged: backed by a file that is still there,
 * not writable, with no page of this process's own, and something resident. Device files are left alone.
 */
export function droppable(maps: Mapping[]): Mapping[] {
  return maps.filter((m) =>
    m.path.startsWith("/") && !m.path.startsWith("/dev/") && !m.path.endsWith(" (deleted)") &&
    !m.perms.includes("w") && m.anonymousKiB === 0 && m.rssKiB > 0
  );
}

const MADV_DONTNEED = 4;

/** Drops the resident pages of the droppable mappings; returns how much RSS that released (KiB). */
export function dropCleanFilePages(): number {
  const c = libc();
  let released = 0;
  for (const m of droppable(parseSmaps(readKernelFile("/proc/self/smaps")))) {
    // A mapping that refuses (locked pages) keeps them: nothing is lost either way.
    if (c.madvise(m.start, m.end - m.start, MADV_DONTNEED) === 0) released += m.rssKiB;
  }
  return released;
}
