/**
 * A tiny declarative codec: a record's fields are declared as data (a Schema), and one writer and one reader
 * encode any record of any schema with the same strict checks: exact sizes for fixed fields, limits on
 * variable ones, allowed ranges for integers, valid UTF-8. Used by control-message bodies and certificates.
 * @module
 */

import { type ByteReader, type ByteWriter, WireError } from "./bytes.ts";

/** One field's type and limits. */
export type Field =
  | { t: "u8" | "u16" | "u32" | "u64"; max?: number; min?: number }
  | { t: "fixed"; n: number }
  | { t: "bytes"; max: number; sizes?: readonly number[] }
  | { t: "string"; max: number }
  | { t: "list"; of: Field; max: number };

type ValueOf<F> = F extends { t: "u8" | "u16" | "u32" | "u64" } ? number
  : F extends { t: "fixed" | "bytes" } ? Uint8Array
  : F extends { t: "string" } ? string
  : F extends { t: "list"; of: infer O } ? ValueOf<O>[]
  : never;

/** Fields in wire order. */
export type Schema = Readonly<Record<string, Field>>;
/** The decoded value of a record of schema S. */
export type RecordOf<S extends Schema> = { -readonly [K in keyof S]: ValueOf<S[K]> };

/** An unsigned byte, within min..max. */
export const u8 = (min = 0, max = 0xff): { t: "u8"; min: number; max: number } => ({ t: "u8", min, max });
export const u16 = { t: "u16" } as const;
export const u32 = { t: "u32" } as const;
export const u64 = { t: "u64" } as const;
/** Exactly n bytes. */
export const fixed = (n: number): { t: "fixed"; n: number } => ({ t: "fixed", n });
/** A u16 length and at most `max` bytes; with `sizes`, only those lengths. */
export const bytes = (
  max: number,
  sizes?: readonly number[],
): { t: "bytes"; max: number; sizes?: readonly number[] } => ({
  t: "bytes",
  max,
  sizes,
});
/** A u16 length and at most `max` bytes of UTF-8. */
export const string = (max: number): { t: "string"; max: number } => ({ t: "string", max });
/** A u16 count and at most `max` items. */
export const list = <F extends Field>(of: F, max: number): { t: "list"; of: F; max: number } => ({
  t: "list",
  of,
  max,
});

function writeField(w: ByteWriter, f: Field, value: unknown, name: string): void {
  switch (f.t) {
    case "u8":
    case "u16":
    case "u32":
    case "u64": {
      const n = value as number;
      if ((f.min !== undefined && n < f.min) || (f.max !== undefined && n > f.max)) {
        throw new RangeError(`${w.what}: ${name} is ${n}, allowed ${f.min ?? 0}..${f.max}`);
      }
      w[f.t](n, name);
      return;
    }
    case "fixed":
      w.fixed(value as Uint8Array, f.n, name);
      return;
    case "bytes": {
      const b = value as Uint8Array;
      if (f.sizes && !f.sizes.includes(b.length)) {
        throw new RangeError(`${w.what}: ${name} must be ${f.sizes.join(" or ")} bytes, got ${b.length}`);
      }
      w.varBytes(b, f.max, name);
      return;
    }
    case "string":
      w.string(value as string, f.max, name);
      return;
    case "list": {
      const items = value as unknown[];
      if (items.length > f.max) {
        throw new RangeError(`${w.what}: ${name} has ${items.length} items, limit ${f.max}`);
      }
      w.u16(items.length, name);
      items.forEach((item, i) => writeField(w, f.of, item, `${name}[${i}]`));
      return;
    }
  }
}

function readField(r: ByteReader, f: Field, name: string): unknown {
  switch (f.t) {
    case "u8":
    case "u16":
    case "u32":
    case "u64": {
      const n = r[f.t](name);
      if ((f.min !== undefined && n < f.min) || (f.max !== undefined && n > f.max)) {
        throw new WireError("value", `${r.what}: ${name} is ${n}, allowed ${f.min ?? 0}..${f.max}`);
      }
      return n;
    }
    case "fixed":
      return r.bytes(f.n, name);
    case "bytes": {
      const b = r.varBytes(f.max, name);
      if (f.sizes && !f.sizes.includes(b.length)) {
        throw new WireError(
          "value",
          `${r.what}: ${name} must be ${f.sizes.join(" or ")} bytes, got ${b.length}`,
        );
      }
      return b;
    }
    case "string":
      return r.string(f.max, name);
    case "list": {
      const n = r.u16(name);
      if (n > f.max) {
        throw new WireError("oversize", `${r.what}: ${name} has ${n} items, the limit is ${f.max}`);
      }
      return Array.from({ length: n }, (_, i) => readField(r, f.of, `${name}[${i}]`));
    }
  }
}

/** Encodes `values` field by field; throws RangeError (naming the field) when a value breaks its limits. */
export function writeRecord(w: ByteWriter, schema: Schema, values: Record<string, unknown>): void {
  for (const [name, field] of Object.entries(schema)) writeField(w, field, values[name], name);
}

/** Decodes one record; throws WireError for anything out of its limits. Byte fields are views into the input. */
export function readRecord<S extends Schema>(r: ByteReader, schema: S): RecordOf<S> {
  const out: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(schema)) out[name] = readField(r, field, name);
  return out as RecordOf<S>;
}
