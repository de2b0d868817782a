import { assert, assertEquals } from "../tests/assert.ts";
import { dropCleanFilePages, droppable, parseSmaps } from "./pages.ts";
import { readKernelFile } from "./loader.ts";

/** An smaps excerpt: one mapping per kind the choice must tell apart. */
const SMAPS = [
  ["55864412d000-558645cbb000 r--p 00000000 00:1f 4052 /usr/bin/deno", 13432, 0], // read-only data, relocations
  ["558645f31000-558649c25000 r-xp 01b8e000 00:1f 4052 /usr/bin/deno", 36468, 0], // code
  ["558649c25000-558649e9a000 r--p 05881000 00:1f 4052 /usr/bin/deno", 2492, 2492], // relocated, then read-only
  ["558649e9a000-558649ed3000 rw-p 05af2000 00:1f 4052 /usr/bin/deno", 204, 120], // writable data
  ["55864a000000-55864a800000 rw-p 00000000 00:00 0 [heap]", 7372, 7372],
  ["7f0000000000-7f0000040000 rw-p 00000000 00:00 0 ", 256, 256], // anonymous memory
  ["7f1000000000-7f1000100000 r-xp 00000000 00:1f 99 /usr/lib/x86_64-linux-gnu/libc.so.6", 900, 0],
  ["7f2000000000-7f2000001000 r--s 00000000 00:05 7 /dev/dri/card0", 4, 0],
  ["7f3000000000-7f3000010000 r-xp 00000000 00:1f 98 /tmp/lib.so (deleted)", 64, 0],
  ["7f4000000000-7f4000010000 r-xp 00000000 00:1f 97 /usr/lib/never-touched.so", 0, 0],
].map(([head, rss, anon]) =>
  `${head}\nSize:  1 kB\nRss:   ${rss} kB\nPss:   ${rss} kB\nAnonymous:  ${anon} kB\nVmFlags: rd mr mw me\n`
).join("");

Deno.test("smaps: each mapping with its address range, permissions, file, resident and private sizes", () => {
  const maps = parseSmaps(SMAPS);
  assertEquals(maps.length, 10);
  assertEquals(maps[2], {
    start: 0x558649c25000n,
    end: 0x558649e9a000n,
    perms: "r--p",
    path: "/usr/bin/deno",
    rssKiB: 2492,
    anonymousKiB: 2492,
  });
  assertEquals(maps[4]!.path, "[heap]");
  assertEquals(maps[5]!.path, "");
  assertEquals(maps[8]!.path, "/tmp/lib.so (deleted)");
});

Deno.test("only pages that read back unchanged are dropped: a mapping with one page of this process's own is kept whole", () => {
  const chosen = droppable(parseSmaps(SMAPS)).map((m) => `${m.perms} ${m.path} ${m.rssKiB}`);
  assertEquals(chosen, [
    "r--p /usr/bin/deno 13432",
    "r-xp /usr/bin/deno 36468",
    "r-xp /usr/lib/x86_64-linux-gnu/libc.so.6 900",
  ]);
});

/** This process's resident file pages (KiB). */
function rssFile(): number {
  return Number(/^RssFile:\s+(\d+) kB/m.exec(readKernelFile("/proc/self/status"))![1]);
}

Deno.test("dropping them lowers this process's resident file pages, and the process runs on", async () => {
  const before = rssFile();
  const released = dropCleanFilePages();
  const after = rssFile();
  assert(released > 0, "nothing was dropped");
  assert(after < before, `RssFile ${before} kB before, ${after} kB after`);
  // Code and data come back from their files as they are touched: the runtime, V8 and libc still work.
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode("veilnet"));
  assertEquals(new Uint8Array(digest)[0], 0x18);
  assertEquals(JSON.parse(JSON.stringify({ a: [1, 2] })), { a: [1, 2] });
  assert(rssFile() > 0);
});
