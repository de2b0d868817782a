/**
 * Bounds-checked big-endian reading and writing. Every decoder in src/wire is built on `ByteReader`, so a short,
 * long or malformed input surfaces as one `WireError` and never as a RangeError or a silent misread.
 * @module
 */

import { Refused } from "../errors.ts";
/** The only error a wire decoder throws: the input is not a valid message. `reason` is stable for metrics. */
export class WireError extends Refused<WireErrorReason> {
  override name = "WireError";
}

/** Why a decode failed, as a short stable label (used as a metrics dimension). */
export type WireErrorReason =
  | "truncated"
  | "oversize"
  | "trailing"
  | "version"
  | "type"
  | "value"
  | "encoding";

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** Reads fields in order from a byte view; `what` names the message in error text. */
export class ByteReader {
  #view: DataView;
  #bytes: Uint8Array;
  #pos = 0;

  constructor(bytes: Uint8Array, readonly what: string) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.#bytes.length - this.#pos;
  }

  /** Offset of the next byte to read. */
  get position(): number {
    return this.#pos;
  }

  #need(n: number, field: string): number {
    if (this.remaining < n) {
      throw new WireError(
        "truncated",
        `${this.what}: truncated at ${field} (offset ${this.#pos}: needs ${n} bytes, ${this.remaining} left)`,
      );
    }
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  u8(field: string): number {
    return this.#view.getUint8(this.#need(1, field));
  }

  u16(field: string): number {
    return this.#view.getUint16(this.#need(2, field));
  }

  u32(field: string): number {
    return this.#view.getUint32(this.#need(4, field));
  }

  /** A u64 that must fit a JavaScript number exactly (≤ 2^53 - 1); larger values are refused, not rounded. */
  u64(field: string): number {
    const at = this.#need(8, field);
    const hi = this.#view.getUint32(at);
    const lo = this.#view.getUint32(at + 4);
    if (hi > 0x1f_ffff) {
      throw new WireError("value", `${this.what}: ${field} exceeds 2^53 - 1`);
    }
    return hi * 2 ** 32 + lo;
  }

  /** Exactly `n` bytes, as a view into the input (no copy: the caller must not keep it past the input's life). */
  bytes(n: number, field: string): Uint8Array {
    const at = this.#need(n, field);
    return this.#bytes.subarray(at, at + n);
  }

  /** A u16 length, then that many bytes; the length may not exceed `max`. */
  varBytes(max: number, field: string): Uint8Array {
    const n = this.u16(field);
    if (n > max) {
      throw new WireError("oversize", `${this.what}: ${field} is ${n} bytes, the limit is ${max}`);
    }
    return this.bytes(n, field);
  }

  /** A u16-length-prefixed UTF-8 string of at most `max` bytes; invalid UTF-8 is refused. */
  string(max: number, field: string): string {
    const raw = this.varBytes(max, field);
    try {
      return utf8.decode(raw);
    } catch (cause) {
      throw new WireError("encoding", `${this.what}: ${field} is not valid UTF-8`, { cause });
    }
  }

  /** Everything not read yet. */
  rest(): Uint8Array {
    return this.bytes(this.remaining, "rest");
  }

  /** Asserts the input is fully consumed: trailing bytes make a message invalid, not ignored. */
  end(): void {
    if (this.remaining !== 0) {
      throw new WireError("trailing", `${this.what}: ${this.remaining} unexpected trailing bytes`);
    }
  }
}

/** Appends fields to a growable buffer. Encoding trusts its input types but checks every length limit. */
export class ByteWriter {
  #buf: Uint8Array;
  #view: DataView;
  #pos = 0;

  constructor(readonly what: string, initial = 256) {
    this.#buf = new Uint8Array(initial);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Reserves `n` bytes and returns their offset. It may replace the buffer: call it before touching #buf. */
  #room(n: number): number {
    if (this.#pos + n > this.#buf.length) {
      const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#pos + n));
      next.set(this.#buf.subarray(0, this.#pos));
      this.#buf = next;
      this.#view = new DataView(next.buffer);
    }
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  #int(value: number, max: number, field: string): void {
    if (!Number.isInteger(value) || value < 0 || value > max) {
      throw new RangeError(`${this.what}: ${field} must be an integer in 0..${max}, got ${value}`);
    }
  }

  u8(value: number, field: string): this {
    this.#int(value, 0xff, field);
    const at = this.#room(1);
    this.#view.setUint8(at, value);
    return this;
  }

  u16(value: number, field: string): this {
    this.#int(value, 0xffff, field);
    const at = this.#room(2);
    this.#view.setUint16(at, value);
    return this;
  }

  u32(value: number, field: string): this {
    this.#int(value, 0xffff_ffff, field);
    const at = this.#room(4);
    this.#view.setUint32(at, value);
    return this;
  }

  u64(value: number, field: string): this {
    this.#int(value, Number.MAX_SAFE_INTEGER, field);
    const at = this.#room(8);
    this.#view.setUint32(at, Math.floor(value / 2 ** 32));
    this.#view.setUint32(at + 4, value >>> 0);
    return this;
  }

  /** Exactly `n` bytes: a fixed-size field given the wrong size is a programming error. */
  fixed(bytes: Uint8Array, n: number, field: string): this {
    if (bytes.length !== n) {
      throw new RangeError(`${this.what}: ${field} must be ${n} bytes, got ${bytes.length}`);
    }
    const at = this.#room(n);
    this.#buf.set(bytes, at);
    return this;
  }

  varBytes(bytes: Uint8Array, max: number, field: string): this {
    if (bytes.length > max) {
      throw new RangeError(`${this.what}: ${field} is ${bytes.length} bytes, the limit is ${max}`);
    }
    this.u16(bytes.length, field);
    const at = this.#room(bytes.length);
    this.#buf.set(bytes, at);
    return this;
  }

  string(value: string, max: number, field: string): this {
    return this.varBytes(utf8Encoder.encode(value), max, field);
  }

  raw(bytes: Uint8Array): this {
    const at = this.#room(bytes.length);
    this.#buf.set(bytes, at);
    return this;
  }

  get length(): number {
    return this.#pos;
  }

  /** The bytes written so far (a view; the writer must not be used afterwards). */
  finish(): Uint8Array {
    return this.#buf.subarray(0, this.#pos);
  }
}

/** The bytes of `parts`, one after another, in a new buffer. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Constant-time-ish equality for short byte strings (ids, hashes); lengths are not secret. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Lower-case hex, for logs, map keys and JSON. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes from lower- or upper-case hex (an even number of digits; the caller checks the length it needs). */
export function fromHex(hex: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new RangeError(`not hex: "${hex.slice(0, 40)}"`);
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}
