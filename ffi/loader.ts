/**
 * Opens libc once, and GnuTLS, libcrypto and libGeoIP when asked (the only `Deno.dlopen`s in the project), and
 * turns C failures into Errors that say which call failed, with which errno, and what to do about the common ones.
 * @module
 */

import { LIBC_SYMBOLS, LINUX } from "./libc.ts";
import { LIBCRYPTO_SYMBOLS } from "./libcrypto.ts";
import { LIBGEOIP_SYMBOLS } from "./libgeoip.ts";
import { LIBGNUTLS_SYMBOLS } from "./libgnutls.ts";

/** The opened library's functions. */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

/** Library names tried in order: glibc, then the generic name, then musl (Alpine). */
const CANDIDATES = ["libc.so.6", "libc.so", `libc.musl-${Deno.build.arch}.so.1`];

let opened: Deno.DynamicLibrary<typeof LIBC_SYMBOLS> | undefined;
/**
 * This thread's errno, located once. Each JavaScript thread (worker) has its own copy of this module, so the
 * cached location is always the calling thread's.
 */
let errnoView: Deno.UnsafePointerView | undefined;

/** The libc functions, loading the library on first use. Throws an Error naming the fix when it cannot. */
export function libc(): Libc {
  if (opened) return opened.symbols;
  if (Deno.build.os !== "linux") {
    throw new Error(`veilnet-conflux needs Linux for its TUN device; this is ${Deno.build.os}`);
  }
  const failures: string[] = [];
  for (const name of CANDIDATES) {
    try {
      opened = Deno.dlopen(name, LIBC_SYMBOLS);
      const at = opened.symbols.__errno_location();
      if (at === null) throw new Error("__errno_location() returned NULL");
      errnoView = new Deno.UnsafePointerView(at);
      return opened.symbols;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
        throw new Error(
          `loading ${name} needs the FFI permission: run deno with --allow-ffi (the compiled binary has it)`,
          { cause: error },
        );
      }
      failures.push(`${name}: ${(error as Error).message}`);
    }
  }
  throw new Error(`could not load the C library (tried ${failures.join("; ")})`);
}

/** The opened libcrypto's functions. */
export type Libcrypto = Deno.DynamicLibrary<typeof LIBCRYPTO_SYMBOLS>["symbols"];

/** OpenSSL 3's libcrypto, then the generic name (a development package's link). */
const LIBCRYPTO_CANDIDATES = ["libcrypto.so.3", "libcrypto.so"];

/** The library once opened, or null once it could not be (it is tried once). */
let crypto: Deno.DynamicLibrary<typeof LIBCRYPTO_SYMBOLS> | null | undefined;

/**
 * libcrypto's functions, loading the library on first use; undefined when this host has none (or the FFI
 * permission is missing): callers then do without it.
 */
export function libcrypto(): Libcrypto | undefined {
  if (crypto === undefined) {
    crypto = null;
    for (const name of Deno.build.os === "linux" ? LIBCRYPTO_CANDIDATES : []) {
      try {
        crypto = Deno.dlopen(name, LIBCRYPTO_SYMBOLS);
        break;
      } catch { /* not this name, or not allowed: try the next, else go without */ }
    }
  }
  return crypto?.symbols;
}

/** The opened GnuTLS's functions. */
export type Libgnutls = Deno.DynamicLibrary<typeof LIBGNUTLS_SYMBOLS>["symbols"];

/** The library once opened, or null once it could not be (it is tried once). */
let gnutls: Deno.DynamicLibrary<typeof LIBGNUTLS_SYMBOLS> | null | undefined;

/**
 * GnuTLS's functions (3.4 or later: its AEAD interface), loading the library on first use; undefined when this host
 * has none (or the FFI permission is missing): callers then do without it.
 */
export function libgnutls(): Libgnutls | undefined {
  if (gnutls === undefined) {
    gnutls = null;
    try {
      if (Deno.build.os === "linux") gnutls = Deno.dlopen("libgnutls.so.30", LIBGNUTLS_SYMBOLS);
    } catch { /* none, too old, or not allowed: go without */ }
  }
  return gnutls?.symbols;
}

/** libGeoIP's functions (`guardian serve --geoip`), opened on first use; throws an Error naming the package. */
export function libgeoip(): Deno.DynamicLibrary<typeof LIBGEOIP_SYMBOLS>["symbols"] {
  try {
    geoip ??= Deno.dlopen("libGeoIP.so.1", LIBGEOIP_SYMBOLS);
  } catch (cause) {
    throw new Error("--geoip needs libGeoIP (Debian: apt-get install libgeoip1)", { cause });
  }
  return geoip.symbols;
}
let geoip: Deno.DynamicLibrary<typeof LIBGEOIP_SYMBOLS> | undefined;

/**
 * The calling thread's errno: read it straight after the failed call, with nothing in between. The runtime itself
 * may change errno between two JavaScript statements (rarely, but it was seen), so never decide control flow on
 * errno alone where another signal exists; see `sys`.
 */
export function errno(): number {
  libc();
  return errnoView!.getInt32();
}

/** Runs a C call that returns a negative value on failure; throws SyscallError (with `hints[errno]`) if it fails. */
export function sys(
  call: string,
  fn: () => number | bigint,
  hints: Partial<Record<number, string>> = {},
): number {
  const result = Number(fn());
  if (result >= 0) return result;
  const code = errnoView!.getInt32();
  throw new SyscallError(call, code, hints[code]);
}

/** The C library's description of an errno value. */
export function strerror(code: number): string {
  const text = libc().strerror(code);
  return text === null ? `errno ${code}` : Deno.UnsafePointerView.getCString(text);
}

/** A system call that failed: `errno` is the C error number, `call` what was attempted. */
export class SyscallError extends Error {
  override name = "SyscallError";
  constructor(readonly call: string, readonly errno: number, hint?: string) {
    super(`${call} failed: ${strerror(errno)} (errno ${errno})${hint ? `. ${hint}` : ""}`);
  }
}

/** NUL-terminated UTF-8 for `const char *` parameters. */
export function cString(value: string): Uint8Array {
  return new TextEncoder().encode(`${value}\0`);
}

/**
 * Reads a small kernel file (under /proc or /sys) through libc. Deno's own file APIs refuse those paths unless the
 * whole program runs with --allow-all; the agent runs with narrower permissions and --allow-ffi.
 */
export function readKernelFile(path: string): string {
  return withFile(path, LINUX.O_RDONLY, (c, fd) => {
    const decoder = new TextDecoder();
    const chunk = new Uint8Array(65536);
    let text = "";
    for (;;) {
      const n = sys(`read ${path}`, () => c.read(fd, chunk, BigInt(chunk.length)));
      if (n === 0) return text + decoder.decode();
      text += decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  });
}

/** Writes a small kernel file (a /proc/sys setting) through libc, for the same reason as readKernelFile. */
export function writeKernelFile(path: string, text: string): void {
  withFile(path, LINUX.O_WRONLY, (c, fd) => {
    const bytes = new TextEncoder().encode(text);
    sys(`write ${path}`, () => c.write(fd, bytes, BigInt(bytes.length)));
  });
}

/** Opens `path` with `flags`, runs `use` on the descriptor, and closes it. */
function withFile<T>(path: string, flags: number, use: (c: Libc, fd: number) => T): T {
  const c = libc();
  const fd = sys(`open ${path}`, () => c.open(cString(path), flags | LINUX.O_CLOEXEC, 0));
  try {
    return use(c, fd);
  } finally {
    c.close(fd);
  }
}
